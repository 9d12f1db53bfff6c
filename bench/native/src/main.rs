//! `native-baseline`: what `scripts/bench` compares Goldfish with. A plain axum server doing, per
//! request, the work of the Goldfish function it stands in for, through the same redis crate and
//! the same Redis commands, with no WebAssembly in between:
//!
//! | route              | stands in for                          | Redis                      |
//! |--------------------|----------------------------------------|----------------------------|
//! | `GET/POST /hello`  | `tests/fixtures/misbehave` on `/`      | none                       |
//! | `POST /incr`       | `functions/recycle-probe`              | INCR                       |
//! | `POST /cart/items` | `functions/cart` adding a line for a new shopper | EVALSHA of the host's compare-and-swap (a known shopper's add reads with GET first) |
//!
//! The cart add is the minimal protocol (one read, one compare-and-swap, and no read for a
//! session made up just now, as in the function); it uses the `pizza`
//! library the cart function links in, so the parsing, pricing, stored record, cookie and answer
//! are byte for byte the function's. A request without a session cookie gets a fresh session, as
//! the cart function does.

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use clap::Parser;
use pizza::cart::{Cart, NewLine};
use pizza::http::Reply;
use pizza::{ApiError, http as cart_http, ids, store};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};

/// Compare-and-swap of a value that exists, in one atomic step: what the host's `CAS_SCRIPT`
/// (`host/src/backend/redis/scripts.rs`) does for a value that exists, without the app's key
/// index (for `list-keys`), which Redis does on top for Goldfish only. A swap that expects no
/// value is a `SET NX` here, as it is in the host (`RedisBackend::create`, there in a `MULTI`
/// with the index entries). KEYS[1]: key. ARGV: expected value, new value, ttl seconds.
const CAS_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
";

/// Bounds on each Redis command (the host's default is tighter, `--redis-timeout-ms` 500; no
/// command comes near either under the bench).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(2);

/// Keys live under their own prefix so the baseline never touches a Goldfish app's keys.
const KEY_PREFIX: &str = "native:";

/// The counter `/incr` adds to (the recycle probe's key, under [`KEY_PREFIX`]).
const CALLS_KEY: &str = "native:probe:calls";

/// Compare-and-swap attempts before a cart add gives up with 503, like the cart function's
/// bounded retry. A new shopper's cart is never contended, so the first attempt wins.
const CAS_ATTEMPTS: usize = 8;

#[derive(Parser)]
#[command(
    name = "native-baseline",
    about = "Native axum baseline for scripts/bench"
)]
struct Cli {
    /// Address to listen on; port 0 picks a free port (printed as `listening on http://ADDR`).
    #[arg(long, default_value = "127.0.0.1:8081")]
    listen: String,
    /// Redis URL.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis: String,
}

/// Shared by every handler; cloning the connection manager is a handle onto one multiplexed
/// connection, as in the host.
#[derive(Clone)]
struct AppState {
    redis: ConnectionManager,
    cas: Script,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let client = redis::Client::open(cli.redis.as_str())?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECTION_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT));
    let redis = ConnectionManager::new_with_config(client, config)
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach Redis at {}: {e}", cli.redis))?;
    let state = AppState {
        redis,
        cas: Script::new(CAS_SCRIPT),
    };
    let app = Router::new()
        .route("/hello", any(hello))
        .route("/incr", post(incr))
        .route("/cart/items", post(cart_add))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(&cli.listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            tokio::signal::ctrl_c().await.ok();
        })
        .await?;
    Ok(())
}

/// What misbehave answers on `/`.
async fn hello() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "misbehave",
    )
        .into_response()
}

/// What the recycle probe answers: its global is always 1 on a fresh instance.
async fn incr(State(state): State<AppState>) -> Response {
    let mut redis = state.redis.clone();
    match redis.incr::<_, _, i64>(CALLS_KEY, 1).await {
        Ok(total) => (
            [(header::CONTENT_TYPE, "application/json")],
            format!(r#"{{"global":1,"kv":{total}}}"#),
        )
            .into_response(),
        Err(e) => reply(ApiError::Unavailable(e.to_string()).into_reply()),
    }
}

/// The cart function's `POST /items`: validate, take the shopper's session or make one up, then
/// GET the cart and compare-and-swap the new one in.
async fn cart_add(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let line = match NewLine::parse(&body) {
        Ok(line) => line,
        Err(e) => return reply(e.into_reply()),
    };
    let cookies: Vec<(String, String)> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| ("cookie".to_owned(), v.to_owned()))
        .collect();
    let (session, is_new) = match cart_http::session_from_cookies(&cookies) {
        Some(session) => (session, false),
        None => match ids::random_id() {
            Ok(id) => (id, true),
            Err(e) => return reply(e.into_reply()),
        },
    };
    let result = add(&state, &session, is_new, &line).await;
    let answer = match result {
        Ok(cart) => Reply::json(201, &cart.view()),
        Err(e) => e.into_reply(),
    };
    reply(if is_new {
        answer.with_header("set-cookie", &cart_http::session_cookie(&session))
    } else {
        answer
    })
}

/// One read and one compare-and-swap per attempt: the minimal cart protocol. As in the cart
/// function (`pizza::store::Session::New`), a session made up for this request is not read
/// on the first attempt: its cart is empty, and the swap expects none.
async fn add(
    state: &AppState,
    session: &str,
    is_new: bool,
    line: &NewLine,
) -> Result<Cart, ApiError> {
    let key = format!("{KEY_PREFIX}{}", store::cart_key(session));
    let mut redis = state.redis.clone();
    let mut unread = is_new;
    for _ in 0..CAS_ATTEMPTS {
        let bytes: Option<Vec<u8>> = if std::mem::take(&mut unread) {
            None
        } else {
            redis.get(&key).await.map_err(unavailable)?
        };
        let mut cart = match &bytes {
            Some(bytes) => serde_json::from_slice(bytes)
                .map_err(|e| ApiError::Internal(format!("{key} is not a cart: {e}")))?,
            None => Cart::default(),
        };
        cart.add(line)?;
        let new =
            serde_json::to_vec(&cart).map_err(|e| ApiError::Internal(format!("encoding: {e}")))?;
        let written = match &bytes {
            Some(bytes) => {
                let swapped: i64 = state
                    .cas
                    .key(&key)
                    .arg(bytes.as_slice())
                    .arg(new)
                    .arg(store::CART_TTL_SECONDS)
                    .invoke_async(&mut redis)
                    .await
                    .map_err(unavailable)?;
                swapped == 1
            }
            None => {
                let created: Option<String> = redis::cmd("SET")
                    .arg(&key)
                    .arg(new)
                    .arg("NX")
                    .arg("EX")
                    .arg(store::CART_TTL_SECONDS)
                    .query_async(&mut redis)
                    .await
                    .map_err(unavailable)?;
                created.is_some()
            }
        };
        if written {
            return Ok(cart);
        }
    }
    Err(ApiError::CartBusy)
}

fn unavailable(e: redis::RedisError) -> ApiError {
    ApiError::Unavailable(e.to_string())
}

/// A pizza [`Reply`] as an axum response.
fn reply(reply: Reply) -> Response {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, reply.body).into_response();
    for (name, value) in reply.headers {
        if let (Ok(name), Ok(value)) = (
            header::HeaderName::from_bytes(name.as_bytes()),
            header::HeaderValue::from_str(&value),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    response
}
