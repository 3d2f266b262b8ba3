// @ts-check
/**
 * Rocket client: a small, dependency-free WebSocket client for the Rocket pub/sub server
 * (protocol: docs/PROTOCOL.md). Runs in browsers and in Node ≥ 22 (global `WebSocket`);
 * elsewhere pass a WebSocket class as `options.WebSocket` (e.g. the `ws` package).
 *
 * ```js
 * import { Rocket } from "./rocket.js";
 * const rocket = new Rocket("ws://localhost:9772/echo", { user: "frontend", secret: "" });
 * await rocket.connect();
 * await rocket.subscribe("news", (e) => console.log(e.event, e.data));
 * await rocket.broadcast("news", "hello", { text: "hi all" });
 * rocket.onDirect((d) => console.log("from", d.from, d.data));
 * await rocket.direct(otherToken, "ping", [1, 2, 3]);
 * rocket.close();
 * ```
 *
 * How it works:
 * - Requests are promises. Rocket answers each client's requests in order, so a FIFO of
 *   pending requests maps every reply to its request; an `{"err":"NAME"}` reply rejects the
 *   request's promise with a {@link RocketError} whose `code` is `NAME`.
 * - When an established connection is lost, the client reconnects with exponential backoff
 *   and jitter (capped), authenticates again and subscribes again to every channel. On a
 *   History hub it subscribes with `since` (the last offset and epoch seen on the channel),
 *   hands the missed events to the channel's handlers, and emits `recovery` with
 *   `recovered: false` when the server could not fill the gap (the app must then refetch its
 *   state). It does not reconnect after its own `close()`, a close with code 1000, or a close
 *   with 1008 that is not a slow-consumer or write-timeout close (e.g. too many failed
 *   authentications).
 * - Events (`rocket.on(name, handler)`): `connected` `{token, reconnected}`, `disconnected`
 *   `{code, reason, willReconnect}`, `reconnecting` `{attempt, delayMs}`, `recovery`
 *   `{channel, recovered, missed}`, `join` / `leave` `{channel, client, user}` (hubs with
 *   JoinLeave), `error` `{error}` (a failure with no promise to reject, e.g. during a
 *   reconnect).
 */

/** Error names of the protocol, and the client's own. */
export const ErrorCodes = Object.freeze({
  INVALID_PAYLOAD: "INVALID_PAYLOAD",
  INVALID_USER: "INVALID_USER",
  INVALID_CREDENTIALS: "INVALID_CREDENTIALS",
  ACCESS_DENIED: "ACCESS_DENIED",
  LIMIT_EXCEEDED: "LIMIT_EXCEEDED",
  INVALID_CHANNEL: "INVALID_CHANNEL",
  INVALID_CLIENT: "INVALID_CLIENT",
  /** The URL given to the constructor is not a `ws://` or `wss://` URL. */
  BAD_URL: "BAD_URL",
  /** No WebSocket implementation: Node < 22 without `options.WebSocket`. */
  NO_WEBSOCKET: "NO_WEBSOCKET",
  /** The connection could not be opened (refused, 404 hub path, 403 origin, timeout…). */
  CONNECT_FAILED: "CONNECT_FAILED",
  /** The connection was lost before the request was answered. */
  CONNECTION_LOST: "CONNECTION_LOST",
  /** A request was made while the client is not connected. */
  NOT_CONNECTED: "NOT_CONNECTED",
  /** The client was closed (by `close()` or a close that ends reconnecting). */
  CLOSED: "CLOSED",
  /** The server sent something the protocol does not allow. */
  PROTOCOL_ERROR: "PROTOCOL_ERROR",
});

