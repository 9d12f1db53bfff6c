// The recycle probe in JavaScript (`/fn/js-probe`): shows whether an instance, and so its module
// globals, ever serves more than one request.
//
// It speaks exactly the protocol of `functions/recycle-probe`, as a standard `wasi:http` handler
// using `wasi:keyvalue@0.2.0-draft2` instead of `goldfish:function/kv`. Every request but
// `GET /count` adds one to the module-level `calls` and to the kv counter `probe:calls` in the
// bucket "default", and answers `{"global": <calls after the add>, "kv": <counter after the add>}`.
// Goldfish promises a fresh instance per request, so on Goldfish `global` must always read 1 while
// `kv` counts every call; a stress test that ever sees `global > 1` has caught an instance being
// reused. `GET /count` answers `{"kv": <counter>}` (0 before the first call) and changes nothing.
// A kv failure answers 503. (componentize-js 0.23 cannot serve a second `fetch` event on one
// instance at all: there, reuse shows as a failed request rather than as `global: 2`.)
//
// Built by `scripts/build-functions` with componentize-js for the world `js-probe` in `wit/`;
// componentize-js routes `wasi:http/incoming-handler` to the `fetch` event listener.

import { open } from 'wasi:keyvalue/store@0.2.0-draft2';
import { increment } from 'wasi:keyvalue/atomics@0.2.0-draft2';

/** The kv key counting every probe call, on every host. */
const CALLS_KEY = 'probe:calls';

/** Requests this instance has served. componentize-js snapshots the engine right after running
 * this module's top level, so every instance starts from this 0. */
let calls = 0;

addEventListener('fetch', (event) => event.respondWith(handle(event.request)));

function handle(request) {
  try {
    const bucket = open('default');
    if (request.method === 'GET' && new URL(request.url).pathname === '/count') {
      return json(200, { kv: count(bucket) });
    }
    calls += 1;
    return json(200, { global: calls, kv: Number(increment(bucket, CALLS_KEY, 1n)) });
  } catch (error) {
    // The keyvalue imports throw an error whose `payload` is the WIT `error` variant: its `tag`
    // is safe to show, `other`'s text is for logs. Anything else is a bug and fails the request.
    if (error?.payload?.tag === undefined) throw error;
    console.error(`kv failed: ${JSON.stringify(error.payload)}`);
    return json(503, { error: `kv failed, retry: ${error.payload.tag}` });
  }
}

/** Reads the kv counter without counting. */
function count(bucket) {
  const value = bucket.get(CALLS_KEY);
  if (value === undefined) return 0;
  // `increment` stores decimal text; anything else means someone else wrote the key.
  const text = new TextDecoder().decode(value);
  if (!/^-?\d+$/.test(text)) {
    const error = new Error(`not an integer: ${text}`);
    error.payload = { tag: 'not-an-integer' };
    throw error;
  }
  return Number(text);
}

function json(status, body) {
  return new Response(JSON.stringify(body), {
    status,
    headers: { 'content-type': 'application/json' },
  });
}
