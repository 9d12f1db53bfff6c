"""The recycle probe in Python (`/fn/python-probe`): shows whether an instance, and so its module
globals, ever serves more than one request.

It speaks exactly the protocol of `functions/recycle-probe`. Every request but `GET /count` adds
one to the module-level `calls` and to the kv counter `probe:calls`, and answers
`{"global": <calls after the add>, "kv": <counter after the add>}`. Goldfish promises a fresh
instance per request, so on Goldfish `global` must always read 1 while `kv` counts every call; a
stress test that ever sees `global > 1` has caught an instance being reused. `GET /count` answers
`{"kv": <counter>}` (0 before the first call) and changes nothing. A kv failure answers 503.

A component for the `function` world of `wit/function.wit`, built by `scripts/build-functions`
with componentize-py, which generates the `wit_world` bindings imported here at build time.
componentize-py wants the exported class to be named `WitWorld`.
"""

import json
import sys

import wit_world
from componentize_py_types import Err
from wit_world.imports import kv
from wit_world.imports.types import Request, Response

# The kv key counting every probe call, on every host.
CALLS_KEY = "probe:calls"

# Requests this instance has served. componentize-py snapshots the heap right after importing this
# module, so every instance starts from this 0.
calls = 0

# The WIT name of each kv error case: safe to show, unlike the payloads, which are for logs.
ERROR_NAMES = {
    kv.Error_InvalidKey: "invalid-key",
    kv.Error_ValueTooLarge: "value-too-large",
    kv.Error_NotAnInteger: "not-an-integer",
    kv.Error_InvalidCursor: "invalid-cursor",
    kv.Error_Unavailable: "unavailable",
}


class WitWorld(wit_world.WitWorld):
    def handle(self, request: Request) -> Response:
        try:
            if request.method == "GET" and request.path == "/count":
                return json_response(200, {"kv": count()})
            return json_response(200, probe())
        except Err as error:
            print(f"kv failed: {error.value}", file=sys.stderr)
            name = ERROR_NAMES[type(error.value)]
            return json_response(503, {"error": f"kv failed, retry: {name}"})


def probe() -> dict:
    """Counts this call in the module global and in kv."""
    global calls
    calls += 1
    return {"global": calls, "kv": kv.increment(CALLS_KEY, 1)}


def count() -> int:
    """Reads the kv counter without counting."""
    value = kv.get(CALLS_KEY)
    if value is None:
        return 0
    # `increment` stores decimal text; anything else means someone else wrote the key.
    try:
        return int(value)
    except ValueError:
        raise Err(kv.Error_NotAnInteger()) from None


def json_response(status: int, body: dict) -> Response:
    return Response(
        status=status,
        headers=[("content-type", "application/json")],
        body=json.dumps(body, separators=(",", ":")).encode(),
    )