/** An error with a protocol error name (`INVALID_CHANNEL`, …) or one of the client's own. */
export class RocketError extends Error {
  /**
   * @param {string} code the protocol's error name, or one of {@link ErrorCodes}
   * @param {string} message what happened
   * @param {{closeCode?: number, closeReason?: string, request?: object}} [details]
   */
  constructor(code, message, details = {}) {
    super(`${code}: ${message}`);
    this.name = "RocketError";
    /** The protocol's error name, e.g. `INVALID_CHANNEL`. */
    this.code = code;
    /** The WebSocket close code, when the error comes from a close. */
    this.closeCode = details.closeCode;
    /** The WebSocket close reason, when the error comes from a close. */
    this.closeReason = details.closeReason;
    /** The request that was refused, when the error is a reply. */
    this.request = details.request;
  }
}

/**
 * @typedef {object} RocketOptions
 * @property {string} [user] user to authenticate as; without it the connection stays anonymous
 * @property {string} [secret] the user's secret ("" by default)
 * @property {boolean} [reconnect] reconnect when an established connection is lost (default true)
 * @property {number} [minDelayMs] first reconnect delay before jitter (default 500)
 * @property {number} [maxDelayMs] cap of the reconnect delay (default 15000)
 * @property {number} [connectTimeoutMs] how long opening a connection may take (default 10000)
 * @property {() => number} [random] random number in [0, 1) for the jitter (default Math.random)
 * @property {any} [WebSocket] a WebSocket class (default globalThis.WebSocket)
 */

/**
 * @typedef {object} ChannelEvent a broadcast delivered to a channel's handler
 * @property {string} event
 * @property {string} channel
 * @property {any} data `undefined` when the broadcast had no data
 * @property {number} [offset] on History hubs
 * @property {string} [epoch] on History hubs
 */

/**
 * @typedef {object} DirectMessage a direct message delivered to `onDirect` handlers
 * @property {string} event
 * @property {string | undefined} from the sender's token (absent for the HTTP publish API)
 * @property {any} data
 */

/**
 * @typedef {object} Subscribed what `subscribe` resolves to
 * @property {string} channel
 * @property {number} [offset] on History hubs: the channel's last offset
 * @property {string} [epoch] on History hubs
 * @property {boolean} [recovered] after a subscribe with `since`
 */

/** WebSocket readyState OPEN. */
const OPEN = 1;

/** The reply key each request expects. */
const REPLY = /** @type {const} */ ({
  authenticate: "authenticated",
  subscribe: "subscribed",
  unsubscribe: "unsubscribed",
  broadcast: "broadcasted",
  direct: "directSent",
  logout: "loggedOut",
  history: "history",
  presence: "presence",
});

/** Keys that make a message a reply (anything else is an event or the greeting). */
const REPLY_KEYS = new Set([...Object.values(REPLY), "err"]);

/**
 * Checks `url` and returns it normalised; throws a {@link RocketError} `BAD_URL` that says
 * what is wrong.
 * @param {string | URL} url
 * @returns {string}
 */
export function checkUrl(url) {
  let parsed;
  try {
    parsed = new URL(String(url));
  } catch {
    throw new RocketError(
      ErrorCodes.BAD_URL,
      `${JSON.stringify(String(url))} is not a URL; expected ws://host:port/hub or wss://…`,
    );
  }
  if (parsed.protocol !== "ws:" && parsed.protocol !== "wss:") {
    const hint =
      parsed.protocol === "http:" || parsed.protocol === "https:"
        ? ` (use ${parsed.protocol === "https:" ? "wss" : "ws"}://${parsed.host}${parsed.pathname})`
        : "";
    throw new RocketError(
      ErrorCodes.BAD_URL,
      `${JSON.stringify(String(url))}: the scheme must be ws: or wss:, not ${parsed.protocol}${hint}`,
    );
  }
  if (parsed.hash) {
    throw new RocketError(ErrorCodes.BAD_URL, `${JSON.stringify(String(url))}: a WebSocket URL has no #fragment`);
  }
  if (parsed.pathname === "/" && !String(url).endsWith("/")) {
    throw new RocketError(
      ErrorCodes.BAD_URL,
      `${JSON.stringify(String(url))} names no hub: add the hub's path, e.g. ${parsed.origin.replace(/^http/, "ws")}/echo`,
    );
  }
  return parsed.href;
}

