// A minimal broadcast server on Node.js and the `ws` package, speaking the subset of
// Rocket's protocol that the benchmark uses: the greeting, authenticate, subscribe and
// broadcast (and unsubscribe). Each broadcast is serialized once, to one Buffer, and that
// Buffer is sent to every subscriber. It is the peer that scripts/bench.sh measures Rocket
// against.
//
//   node server.js --port 9790 ../bench.json
//
// The config is Rocket's (the first hub: its Path and Users). Errors follow Rocket's
// names: INVALID_PAYLOAD, ACCESS_DENIED, INVALID_USER, INVALID_CREDENTIALS,
// INVALID_CHANNEL.
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const { WebSocketServer } = require('ws');

const args = process.argv.slice(2);
let port = 9790;
let configPath = null;
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--port') port = Number(args[++i]);
  else configPath = args[i];
}
if (!configPath) {
  console.error('usage: node server.js [--port P] CONFIG.json');
  process.exit(2);
}
const config = JSON.parse(fs.readFileSync(configPath, 'utf8'));
const hub = config.Hubs[0];
const users = hub.Users || {};
const READ = 1;
const WRITE = 2;

const channels = new Map(); // name -> Set of sockets
const reply = (key, value) => Buffer.from(JSON.stringify({ [key]: value }));
const errors = {};
for (const name of ['INVALID_PAYLOAD', 'ACCESS_DENIED', 'INVALID_USER', 'INVALID_CREDENTIALS', 'INVALID_CHANNEL']) {
  errors[name] = reply('err', name);
}
const isName = (s) => typeof s === 'string' && s.length > 0 && Buffer.byteLength(s) <= 255;

const wss = new WebSocketServer({
  host: config.Host || '127.0.0.1',
  port,
  path: hub.Path,
  perMessageDeflate: false,
  maxPayload: 65536,
  clientTracking: false,
});

wss.on('connection', (ws) => {
  ws.perm = 0;
  ws.subs = new Set();
  ws.send(reply('connected', crypto.randomBytes(16).toString('hex')));
  ws.on('message', (raw, isBinary) => {
    let msg;
    try {
      if (isBinary) throw new Error('binary');
      msg = JSON.parse(raw);
    } catch (_) {
      return ws.send(errors.INVALID_PAYLOAD);
    }
    if (msg === null || typeof msg !== 'object' || Array.isArray(msg)) return ws.send(errors.INVALID_PAYLOAD);
    const keys = Object.keys(msg);
    if (keys.length !== 1) return ws.send(errors.INVALID_PAYLOAD);
    const action = keys[0];
    const body = msg[action];
    if (body === null || typeof body !== 'object') return ws.send(errors.INVALID_PAYLOAD);
    switch (action) {
      case 'authenticate': {
        if (!isName(body.user) || typeof body.secret !== 'string') return ws.send(errors.INVALID_PAYLOAD);
        unsubscribeAll(ws);
        ws.perm = 0;
        const user = users[body.user];
        if (!user) return ws.send(errors.INVALID_USER);
        if (user.Secret !== '' && user.Secret !== body.secret) return ws.send(errors.INVALID_CREDENTIALS);
        ws.perm = user.Permission;
        return ws.send(reply('authenticated', body.user));
      }
      case 'subscribe': {
        if (!isName(body.channel)) return ws.send(errors.INVALID_PAYLOAD);
        if (!(ws.perm & READ)) return ws.send(errors.ACCESS_DENIED);
        let set = channels.get(body.channel);
        if (!set) channels.set(body.channel, (set = new Set()));
        set.add(ws);
        ws.subs.add(body.channel);
        return ws.send(reply('subscribed', body.channel));
      }
      case 'unsubscribe': {
        if (!isName(body.channel)) return ws.send(errors.INVALID_PAYLOAD);
        unsubscribe(ws, body.channel);
        return ws.send(reply('unsubscribed', body.channel));
      }
      case 'broadcast': {
        if (!isName(body.event) || !isName(body.channel)) return ws.send(errors.INVALID_PAYLOAD);
        if (!(ws.perm & WRITE)) return ws.send(errors.ACCESS_DENIED);
        const set = channels.get(body.channel);
        if (!set) return ws.send(errors.INVALID_CHANNEL);
        const event = { event: body.event, channel: body.channel };
        if (body.data !== undefined) event.data = body.data;
        const wire = Buffer.from(JSON.stringify(event)); // serialized once
        for (const sub of set) sub.send(wire, { binary: false });
        return ws.send(reply('broadcasted', body.channel));
      }
      default:
        return ws.send(errors.INVALID_PAYLOAD);
    }
  });
  ws.on('close', () => unsubscribeAll(ws));
  ws.on('error', () => {});
});

function unsubscribe(ws, name) {
  const set = channels.get(name);
  if (set) {
    set.delete(ws);
    if (set.size === 0) channels.delete(name);
  }
  ws.subs.delete(name);
}

function unsubscribeAll(ws) {
  for (const name of [...ws.subs]) unsubscribe(ws, name);
}

wss.on('listening', () => console.error(`peer: listening on ws://${config.Host || '127.0.0.1'}:${port}${hub.Path}`));
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(0));
