// The page `GET /fn/chat/` serves: pick a name and a room, then chat. Plain HTML with inline
// JavaScript, no build step. It uses only the public API (README.md): a long poll for messages,
// a heartbeat for presence, a throttled typing signal, and a poll of typing, members, presence and
// unread counts every 2 s. The page works on whichever host serves it; every request may land on
// another host.

export const PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Goldfish chat</title>
<style>
  [hidden] { display: none !important; }
  body { font: 15px/1.4 system-ui, sans-serif; margin: 0; background: #f4f6f8; color: #1b1f24; }
  header { background: #ff8c1a; color: #fff; padding: 10px 16px; font-weight: 600; }
  header small { font-weight: 400; opacity: .9; margin-left: 8px; }
  form#login { padding: 24px 16px; display: flex; gap: 8px; align-items: center; }
  input { font: inherit; padding: 6px 8px; border: 1px solid #bbb; border-radius: 4px; }
  button { font: inherit; padding: 6px 14px; border: 0; border-radius: 4px; background: #1f6feb; color: #fff; cursor: pointer; }
  main { display: flex; height: calc(100vh - 42px); }
  aside { width: 190px; padding: 12px 16px; background: #fff; border-right: 1px solid #ddd; overflow: auto; }
  aside h3 { font-size: 12px; text-transform: uppercase; color: #666; margin: 12px 0 4px; }
  aside ul { list-style: none; padding: 0; margin: 0; }
  .dot { display: inline-block; width: 8px; height: 8px; border-radius: 50%; background: #bbb; margin-right: 6px; }
  .online .dot { background: #2da44e; }
  .badge { background: #cf222e; color: #fff; border-radius: 9px; padding: 0 6px; font-size: 12px; margin-left: 4px; }
  section { flex: 1; display: flex; flex-direction: column; min-width: 0; }
  ol#messages { flex: 1; overflow: auto; list-style: none; margin: 0; padding: 12px 16px; }
  ol#messages li { margin: 4px 0; }
  ol#messages li.mine b { color: #1f6feb; }
  ol#messages time { color: #888; font-size: 12px; margin-left: 6px; }
  #typing { min-height: 20px; padding: 0 16px; color: #666; font-style: italic; }
  form#send { display: flex; gap: 8px; padding: 8px 16px 16px; }
  form#send input { flex: 1; }
  #error { color: #cf222e; padding: 0 16px; }
</style>
</head>
<body>
<header>Goldfish chat <small id="where"></small></header>
<form id="login">
  <label>Name <input id="name" required pattern="[a-z0-9_\\-]{1,32}" placeholder="ada" autofocus></label>
  <label>Room <input id="room" required pattern="[a-z0-9_\\-]{1,64}" value="lobby"></label>
  <button>Join</button>
</form>
<main id="chat" hidden>
  <aside>
    <h3>Members</h3><ul id="members"></ul>
    <h3>Your rooms</h3><ul id="rooms"></ul>
  </aside>
  <section>
    <ol id="messages"></ol>
    <div id="typing"></div>
    <div id="error"></div>
    <form id="send"><input id="text" maxlength="2000" autocomplete="off" placeholder="Say something"><button>Send</button></form>
  </section>
</main>
<script>
"use strict";
// Relative to the function's root whether the page was opened as /fn/chat or /fn/chat/.
const base = location.pathname.endsWith("/") ? location.pathname : location.pathname + "/";
const $ = (id) => document.getElementById(id);
let me = null, room = null, next = null, lastTyping = 0;

async function api(method, path, body) {
  const response = await fetch(base + path, {
    method,
    headers: body ? { "content-type": "application/json" } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.error || "HTTP " + response.status);
  return data;
}
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const showError = (error) => { $("error").textContent = error ? String(error.message || error) : ""; };

function item(text, className) {
  const li = document.createElement("li");
  if (className) li.className = className;
  li.textContent = text;
  return li;
}

function showMessage(message) {
  const li = item("", message.user === me ? "mine" : "");
  li.dataset.seq = message.seq;
  const who = document.createElement("b");
  who.textContent = message.user + ": ";
  const when = document.createElement("time");
  when.textContent = new Date(message.at).toLocaleTimeString();
  li.append(who, message.text, when);
  const list = $("messages");
  const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 4;
  list.append(li);
  if (atBottom) list.scrollTop = list.scrollHeight;
}

// The connection: a long poll. Whichever host answers, it reads the room's log in Redis.
async function poll() {
  for (;;) {
    try {
      const query = new URLSearchParams({ wait: "9000", user: me });
      if (next !== null) query.set("after", next);
      const page = await api("GET", "rooms/" + room + "/messages?" + query);
      page.messages.forEach(showMessage);
      next = page.next;
      showError(null);
    } catch (error) {
      showError(error);
      await sleep(1000);
    }
  }
}

// Typing, members with presence, and unread counts of the user's other rooms.
async function refresh() {
  try {
    const [typing, members, unread] = await Promise.all([
      api("GET", "rooms/" + room + "/typing"),
      api("GET", "rooms/" + room + "/members"),
      api("GET", "users/" + me + "/unread"),
    ]);
    const others = typing.typing.filter((user) => user !== me);
    $("typing").textContent = others.length ? others.join(", ") + (others.length > 1 ? " are" : " is") + " typing…" : "";
    const online = members.members.length
      ? await api("GET", "presence?users=" + members.members.join(","))
      : {};
    $("members").replaceChildren(...members.members.map((user) => {
      const li = item(user + (user === me ? " (you)" : ""), online[user] ? "online" : "");
      li.prepend(Object.assign(document.createElement("span"), { className: "dot" }));
      return li;
    }));
    $("rooms").replaceChildren(...Object.entries(unread).map(([name, count]) => {
      const li = document.createElement("li");
      const link = Object.assign(document.createElement("a"), { textContent: name });
      link.href = base + "?" + new URLSearchParams({ user: me, room: name });
      li.append(link);
      if (name !== room && count > 0) li.append(Object.assign(document.createElement("span"), { className: "badge", textContent: count }));
      return li;
    }));
  } catch (error) {
    showError(error);
  }
}

async function start(name, roomName) {
  me = name;
  room = roomName;
  await api("POST", "presence", { user: me });
  await api("POST", "rooms/" + room + "/join", { user: me });
  history.replaceState(null, "", base + "?" + new URLSearchParams({ user: me, room }));
  $("where").textContent = me + " in #" + room;
  $("login").hidden = true;
  $("chat").hidden = false;
  $("text").focus();
  poll();
  refresh();
  setInterval(refresh, 2000);
  setInterval(() => api("POST", "presence", { user: me }).catch(showError), 15000);
}

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  start($("name").value.trim(), $("room").value.trim()).catch(showError);
});

$("text").addEventListener("input", () => {
  if (Date.now() - lastTyping > 2000) {
    lastTyping = Date.now();
    api("POST", "rooms/" + room + "/typing", { user: me }).catch(showError);
  }
});

$("send").addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = $("text").value;
  if (!text.trim()) return;
  try {
    await api("POST", "rooms/" + room + "/messages", { user: me, text });
    $("text").value = "";
    lastTyping = 0;
  } catch (error) {
    showError(error);
  }
});

const params = new URLSearchParams(location.search);
if (params.get("user") && params.get("room")) start(params.get("user"), params.get("room")).catch(showError);
</script>
</body>
</html>
`;