/** A Rocket connection that reconnects by itself. */
export class Rocket {
  /**
   * @param {string | URL} url `ws://host:port/hub` or `wss://…`; a bad URL throws `BAD_URL`
   * @param {RocketOptions} [options]
   */
  constructor(url, options = {}) {
    /** The hub's URL. */
    this.url = checkUrl(url);
    this.options = {
      reconnect: true,
      minDelayMs: 500,
      maxDelayMs: 15000,
      connectTimeoutMs: 10000,
      random: Math.random,
      secret: "",
      ...options,
    };
    /** The connection's token (its address for direct messages); changes on reconnect. */
    this.token = /** @type {string | null} */ (null);
    /** `idle`, `connecting`, `connected`, `reconnecting` or `closed`. */
    this.state = "idle";
    /** @type {any} */
    this._ws = null;
    /** Pending requests, in the order they were sent. @type {Array<{reply: string, request: object, resolve: (v: any) => void, reject: (e: Error) => void}>} */
    this._pending = [];
    /** Channels subscribed to, with their handlers and the last offset seen. @type {Map<string, {handlers: Set<(e: ChannelEvent) => void>, offset?: number, epoch?: string, waiting: Array<{resolve: (v: any) => void, reject: (e: Error) => void}>}>} */
    this._channels = new Map();
    /** @type {Set<(d: DirectMessage) => void>} */
    this._directHandlers = new Set();
    /** @type {Map<string, Set<(detail: any) => void>>} */
    this._listeners = new Map();
    this._attempt = 0;
    /** @type {any} */
    this._timer = null;
    /** Incremented by every new socket: callbacks of an older one are ignored. */
    this._generation = 0;
    /** Rejects the connection attempt in progress, if any. @type {((e: Error) => void) | null} */
    this._abortOpen = null;
    /** The first connection in progress (`connect()` called again returns it). @type {Promise<string> | null} */
    this._connecting = null;
  }

  // ---- events ---------------------------------------------------------------------------

  /**
   * Calls `handler(detail)` on each `name` event; returns a function that stops it.
   * @param {"connected" | "disconnected" | "reconnecting" | "recovery" | "join" | "leave" | "error"} name
   * @param {(detail: any) => void} handler
   * @returns {() => void}
   */
  on(name, handler) {
    let set = this._listeners.get(name);
    if (!set) this._listeners.set(name, (set = new Set()));
    set.add(handler);
    return () => this.off(name, handler);
  }

  /**
   * Stops calling `handler` on `name` events.
   * @param {string} name
   * @param {(detail: any) => void} handler
   */
  off(name, handler) {
    this._listeners.get(name)?.delete(handler);
  }

  /**
   * @param {string} name
   * @param {any} detail
   */
  _emit(name, detail) {
    for (const handler of [...(this._listeners.get(name) ?? [])]) {
      try {
        handler(detail);
      } catch (e) {
        queueMicrotask(() => {
          throw e;
        });
      }
    }
  }

  // ---- connecting -----------------------------------------------------------------------

  /**
   * Opens the connection, waits for the greeting and authenticates (when `user` is set).
   * Rejects with `CONNECT_FAILED` when the connection cannot be opened, or with the
   * protocol's error (`INVALID_USER`, `INVALID_CREDENTIALS`) when authentication fails; it
   * does not retry a first connection. Once connected, lost connections are re-established
   * by themselves.
   * @returns {Promise<string>} the connection's token
   */
  async connect() {
    if (this.state === "connected") return /** @type {string} */ (this.token);
    if (this.state === "connecting") return /** @type {Promise<string>} */ (this._connecting);
    if (this.state === "reconnecting") {
      return new Promise((resolve, reject) => {
        const offOk = this.on("connected", ({ token }) => {
          offOk();
          offClosed();
          resolve(token);
        });
        const offClosed = this.on("disconnected", ({ willReconnect, error }) => {
          if (willReconnect) return;
          offOk();
          offClosed();
          reject(error ?? new RocketError(ErrorCodes.CLOSED, "the client was closed"));
        });
      });
    }
    this.state = "connecting";
    this._connecting = this._open().then(
      (token) => {
        this._connected(false);
        return token;
      },
      (error) => {
        this._teardown();
        this.state = "closed";
        throw error;
      },
    );
    return this._connecting;
  }

