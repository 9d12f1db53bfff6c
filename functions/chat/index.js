// The chat reference app (`/fn/chat`): the classic "make a stateful chat server stateless" design
// challenge, answered on Goldfish. Every fact lives in `goldfish:function/kv` (Redis), so any host
// serves any user and no instance remembers anything: connections are long polls on the message
// log, unread counts are per-user counters, typing and online status are keys with a TTL.
//
// The API, the kv keys and why they are shaped this way: README.md beside this file. The page a
// person uses, `GET /`, is page.js. Built by `scripts/build-functions` with componentize-js for
// the world `chat` in `wit/`, as a `wasi:http` fetch handler (see functions/js-probe for the
// toolchain's gotchas).
//
// # The message log
// A post claims the room's next sequence number with one atomic `increment` of
// `room:{room}:seq`, then writes the message at `room:{room}:msg:{seq}` with compare-and-swap
// ("only if absent"). Claiming and writing are two steps, so a reader can find a seq that is
// claimed but not written yet: a hole. A hole is either a post still in flight (written a
// moment later) or a post whose host died, or whose message expired. Readers never step over a
// hole that may still be filled, because a client that moved `after` past it would never see the
// message; they return the messages before it and wait. A hole is *settled* once a later message
// of the room is older than `SETTLE_MS`: its seq was claimed before that message's, so its writer
// has been at it longer than any request may run. A reader then fills it with a tombstone, again
// with compare-and-swap: if the writer was alive after all, its write fails and it retries under
// a new seq, so no acknowledged message can land where readers have already passed. Delivered
// seqs therefore ascend and skip a number only where a post never got a 201.

import { get, set, delete as remove, exists, increment, compareAndSwap } from 'goldfish:function/kv@0.1.0';
import { PAGE } from './page.js';

/** A user or room name: lower case letters, digits, `_` and `-`. */
const USER_NAME = /^[a-z0-9_-]{1,32}$/;
const ROOM_NAME = /^[a-z0-9_-]{1,64}$/;
/** Longest message, in characters (Unicode code points). */
const MAX_TEXT_CHARS = 2000;
/** A message, or its tombstone, expires this long after it was written. */
const RETENTION_SECONDS = 7 * 24 * 3600;
/** A room keeps at most this many messages: a post deletes the one this many seqs before it. */
const KEEP_MESSAGES = 1000;
/** Longest long poll. The host ends a request after 10 s by default (504); the poll answers
 * before that, with a margin for the reads around it. */
const MAX_WAIT_MS = 9000;
/** How often a long poll looks at the room's seq counter: one `get` per look. */
const POLL_MS = 100;
/** A hole older than this is settled (see the top of this file): longer than the host's default
 * 10 s deadline, plus slack for the hosts' clocks. */
const SETTLE_MS = 15000;
/** Messages in one answer, at most and by default. */
const MAX_PAGE = 100;
/** Typing shows for this long after the last `POST typing`. */
const TYPING_SECONDS = 5;
/** A user is online for this long after the last presence heartbeat. */
const PRESENCE_SECONDS = 30;
/** Attempts of a compare-and-swap loop (membership lists), or of a post whose seq was settled
 * under it, before answering 503. Each attempt is one round trip; contention is short-lived. */
const MAX_ATTEMPTS = 50;
const MAX_POST_ATTEMPTS = 3;
/** Users asked about in one presence query. */
const MAX_PRESENCE_USERS = 100;
/** The diagnostic probe's kv counter (`POST /probe`, `GET /count`). */
const PROBE_KEY = 'probe:calls';

/** Requests this instance has served through the probe. componentize-js snapshots the engine
 * after this module's top level, so every instance starts from this 0; on Goldfish it must read
 * 1 after every probe call. */
let probeCalls = 0;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

// ---------------------------------------------------------------------------------------------
// Keys: every one the app uses, in one place (README.md maps them to the design challenge).

const keys = {
  seq: (room) => `room:${room}:seq`,
  message: (room, seq) => `room:${room}:msg:${seq}`,
  members: (room) => `room:${room}:members`,
  rooms: (user) => `user:${user}:rooms`,
  unread: (user, room) => `unread:${user}:${room}`,
  typing: (room, user) => `typing:${room}:${user}`,
  presence: (user) => `presence:${user}`,
};

// ---------------------------------------------------------------------------------------------
// HTTP

addEventListener('fetch', (event) => event.respondWith(handle(event.request)));

/** A client error, answered with its status and message. */
class Refusal extends Error {
  constructor(status, message, headers = {}) {
    super(message);
    this.status = status;
    this.headers = headers;
  }
}

