// A scripted in-process stand-in for a Rocket server, for what rocket-cli cannot be made to
// do on demand (History replies, a close with a chosen code). Its WebSocket class is given
// to the client as `options.WebSocket`.

/** A scripted server: each socket it accepts answers requests through `reply`. */
export class FakeServer {
  constructor(reply) {
    this.reply = reply;
    /** @type {FakeSocket[]} */
    this.sockets = [];
    /** Every request, as `[socket number, request]`. */
    this.requests = [];
    const server = this;
    this.WebSocket = class extends FakeSocket {
      constructor(url) {
        super(url, server);
      }
    };
  }

  get last() {
    return this.sockets[this.sockets.length - 1];
  }
}

export class FakeSocket {
  constructor(url, server) {
    this.url = url;
    this.server = server;
    this.readyState = 0;
    this.number = server.sockets.push(this);
    setTimeout(() => {
      this.readyState = 1;
      this.push({ connected: String(this.number).padStart(32, "0") });
    }, 1);
  }

  send(text) {
    const request = JSON.parse(text);
    this.server.requests.push([this.number, request]);
    const reply = this.server.reply(request, this);
    if (reply !== undefined) setTimeout(() => this.push(reply), 1);
  }

  /** The server sends `message`. */
  push(message) {
    if (this.readyState === 1) this.onmessage?.({ data: JSON.stringify(message) });
  }

  /** The server closes the connection. */
  drop(code = 1001, reason = "server shutting down") {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }

  close(code = 1005) {
    if (this.readyState === 3) return;
    this.readyState = 3;
    setTimeout(() => this.onclose?.({ code, reason: "" }), 1);
  }
}