  /**
   * One connection attempt: open, greeting, authenticate. Resolves with the token.
   * @returns {Promise<string>}
   */
  _open() {
    const WS = this.options.WebSocket ?? globalThis.WebSocket;
    if (typeof WS !== "function") {
      return Promise.reject(
        new RocketError(
          ErrorCodes.NO_WEBSOCKET,
          "no WebSocket implementation: use a browser or Node ≥ 22, or pass options.WebSocket (e.g. the ws package)",
        ),
      );
    }
    const generation = ++this._generation;
    return new Promise((resolve, reject) => {
      let greeted = false;
      /** @type {any} */
      let ws;
      try {
        ws = new WS(this.url);
      } catch (e) {
        reject(new RocketError(ErrorCodes.CONNECT_FAILED, `cannot open ${this.url}: ${/** @type {Error} */ (e).message}`));
        return;
      }
      this._ws = ws;
      const timeout = setTimeout(() => {
        fail(new RocketError(ErrorCodes.CONNECT_FAILED, `${this.url}: no greeting within ${this.options.connectTimeoutMs} ms`));
        try {
          ws.close();
        } catch {
          // already closing
        }
      }, this.options.connectTimeoutMs);
      /** @param {Error} error */
      const fail = (error) => {
        clearTimeout(timeout);
        this._abortOpen = null;
        reject(error);
      };
      this._abortOpen = fail;
      ws.onmessage = (/** @type {{data: any}} */ e) => {
        if (generation !== this._generation) return;
        if (greeted) {
          this._handleText(e.data);
          return;
        }
        const message = parse(e.data);
        if (!message || typeof message.connected !== "string") {
          fail(new RocketError(ErrorCodes.PROTOCOL_ERROR, `expected the greeting {"connected":…}, got ${String(e.data).slice(0, 200)}`));
          ws.close();
          return;
        }
        greeted = true;
        clearTimeout(timeout);
        this.token = message.connected;
        this._startSession().then(() => {
          this._abortOpen = null;
          resolve(message.connected);
        }, fail);
      };
      ws.onclose = (/** @type {{code: number, reason: string}} */ e) => {
        if (generation !== this._generation) return;
        if (!greeted) {
          // Browsers do not say why a handshake failed (404 hub, 403 origin, refused).
          fail(
            new RocketError(
              ErrorCodes.CONNECT_FAILED,
              `cannot connect to ${this.url} (close code ${e.code}${e.reason ? ` "${e.reason}"` : ""}): is the server running, and is the path a hub?`,
              { closeCode: e.code, closeReason: e.reason },
            ),
          );
        }
        this._closed(e.code, e.reason);
      };
      ws.onerror = () => {
        // A close event follows and says more.
      };
    });
  }

  /** Authenticates (when a user is set). Runs right after each greeting. */
  async _startSession() {
    const { user, secret } = this.options;
    if (user !== undefined) {
      await this._request({ authenticate: { user, secret: secret ?? "" } });
    }
  }

  /**
   * The session is ready (first connection or reconnection): subscribe again.
   * @param {boolean} reconnected
   */
  _connected(reconnected) {
    this.state = "connected";
    this._attempt = 0;
    // Subscriptions first: what the app sends on `connected` is answered after them.
    for (const [channel, sub] of this._channels) {
      this._resubscribe(channel, sub);
    }
    this._emit("connected", { token: this.token, reconnected });
  }