async function handle(request) {
  try {
    return await route(request);
  } catch (error) {
    if (error instanceof Refusal) {
      return json(error.status, { error: error.message }, error.headers);
    }
    // The kv imports throw an error whose `payload` is the WIT `error` variant: its `tag` is
    // safe to show, its text is for logs. Anything else is a bug and fails the request (500).
    if (error?.payload?.tag === undefined) throw error;
    console.error(`kv failed: ${JSON.stringify(error.payload)}`);
    return json(503, { error: `storage failed (${error.payload.tag}), retry` });
  }
}

/** Routes by method and path; `methods` maps each method a path allows to its handler. */
async function route(request) {
  const url = new URL(request.url);
  const path = url.pathname.replace(/\/+$/, '') || '/';
  const query = url.searchParams;
  const parts = path.split('/').slice(1);
  const body = () => readBody(request);

  let methods;
  if (path === '/') {
    methods = { GET: () => html(PAGE) };
  } else if (path === '/probe') {
    methods = { POST: probe };
  } else if (path === '/count') {
    methods = { GET: () => json(200, { kv: readInt(PROBE_KEY) }) };
  } else if (path === '/presence') {
    methods = {
      POST: async () => heartbeat(userFrom(await body(), query)),
      GET: () => presence(query.get('users') ?? ''),
    };
  } else if (parts.length === 3 && parts[0] === 'users' && parts[2] === 'unread') {
    methods = { GET: () => unread(checkUser(parts[1])) };
  } else if (parts.length === 3 && parts[0] === 'rooms') {
    const room = checkRoom(parts[1]);
    methods = {
      messages: {
        POST: async () => postMessage(room, await body(), query),
        GET: () => readMessages(room, query),
      },
      join: { POST: async () => joinRoom(room, userFrom(await body(), query)) },
      typing: {
        POST: async () => typing(room, userFrom(await body(), query)),
        GET: () => whoIsTyping(room),
      },
      members: { GET: () => json(200, { members: readList(keys.members(room)) }) },
    }[parts[2]];
  }
  if (methods === undefined) {
    throw new Refusal(404, `no such path: ${url.pathname} (the API is in functions/chat/README.md)`);
  }
  const handler = methods[request.method];
  if (handler === undefined) {
    const allow = Object.keys(methods).join(', ');
    throw new Refusal(405, `${request.method} is not allowed here; use ${allow}`, { allow });
  }
  return handler();
}

/** The JSON body as an object; an empty body is `{}`. */
async function readBody(request) {
  const text = await request.text();
  if (text.trim() === '') return {};
  let value;
  try {
    value = JSON.parse(text);
  } catch {
    throw new Refusal(400, 'the body must be JSON, e.g. {"user": "ada", "text": "hello"}');
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new Refusal(400, 'the body must be a JSON object, e.g. {"user": "ada"}');
  }
  return value;
}

/** `user` from the body, or else from the query. */
function userFrom(body, query) {
  return checkUser(body.user ?? query.get('user'));
}

function checkUser(user) {
  if (typeof user !== 'string' || !USER_NAME.test(user)) {
    throw new Refusal(400, 'user must be 1 to 32 of a-z, 0-9, _ and -, in the body or the query');
  }
  return user;
}

function checkRoom(room) {
  if (!ROOM_NAME.test(room)) {
    throw new Refusal(400, 'a room name is 1 to 64 of a-z, 0-9, _ and -');
  }
  return room;
}

/** A non-negative integer query parameter, or `fallback` when it is absent. */
function intParam(query, name, fallback) {
  const text = query.get(name);
  if (text === null || text === '') return fallback;
  if (!/^\d{1,15}$/.test(text)) {
    throw new Refusal(400, `${name} must be a non-negative integer, got ${JSON.stringify(text)}`);
  }
  return Number(text);
}

function json(status, body, headers = {}) {
  return new Response(JSON.stringify(body), {
    status,
    headers: { 'content-type': 'application/json', ...headers },
  });
}

