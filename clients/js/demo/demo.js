// The demo page: a chat with a who-is-here list, on the Rocket client (./rocket.js).
//
// Everything goes through one channel. Who is here is built from the client's own messages
// (it works on any hub, without the server's Presence setting): a page that joins
// broadcasts `hello` with its name and token, the others answer it with a direct `here`,
// every page broadcasts `alive` every 10 s and `bye` when it leaves, and a name not heard
// of for 30 s is dropped. After a reconnect the page has a new token and says `hello`
// again. Query parameters: hub (default /echo), channel (chat), user (frontend), secret
// (empty), name (fills the name box).

import { Rocket } from "./rocket.js";

const params = new URLSearchParams(location.search);
const hubPath = params.get("hub") ?? "/echo";
const channel = params.get("channel") ?? "chat";
const user = params.get("user") ?? "frontend";
const secret = params.get("secret") ?? "";
const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${hubPath}`;

const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));
const ALIVE_MS = 10_000;
const GONE_MS = 30_000;

/** A random id for this page: stays the same across reconnects (the token does not). */
const myId = crypto.getRandomValues(new Uint32Array(2)).join("-");
/** @type {Map<string, {name: string, token: string, seen: number}>} */
const roster = new Map();
/** The id of the person private messages go to, or null for everyone. */
let target = null;
let myName = "";
/** @type {Rocket | null} */
let rocket = null;
let aliveTimer = 0;

$("hub").textContent = url;
$("channel").textContent = channel;
$("user").textContent = user;
/** @type {HTMLInputElement} */ ($("name")).value = params.get("name") ?? `guest-${Math.floor(Math.random() * 9000 + 1000)}`;

function setStatus(state, text) {
  const el = $("status");
  el.className = `status ${state}`;
  el.dataset.state = state;
  el.textContent = text;
}

function log(kind, who, text) {
  const li = document.createElement("li");
  li.className = kind;
  if (who) {
    const b = document.createElement("span");
    b.className = "who";
    b.textContent = who;
    li.append(b);
  }
  li.append(document.createTextNode(text));
  $("log").append(li);
  li.scrollIntoView({ block: "end" });
}

function renderRoster() {
  const ul = $("roster");
  ul.replaceChildren();
  const people = [[myId, { name: myName, token: rocket?.token ?? "", seen: Date.now() }], ...roster];
  for (const [id, person] of people) {
    const li = document.createElement("li");
    li.textContent = id === myId ? `${person.name} (you)` : person.name;
    li.dataset.name = person.name;
    li.dataset.id = id;
    li.classList.toggle("me", id === myId);
    li.classList.toggle("selected", id === target);
    if (id !== myId) li.onclick = () => choose(target === id ? null : id);
    ul.append(li);
  }
  if (target !== null && !roster.has(target)) choose(null);
}

function choose(id) {
  target = id;
  $("to").textContent = id === null ? "to everyone" : `to ${roster.get(id)?.name} only`;
  renderRoster();
}

/** Adds or refreshes someone; returns whether they were new. */
function saw(data) {
  if (!data || typeof data.id !== "string" || data.id === myId) return false;
  const known = roster.has(data.id);
  roster.set(data.id, { name: String(data.name), token: String(data.token), seen: Date.now() });
  renderRoster();
  return !known;
}

function me() {
  return { id: myId, name: myName, token: rocket?.token };
}

/** Tells the channel that this page is here (again). */
async function hello() {
  try {
    await rocket?.broadcast(channel, "hello", me());
  } catch (e) {
    log("system", "", `could not say hello: ${e.message}`);
  }
}

function onChannelEvent(e) {
  const data = e.data ?? {};
  switch (e.event) {
    case "hello":
      if (data.id === myId) return;
      if (saw(data)) log("system", "", `${data.name} joined`);
      rocket?.direct(data.token, "here", me()).catch(() => {});
      break;
    case "alive":
      saw(data);
      break;
    case "bye":
      if (roster.delete(data.id)) {
        log("system", "", `${data.name} left`);
        renderRoster();
      }
      break;
    case "message":
      log("message", data.id === myId ? `${data.name} (you)` : data.name, String(data.text));
      break;
  }
}

function onDirect(d) {
  const data = d.data ?? {};
  if (d.event === "here") {
    saw(data);
  } else if (d.event === "message") {
    saw(data);
    log("direct", `${data.name} → you`, String(data.text));
  }
}

async function join(name) {
  myName = name;
  rocket = new Rocket(url, { user, secret, minDelayMs: 250, maxDelayMs: 4000 });
  // For the console (and the browser tests): the page's client.
  /** @type {any} */ (window).rocketDemo = rocket;
  rocket.on("connected", ({ token, reconnected }) => {
    setStatus("connected", "connected");
    $("token").textContent = token;
    if (reconnected) {
      log("system", "", "reconnected");
      // Tokens changed: forget everyone and hear from them again.
      roster.clear();
      renderRoster();
      hello();
    }
  });
  rocket.on("disconnected", ({ code, reason, willReconnect }) => {
    setStatus(willReconnect ? "reconnecting" : "closed", willReconnect ? "reconnecting…" : "disconnected");
    $("token").textContent = "–";
    log("system", "", `connection lost (${code}${reason ? ` ${reason}` : ""})${willReconnect ? ": reconnecting" : ""}`);
  });
  rocket.on("reconnecting", ({ attempt, delayMs }) => {
    setStatus("reconnecting", `reconnecting (try ${attempt}, in ${delayMs} ms)…`);
  });
  rocket.on("recovery", ({ recovered, missed }) => {
    if (!recovered) log("system", "", "some messages may have been missed while away");
    else if (missed > 0) log("system", "", `recovered ${missed} message${missed === 1 ? "" : "s"} sent while away`);
  });
  rocket.onDirect(onDirect);
  setStatus("connecting", "connecting…");
  try {
    await rocket.connect();
    await rocket.subscribe(channel, onChannelEvent);
  } catch (e) {
    setStatus("closed", "not connected");
    log("system", "", `cannot join: ${e.message}`);
    rocket.close();
    rocket = null;
    return;
  }
  $("join-form").hidden = true;
  $("chat").hidden = false;
  renderRoster();
  log("system", "", `you joined ${channel} as ${name}`);
  await hello();
  aliveTimer = window.setInterval(() => {
    const now = Date.now();
    for (const [id, p] of roster) if (now - p.seen > GONE_MS) roster.delete(id);
    renderRoster();
    if (rocket?.state === "connected") rocket.broadcast(channel, "alive", me()).catch(() => {});
  }, ALIVE_MS);
}

$("join-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const name = /** @type {HTMLInputElement} */ ($("name")).value.trim();
  if (name) join(name);
});

$("send-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const input = /** @type {HTMLInputElement} */ ($("text"));
  const text = input.value.trim();
  if (!text || !rocket) return;
  const message = { ...me(), text };
  try {
    if (target === null) {
      await rocket.broadcast(channel, "message", message);
    } else {
      const to = roster.get(target);
      await rocket.direct(to?.token ?? "", "message", message);
      log("direct", `you → ${to?.name}`, text);
    }
    input.value = "";
  } catch (err) {
    log("system", "", `not sent: ${err.message}`);
  }
});

function leave() {
  if (!rocket) return;
  if (rocket.state === "connected") rocket.broadcast(channel, "bye", me()).catch(() => {});
  const r = rocket;
  rocket = null;
  clearInterval(aliveTimer);
  // Let the bye go out first.
  setTimeout(() => r.close(), 50);
}

$("leave").addEventListener("click", () => {
  leave();
  roster.clear();
  $("chat").hidden = true;
  $("join-form").hidden = false;
  setStatus("idle", "not connected");
  $("token").textContent = "–";
});
window.addEventListener("pagehide", leave);

// For the browser tests and the curious: the client and the list of people.
Object.assign(window, { rocketDemo: { get rocket() { return rocket; }, roster } });