  /**
   * @param {string} channel
   * @param {{handlers: Set<(e: ChannelEvent) => void>, offset?: number, epoch?: string, waiting: Array<{resolve: (v: any) => void, reject: (e: Error) => void}>}} sub
   */
  _resubscribe(channel, sub) {
    /** @type {any} */
    const request = { channel };
    const since = sub.offset !== undefined && sub.epoch !== undefined;
    if (since) request.since = { offset: sub.offset, epoch: sub.epoch };
    this._request({ subscribe: request }).then(
      (reply) => {
        const result = this._subscribed(channel, reply, since);
        for (const w of sub.waiting.splice(0)) w.resolve(result);
      },
      (error) => {
        for (const w of sub.waiting.splice(0)) w.reject(error);
        if (this._channels.get(channel) === sub && error.code !== ErrorCodes.CONNECTION_LOST) {
          // The server refused it (e.g. ACCESS_DENIED after a config reload): forget it.
          this._channels.delete(channel);
          this._emit("error", { error, channel });
        }
      },
    );
  }

  /**
   * Handles a `subscribed` reply: baseline offset, recovered events, the recovery event.
   * @param {string} channel
   * @param {any} reply
   * @param {boolean} since whether the request carried `since`
   * @returns {Subscribed}
   */
  _subscribed(channel, reply, since) {
    const sub = this._channels.get(channel);
    /** @type {Subscribed} */
    const result = { channel };
    if (typeof reply.offset === "number") result.offset = reply.offset;
    if (typeof reply.epoch === "string") result.epoch = reply.epoch;
    if (typeof reply.recovered === "boolean") result.recovered = reply.recovered;
    if (!sub) return result;
    if (since && reply.recovered === true) {
      const events = Array.isArray(reply.events) ? reply.events : [];
      for (const event of events) this._deliver({ channel, ...event });
      this._emit("recovery", { channel, recovered: true, missed: events.length });
    } else if (since) {
      // Not recovered (another epoch, history gone) or a hub without History (no answer
      // about recovery at all): events may have been missed, and the app must refetch.
      this._emit("recovery", { channel, recovered: false, missed: null });
    }
    if (result.offset !== undefined && result.epoch !== undefined) {
      if (sub.epoch !== result.epoch || sub.offset === undefined || result.offset > sub.offset) {
        sub.offset = result.offset;
        sub.epoch = result.epoch;
      }
    }
    return result;
  }

  /**
   * The socket closed (any generation check done by the caller).
   * @param {number} code
   * @param {string} reason
   */
  _closed(code, reason) {
    const wasConnected = this.state === "connected";
    const error = new RocketError(
      this.state === "closed" ? ErrorCodes.CLOSED : ErrorCodes.CONNECTION_LOST,
      `the connection closed (code ${code}${reason ? ` "${reason}"` : ""}) before the reply`,
      { closeCode: code, closeReason: reason },
    );
    this._ws = null;
    this.token = null;
    for (const p of this._pending.splice(0)) p.reject(error);
    if (this.state === "closed" || this.state === "connecting") return;
    const willReconnect = this.options.reconnect && comesBack(code, reason);
    if (!willReconnect) {
      this.state = "closed";
      const why = new RocketError(ErrorCodes.CLOSED, `the server closed the connection for good (code ${code}${reason ? ` "${reason}"` : ""})`, {
        closeCode: code,
        closeReason: reason,
      });
      for (const sub of this._channels.values()) for (const w of sub.waiting.splice(0)) w.reject(why);
      this._emit("disconnected", { code, reason, willReconnect: false, error: why });
      return;
    }
    if (wasConnected) this._emit("disconnected", { code, reason, willReconnect: true });
    this._scheduleReconnect();
  }

