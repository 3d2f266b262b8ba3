// Test helpers: a real rocket-cli process on a free loopback port, and a WebSocket class.
//
// The binary is $ROCKET_CLI when set, else target/debug/rocket-cli of this repository,
// built with `cargo build -p rocket-cli` first (a no-op when it is up to date).

import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, writeFileSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");

/** Where tests leave artifacts (screenshots, server logs): ignored by git. */
export const artifacts = process.env.ROCKET_ARTIFACTS ?? join(repoRoot, "target", "js-tests");
mkdirSync(artifacts, { recursive: true });

/**
 * The WebSocket class for the client: the global one (Node ≥ 22), else the `ws` package
 * (a devDependency, for Node 20).
 */
export const WebSocket = globalThis.WebSocket ?? (await importWs());

async function importWs() {
  try {
    return (await import("ws")).WebSocket;
  } catch {
    throw new Error(
      "this Node has no global WebSocket and the ws package is missing: run `npm ci` in clients/js (or use Node ≥ 22)",
    );
  }
}

let built = null;

/** The rocket-cli binary, built once per test process. */
export function rocketCli() {
  if (process.env.ROCKET_CLI) return process.env.ROCKET_CLI;
  if (!built) {
    try {
      execFileSync("cargo", ["build", "--quiet", "-p", "rocket-cli"], {
        cwd: repoRoot,
        stdio: ["ignore", "inherit", "inherit"],
      });
    } catch (e) {
      throw new Error(`cannot build rocket-cli with cargo (${e.message}); install Rust or set ROCKET_CLI to a built binary`);
    }
    built = join(repoRoot, "target", "debug", "rocket-cli");
  }
  return built;
}

/** A config with the demo's hub (/echo) and users, plus `limits`. */
export function config(limits = {}) {
  return {
    Host: "127.0.0.1",
    Port: 0,
    Hubs: [
      {
        Path: "/echo",
        Users: {
          backend: { Name: "backend", Secret: "secret", Permission: 7 },
          frontend: { Name: "frontend", Secret: "", Permission: 3 },
          reader: { Name: "reader", Secret: "r", Permission: 1 },
        },
      },
    ],
    Limits: limits,
  };
}

/**
 * Starts rocket-cli and waits for its listening line.
 * @param {{config?: object, demo?: boolean, port?: number, name?: string}} [options]
 */
export async function startServer(options = {}) {
  const dir = mkdtempSync(join(tmpdir(), "rocket-js-"));
  const configPath = join(dir, "config.json");
  writeFileSync(configPath, JSON.stringify(options.config ?? config()));
  const server = {
    port: options.port ?? 0,
    process: null,
    log: "",
    /** ws://127.0.0.1:PORT/echo */
    url: (hub = "/echo") => `ws://127.0.0.1:${server.port}${hub}`,
    /** http://127.0.0.1:PORT */
    http: () => `http://127.0.0.1:${server.port}`,
    start: async () => {
      const args = [configPath, "--host", "127.0.0.1", "--port", String(server.port), "--log-level", "info"];
      if (options.demo) args.push("--demo");
      // The port may still be held for a moment after a restart: try a few times.
      for (let attempt = 0; ; attempt++) {
        try {
          server.port = await launch(server, args);
          return server;
        } catch (e) {
          if (attempt >= 20 || !/Address already in use/.test(String(e.message))) throw e;
          await sleep(100);
        }
      }
    },
    /** SIGTERM, then wait for the exit (the server closes clients with 1001). */
    stop: async () => {
      const child = server.process;
      server.process = null;
      if (!child || child.exitCode !== null) return;
      const exited = new Promise((r) => child.once("exit", r));
      child.kill("SIGTERM");
      const timeout = setTimeout(() => child.kill("SIGKILL"), 8000);
      await exited;
      clearTimeout(timeout);
    },
    restart: async () => {
      await server.stop();
      return server.start();
    },
  };
  await server.start();
  return server;
}

function launch(server, args) {
  return new Promise((resolvePort, reject) => {
    const child = spawn(rocketCli(), args, { stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, RUST_LOG: "" } });
    server.process = child;
    let buffered = "";
    const timer = setTimeout(() => reject(new Error(`rocket-cli did not start within 20 s:\n${buffered}`)), 20000);
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (chunk) => {
      buffered += chunk;
      server.log += chunk;
      const m = /listening on wss?:\/\/[^\s]*:(\d+)/.exec(buffered);
      if (m) {
        clearTimeout(timer);
        resolvePort(Number(m[1]));
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`rocket-cli exited with ${code}:\n${buffered}`));
    });
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Waits until `check()` returns a truthy value (polled), or fails with `what`.
 * @template T
 * @param {() => T | Promise<T>} check
 * @param {string} what
 * @param {number} [timeoutMs]
 * @returns {Promise<T>}
 */
export async function until(check, what, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}

/**
 * Resolves with the next `name` event of `rocket` (its detail).
 * @param {import("../rocket.js").Rocket} rocket
 * @param {string} name
 * @param {(detail: any) => boolean} [filter]
 */
export function next(rocket, name, filter = () => true, timeoutMs = 10000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no ${name} event within ${timeoutMs} ms`));
    }, timeoutMs);
    const off = rocket.on(name, (detail) => {
      if (!filter(detail)) return;
      clearTimeout(timer);
      off();
      resolve(detail);
    });
  });
}