function html(text) {
  return new Response(text, {
    status: 200,
    headers: { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-cache' },
  });
}

// ---------------------------------------------------------------------------------------------
// Messages

/** `POST /rooms/{room}/messages {"user", "text"}`: claims the next seq, writes the message, and
 * counts it as unread for every other member. The poster joins the room if not yet a member. */
async function postMessage(room, body, query) {
  const user = userFrom(body, query);
  const text = body.text;
  if (typeof text !== 'string' || text.length === 0) {
    throw new Refusal(400, 'text must be a non-empty string');
  }
  const chars = [...text].length;
  if (chars > MAX_TEXT_CHARS) {
    throw new Refusal(400, `text is ${chars} characters; at most ${MAX_TEXT_CHARS} are allowed`);
  }
  const roomMembers = addMember(room, user);
  for (let attempt = 0; attempt < MAX_POST_ATTEMPTS; attempt++) {
    const seq = Number(increment(keys.seq(room), 1n));
    // The room lives as long as its newest message: the counter gets the messages' expiry, so
    // a room silent for the whole retention period starts again at 1 with nothing left behind.
    // Only the latest claimer's refresh can succeed, which is the one that matters.
    compareAndSwap(keys.seq(room), bytes(String(seq)), bytes(String(seq)), RETENTION_SECONDS);
    // `at` is read after the claim: a later message's `at` bounds this claim's age (settling).
    const message = { seq, user, text, at: Date.now() };
    if (!compareAndSwap(keys.message(room, seq), undefined, bytes(JSON.stringify(message)), RETENTION_SECONDS)) {
      // A reader settled this seq (we were slower than SETTLE_MS), or an expired room's old
      // message is still there: claim another.
      continue;
    }
    for (const member of roomMembers) {
      if (member !== user) increment(keys.unread(member, room), 1n);
    }
    if (seq > KEEP_MESSAGES) dropOldMessage(room, seq - KEEP_MESSAGES);
    return json(201, message);
  }
  throw new Refusal(503, 'the room is too busy to take this message; retry');
}

/** Deletes the message that fell out of the room's last `KEEP_MESSAGES`. Only saves space:
 * readers never look further back than that, so a failure here changes nothing they see. */
function dropOldMessage(room, seq) {
  try {
    remove(keys.message(room, seq));
  } catch (error) {
    console.error(`retention delete of ${room} #${seq} failed: ${JSON.stringify(error?.payload ?? String(error))}`);
  }
}

/** `GET /rooms/{room}/messages?after=N&wait=MS&user=U&limit=L`. */
async function readMessages(room, query) {
  const wait = Math.min(intParam(query, 'wait', 0), MAX_WAIT_MS);
  const limit = Math.min(Math.max(intParam(query, 'limit', MAX_PAGE), 1), MAX_PAGE);
  const after = intParam(query, 'after', null);
  const user = query.has('user') ? checkUser(query.get('user')) : null;
  const deadline = Date.now() + wait;
  let page = readPage(room, after, limit);
  // The long poll: nothing new yet, so look again until something is, or the time is up.
  // Each look is one `get` of the seq counter; the page is read again only when it moved.
  while (page.messages.length === 0 && page.next === page.after && Date.now() < deadline) {
    await sleep(Math.min(POLL_MS, deadline - Date.now()));
    if (page.waitingOnHole || readInt(keys.seq(room)) !== page.head) {
      page = readPage(room, page.after, limit);
    }
  }
  if (user !== null) {
    // Reading clears the reader's unread count for the room. The count is a badge, not a
    // ledger: a message posted between the read above and this delete is counted as read
    // although this answer does not hold it; the next read delivers it all the same.
    remove(keys.unread(user, room));
  }
  return json(200, { messages: page.messages, next: page.next });
}

/** One page of the log after `after` (`null`: the latest page). `next` is the `after` for the
 * next call: the last seq delivered or settled. `after` is the effective start (an `after`
 * beyond the head means the room expired and started again at 1, so reading starts there). */
function readPage(room, requestedAfter, limit) {
  const head = readInt(keys.seq(room));
  let after = requestedAfter ?? Math.max(0, head - limit);
  if (after > head) after = 0;
  const first = Math.max(after + 1, head - KEEP_MESSAGES + 1);
  const last = Math.min(head, first + limit - 1);
  const records = [];
  for (let seq = first; seq <= last; seq++) records.push(readRecord(room, seq));

  // Whether the hole at `records[i]` is settled: some later record, in this page or else the
  // head's, was written more than `SETTLE_MS` ago.
  let headRecord;
  const settled = (i) => {
    let later = records.slice(i + 1).find((record) => record !== undefined);
    if (later === undefined && head > last) {
      headRecord ??= readRecord(room, head) ?? null;
      later = headRecord ?? undefined;
    }
    return later !== undefined && Date.now() - later.at > SETTLE_MS;
  };

  const messages = [];
  let next = Math.max(after, first - 1);
  let waitingOnHole = false;
  for (let i = 0; i < records.length; i++) {
    const seq = first + i;
    let record = records[i];
    if (record === undefined) {
      if (!settled(i)) {
        waitingOnHole = true;
        break;
      }
      const tombstone = { seq, lost: true, at: Date.now() };
      if (!compareAndSwap(keys.message(room, seq), undefined, bytes(JSON.stringify(tombstone)), RETENTION_SECONDS)) {
        // Its writer, or another reader, got there first: take what it wrote.
        record = readRecord(room, seq);
        if (record === undefined) {
          waitingOnHole = true;
          break;
        }
      }
    }
    if (record !== undefined && !record.lost) {
      messages.push({ seq: record.seq, user: record.user, text: record.text, at: record.at });
    }
    next = seq;
  }
  return { messages, next, after, head, waitingOnHole };
}

/** The message or tombstone at `seq`, or `undefined` for a hole. */
function readRecord(room, seq) {
  const value = get(keys.message(room, seq));
  if (value === undefined) return undefined;
  return JSON.parse(decoder.decode(value));
}

// ---------------------------------------------------------------------------------------------
// Membership and unread counts

/** `POST /rooms/{room}/join {"user"}`. */
function joinRoom(room, user) {
  return json(200, { room, members: addMember(room, user) });
}

/** Adds `user` to the room's members and the room to the user's rooms; returns the members.
 * The user's list is written first, so "member of the room" implies "the room is in the user's
 * list" even if the host dies in between, and a member costs one `get`. */
function addMember(room, user) {
  const roomMembers = readList(keys.members(room));
  if (roomMembers.includes(user)) return roomMembers;
  addToList(keys.rooms(user), room);
  return addToList(keys.members(room), user);
}

/** Adds `item` to the sorted JSON list at `key` with a compare-and-swap loop (no lost joins
 * when several hosts add at once) and returns the list. Costs one `get` when already there. */
function addToList(key, item) {
  for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
    const value = get(key);
    const list = value === undefined ? [] : JSON.parse(decoder.decode(value));
    if (list.includes(item)) return list;
    const updated = [...list, item].sort();
    if (compareAndSwap(key, value, bytes(JSON.stringify(updated)), undefined)) return updated;
  }
  throw new Refusal(503, 'too many concurrent joins; retry');
}