  _scheduleReconnect() {
    this.state = "reconnecting";
    const { minDelayMs, maxDelayMs, random } = this.options;
    const attempt = ++this._attempt;
    // Exponential, capped, with "equal jitter": between half and all of the step.
    const step = Math.min(maxDelayMs, minDelayMs * 2 ** Math.min(attempt - 1, 30));
    const delayMs = Math.round(step / 2 + (random() * step) / 2);
    this._emit("reconnecting", { attempt, delayMs });
    this._timer = setTimeout(() => {
      this._timer = null;
      if (this.state !== "reconnecting") return;
      this._open().then(
        () => {
          if (this.state === "reconnecting") this._connected(true);
        },
        (error) => {
          if (this.state !== "reconnecting") return;
          const final =
            error.code === ErrorCodes.INVALID_USER || error.code === ErrorCodes.INVALID_CREDENTIALS;
          if (final) {
            // The credentials no longer work: retrying would only count failed attempts.
            this._teardown();
            this.state = "closed";
            for (const sub of this._channels.values()) for (const w of sub.waiting.splice(0)) w.reject(error);
            this._emit("disconnected", { code: 1000, reason: "", willReconnect: false, error });
          } else if (this._ws === null && this.state === "reconnecting" && this._timer === null) {
            // The close handler did not schedule (e.g. the constructor threw): do it here.
            this._scheduleReconnect();
          }
        },
      );
    }, delayMs);
  }

  /** Drops the socket without reconnecting. */
  _teardown() {
    this._generation++;
    this._abortOpen?.(new RocketError(ErrorCodes.CLOSED, "the client was closed while connecting"));
    if (this._timer !== null) clearTimeout(this._timer);
    this._timer = null;
    const ws = this._ws;
    this._ws = null;
    if (ws && ws.readyState <= OPEN) {
      try {
        ws.close(1000);
      } catch {
        // already closing
      }
    }
  }

  /**
   * Closes the connection with 1000 and stops reconnecting. Pending requests are rejected
   * with `CLOSED`.
   */
  close() {
    const was = this.state;
    this.state = "closed";
    this._teardown();
    const error = new RocketError(ErrorCodes.CLOSED, "the client was closed");
    for (const p of this._pending.splice(0)) p.reject(error);
    for (const sub of this._channels.values()) for (const w of sub.waiting.splice(0)) w.reject(error);
    this.token = null;
    if (was !== "closed" && was !== "idle") {
      this._emit("disconnected", { code: 1000, reason: "", willReconnect: false, error });
    }
  }

  // ---- requests -------------------------------------------------------------------------

  /**
   * Sends one request and resolves with its reply's value (rejects with its error).
   * @param {Record<string, any>} request
   * @returns {Promise<any>}
   */
  _request(request) {
    const action = Object.keys(request)[0];
    const reply = REPLY[/** @type {keyof typeof REPLY} */ (action)];
    const ws = this._ws;
    if (!ws || ws.readyState !== OPEN) {
      return Promise.reject(new RocketError(ErrorCodes.NOT_CONNECTED, `cannot send ${action}: not connected`, { request }));
    }
    return new Promise((resolve, reject) => {
      this._pending.push({ reply, request, resolve, reject });
      ws.send(JSON.stringify(request));
    });
  }

  /**
   * An application request: only while connected.
   * @param {Record<string, any>} request
   */
  _appRequest(request) {
    if (this.state !== "connected") {
      const action = Object.keys(request)[0];
      const code = this.state === "closed" ? ErrorCodes.CLOSED : ErrorCodes.NOT_CONNECTED;
      return Promise.reject(new RocketError(code, `cannot send ${action}: the client is ${this.state}`, { request }));
    }
    return this._request(request);
  }

  /**
   * Authenticates again, as `user` (a new session: the server drops the connection's
   * subscriptions, and so does the client). On success reconnections use these credentials.
   * @param {string} user
   * @param {string} [secret]
   * @returns {Promise<string>} the user
   */
  async authenticate(user, secret = "") {
    const request = this._appRequest({ authenticate: { user, secret } });
    if (this.state === "connected") this._channels.clear();
    const result = await request;
    this.options.user = user;
    this.options.secret = secret;
    return result;
  }

