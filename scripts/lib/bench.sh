# Sourced by scripts/bench, bench-ab, bench-cpu and bench-instructions: the pieces every
# benchmark driver repeats. Callers set OUT (their output folder) and define `die`; sourcing
# installs an EXIT trap that stops every process recorded in PIDS.
# shellcheck shell=bash

GUESTS=target/wasm/wasm32-wasip2/guest
GUEST_BUILD="cargo build --target wasm32-wasip2 --profile guest --target-dir target/wasm -p misbehave -p recycle-probe -p cart"
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# A port nothing listens on: asked from the kernel when python3 is there, else probed.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null && return
  local port
  for _ in $(seq 50); do
    port=$(shuf -i 20000-60000 -n 1)
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "$port"; return; }
  done
  die "found no free port"
}

# Dies unless the hello, kv-increment and cart guests are built.
require_guests() {
  local g
  for g in misbehave recycle_probe cart; do
    [ -f "$GUESTS/$g.wasm" ] || die "$GUESTS/$g.wasm is missing: run scripts/bench once, or $GUEST_BUILD"
  done
}

# A private redis-server on a free port (never the one on 6379), answering before this returns:
# sets REDIS_PORT and REDIS_PID. Its log goes to $OUT/redis.log.
start_redis() {
  REDIS_PORT=$(free_port)
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no >"$OUT/redis.log" 2>&1 &
  REDIS_PID=$!
  PIDS+=("$REDIS_PID")
  for _ in $(seq 100); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && return; sleep 0.1; done
  die "the private redis-server did not answer (see $OUT/redis.log)"
}

# Starts a server (the command in "$@", which prints `listening on URL`) with its output in
# $OUT/NAME.out and .log; sets SERVER_URL and SERVER_PID.
start_server() {
  local name="$1"; shift
  "$@" >"$OUT/$name.out" 2>"$OUT/$name.log" &
  SERVER_PID=$!
  PIDS+=("$SERVER_PID")
  for _ in $(seq 300); do
    grep -q '^listening on ' "$OUT/$name.out" 2>/dev/null && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$OUT/$name.log" >&2; die "$name exited at start"; }
    sleep 0.1
  done
  SERVER_URL=$(sed -n 's/^listening on //p' "$OUT/$name.out")
  [ -n "$SERVER_URL" ] || die "$name did not start within 30 s (see $OUT/$name.log)"
}

# deploy HOST_URL TOKEN NAME GUEST_FILE APP; a deploy waits for the compile, at most
# DEPLOY_MAX_TIME seconds (300; a host under valgrind needs more).
deploy() {
  curl -sS -f -o /dev/null --max-time "${DEPLOY_MAX_TIME:-300}" -X PUT -H "Authorization: Bearer $2" \
    -H 'Content-Type: application/wasm' --data-binary "@$GUESTS/$4" "$1/v1/functions/$3?app=$5" ||
    die "deploying $3 failed"
}

# Deploys the three cases' guests (hello, probe, cart in app pizza) to HOST_URL with TOKEN.
deploy_cases() {
  deploy "$1" "$2" hello misbehave.wasm hello
  deploy "$1" "$2" probe recycle_probe.wasm probe
  deploy "$1" "$2" cart cart.wasm pizza
}

# The wrk scripts: $OUT/cart.lua posts one cart line (no cookie: a new shopper every request),
# $OUT/post.lua an empty POST.
write_wrk_scripts() {
  printf 'wrk.method = "POST"\nwrk.body = %s\nwrk.headers["Content-Type"] = "application/json"\n' \
    "'{\"item\":\"pepperoni\",\"size\":\"large\",\"qty\":1}'" >"$OUT/cart.lua"
  printf 'wrk.method = "POST"\n' >"$OUT/post.lua"
}

# User + system CPU of process PID so far, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