/** The sorted JSON list at `key`, empty when absent. */
function readList(key) {
  const value = get(key);
  return value === undefined ? [] : JSON.parse(decoder.decode(value));
}

/** `GET /users/{user}/unread` → `{"room": count, ...}` for every room the user joined. */
function unread(user) {
  const counts = {};
  for (const room of readList(keys.rooms(user))) counts[room] = readInt(keys.unread(user, room));
  return json(200, counts);
}

// ---------------------------------------------------------------------------------------------
// Typing and presence: keys that expire by themselves

/** `POST /rooms/{room}/typing {"user"}`: shows the user typing for `TYPING_SECONDS`. */
function typing(room, user) {
  addMember(room, user);
  set(keys.typing(room, user), bytes('1'), TYPING_SECONDS);
  return json(200, { typing: true, seconds: TYPING_SECONDS });
}

/** `GET /rooms/{room}/typing` → the members whose typing key has not expired. */
function whoIsTyping(room) {
  const typingNow = readList(keys.members(room)).filter((user) => exists(keys.typing(room, user)));
  return json(200, { typing: typingNow });
}

/** `POST /presence {"user"}`: the heartbeat; online for `PRESENCE_SECONDS`. */
function heartbeat(user) {
  set(keys.presence(user), bytes(String(Date.now())), PRESENCE_SECONDS);
  return json(200, { online: true, seconds: PRESENCE_SECONDS });
}

/** `GET /presence?users=a,b` → `{"a": true, "b": false}`. */
function presence(list) {
  const users = list.split(',').filter((user) => user !== '');
  if (users.length > MAX_PRESENCE_USERS) {
    throw new Refusal(400, `ask about at most ${MAX_PRESENCE_USERS} users at once`);
  }
  const online = {};
  for (const user of users) online[checkUser(user)] = exists(keys.presence(user));
  return json(200, online);
}

// ---------------------------------------------------------------------------------------------
// The freshness probe (the protocol of functions/recycle-probe, for `goldfish stress`)

function probe() {
  probeCalls += 1;
  return json(200, { global: probeCalls, kv: Number(increment(PROBE_KEY, 1n)) });
}

// ---------------------------------------------------------------------------------------------
// kv helpers

function bytes(text) {
  return encoder.encode(text);
}

/** The integer at `key` (an `increment` counter), 0 when absent. */
function readInt(key) {
  const value = get(key);
  if (value === undefined) return 0;
  const text = decoder.decode(value);
  if (!/^-?\d+$/.test(text)) throw new Error(`${key} holds ${JSON.stringify(text)}, not an integer`);
  return Number(text);
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