  /**
   * Subscribes to `channel` and calls `onEvent` for each broadcast delivered to it. While
   * the client is reconnecting, the subscription is recorded and the promise resolves once
   * it is made on the new connection.
   * @param {string} channel
   * @param {(event: ChannelEvent) => void} [onEvent]
   * @returns {Promise<Subscribed>}
   */
  subscribe(channel, onEvent) {
    if (this.state === "closed" || this.state === "idle") {
      return this._appRequest({ subscribe: { channel } });
    }
    let sub = this._channels.get(channel);
    const isNew = !sub;
    if (!sub) {
      sub = { handlers: new Set(), waiting: [] };
      this._channels.set(channel, sub);
    }
    if (onEvent) sub.handlers.add(onEvent);
    const current = sub;
    if (this.state !== "connected") {
      // Made when the connection is back (see _connected).
      return new Promise((resolve, reject) => current.waiting.push({ resolve, reject }));
    }
    return this._request({ subscribe: { channel } }).then(
      (reply) => this._subscribed(channel, reply, false),
      (error) => {
        if (error.code === ErrorCodes.CONNECTION_LOST && this.state === "reconnecting" && this._channels.get(channel) === current) {
          // Made again when the connection is back.
          return new Promise((resolve, reject) => current.waiting.push({ resolve, reject }));
        }
        if (isNew && this._channels.get(channel) === current) {
          this._channels.delete(channel);
        } else if (onEvent) {
          current.handlers.delete(onEvent);
        }
        throw error;
      },
    );
  }

  /**
   * Unsubscribes from `channel`: its handlers are no longer called.
   * @param {string} channel
   * @returns {Promise<string>} the channel
   */
  async unsubscribe(channel) {
    const sub = this._channels.get(channel);
    this._channels.delete(channel);
    if (sub) {
      const error = new RocketError(ErrorCodes.CLOSED, `unsubscribed from ${channel}`);
      for (const w of sub.waiting.splice(0)) w.reject(error);
    }
    if (this.state === "reconnecting" || this.state === "connecting") {
      return channel; // nothing to undo on the server: it is not subscribed yet
    }
    return this._appRequest({ unsubscribe: { channel } });
  }

  /**
   * Broadcasts `event` with `data` to every subscriber of `channel` (the sender too, if
   * subscribed). Rejects with `INVALID_CHANNEL` when the channel has no subscriber.
   * @param {string} channel
   * @param {string} event
   * @param {any} [data] any JSON value; omitted when undefined
   * @returns {Promise<string>} the channel
   */
  broadcast(channel, event, data) {
    /** @type {any} */
    const body = { event, channel };
    if (data !== undefined) body.data = data;
    return this._appRequest({ broadcast: body });
  }

  /**
   * Sends `event` with `data` to the client whose token is `token`. Rejects with
   * `INVALID_CLIENT` when no such client is connected to the hub.
   * @param {string} token
   * @param {string} event
   * @param {any} [data] any JSON value; omitted when undefined
   * @returns {Promise<string>} the token
   */
  direct(token, event, data) {
    /** @type {any} */
    const body = { event, client: token };
    if (data !== undefined) body.data = data;
    return this._appRequest({ direct: body });
  }

  /**
   * Calls `handler` for each direct message received; returns a function that stops it.
   * @param {(message: DirectMessage) => void} handler
   * @returns {() => void}
   */
  onDirect(handler) {
    this._directHandlers.add(handler);
    return () => this._directHandlers.delete(handler);
  }

  /**
   * The last `limit` broadcasts kept for `channel` (hubs with History; elsewhere the server
   * answers `INVALID_PAYLOAD`).
   * @param {string} channel
   * @param {number} [limit] 0 or absent: everything kept
   * @returns {Promise<{channel: string, offset: number, epoch: string, events: ChannelEvent[]}>}
   */
  history(channel, limit) {
    /** @type {any} */
    const body = { channel };
    if (limit !== undefined) body.limit = limit;
    return this._appRequest({ history: body });
  }

  /**
   * Who is subscribed to `channel`: `{token: {user}}` (hubs with Presence; elsewhere the
   * server answers `INVALID_PAYLOAD`).
   * @param {string} channel
   * @returns {Promise<{channel: string, clients: Record<string, {user: string}>}>}
   */
  presence(channel) {
    return this._appRequest({ presence: { channel } });
  }

  // ---- incoming -------------------------------------------------------------------------

  /** @param {any} text */
  _handleText(text) {
    const message = parse(text);
    if (!message) {
      this._emit("error", { error: new RocketError(ErrorCodes.PROTOCOL_ERROR, `not a JSON object: ${String(text).slice(0, 200)}`) });
      return;
    }
    if (typeof message.event === "string") {
      if (typeof message.channel === "string") {
        this._deliver(message);
      } else {
        /** @type {DirectMessage} */
        const direct = { event: message.event, from: message.from, data: message.data };
        for (const handler of [...this._directHandlers]) callSafely(handler, direct);
      }
      return;
    }
    for (const name of ["join", "leave"]) {
      if (message[name] && typeof message[name] === "object") {
        this._emit(name, message[name]);
        return;
      }
    }
    const key = Object.keys(message).find((k) => REPLY_KEYS.has(k));
    if (key) {
      this._reply(key, message);
    } else {
      this._emit("error", { error: new RocketError(ErrorCodes.PROTOCOL_ERROR, `unexpected message: ${String(text).slice(0, 200)}`) });
    }
  }

  /**
   * Maps a reply to the oldest pending request.
   * @param {string} key the reply's key (`subscribed`, `err`, …)
   * @param {any} message the whole reply
   */
  _reply(key, message) {
    const pending = this._pending.shift();
    if (!pending) {
      this._emit("error", { error: new RocketError(ErrorCodes.PROTOCOL_ERROR, `a reply with no request: ${key}`) });
      return;
    }
    const action = Object.keys(pending.request)[0];
    if (key === "err") {
      const what = JSON.stringify(/** @type {any} */ (pending.request)[action]);
      pending.reject(new RocketError(String(message.err), `the server refused ${action} ${what}`, { request: pending.request }));
    } else if (key !== pending.reply) {
      pending.reject(new RocketError(ErrorCodes.PROTOCOL_ERROR, `expected a ${pending.reply} reply to ${action}, got ${key}`));
    } else if (key === "subscribed") {
      // Its other fields (offset, epoch, recovered, events) sit beside it.
      pending.resolve(message);
    } else {
      pending.resolve(message[key]);
    }
  }

  /**
   * A broadcast delivery: update the channel's offset and call its handlers.
   * @param {any} message
   */
  _deliver(message) {
    const sub = this._channels.get(message.channel);
    if (!sub) return; // unsubscribed meanwhile
    if (typeof message.offset === "number" && typeof message.epoch === "string") {
      if (sub.epoch === message.epoch && sub.offset !== undefined && message.offset <= sub.offset) {
        return; // already seen (e.g. both recovered and live): at most once
      }
      sub.offset = message.offset;
      sub.epoch = message.epoch;
    }
    /** @type {ChannelEvent} */
    const event = { event: message.event, channel: message.channel, data: message.data };
    if (message.offset !== undefined) event.offset = message.offset;
    if (message.epoch !== undefined) event.epoch = message.epoch;
    for (const handler of [...sub.handlers]) callSafely(handler, event);
  }
}

/**
 * Whether a close with `code` and `reason` may be followed by a reconnect.
 * @param {number} code
 * @param {string} reason
 */
export function comesBack(code, reason) {
  if (code === 1000) return false; // the client's own close, or after {"disconnect":true}
  if (code === 1008) {
    // Policy: a slow consumer or a stalled write may come back; too many failed
    // authentications (or any other policy) may not.
    return /slow consumer|write timeout/i.test(reason ?? "");
  }
  return true;
}

/**
 * @param {any} text
 * @returns {any} the JSON object, or null
 */
function parse(text) {
  if (typeof text !== "string") return null;
  try {
    const value = JSON.parse(text);
    return value !== null && typeof value === "object" && !Array.isArray(value) ? value : null;
  } catch {
    return null;
  }
}

/**
 * Calls an application handler; what it throws does not break the client.
 * @template T
 * @param {(v: T) => void} handler
 * @param {T} value
 */
function callSafely(handler, value) {
  try {
    handler(value);
  } catch (e) {
    queueMicrotask(() => {
      throw e;
    });
  }
}

export default Rocket;
