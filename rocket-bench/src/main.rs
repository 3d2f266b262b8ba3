//! `rocket-bench`: a lean load generator for Rocket servers (or any server speaking the
//! same protocol subset), the "physical ceiling" server, and the report writer.
//!
//! ```text
//! rocket-bench run --url ws://127.0.0.1:9772/echo --subscribers 1000 --server-pid PID
//! rocket-bench run --mode idle --subscribers 10000 --server-pid PID
//! rocket-bench run --url ws://127.0.0.1:9781/bench --server-pid P1 \
//!     --url ws://127.0.0.1:9782/bench --server-pid P2 --backplane-pid REDIS_PID
//! rocket-bench cert --out target/bench-tls
//! rocket-bench run --url wss://127.0.0.1:9773/echo --ca target/bench-tls/cert.pem
//! rocket-bench ceiling --listen 127.0.0.1:9800
//! rocket-bench report --results target/bench --out docs
//! ```
//!
//! Subscribers live in worker processes (this binary re-executed with `worker`), each
//! with edge-triggered mio loops over raw sockets and a zero-copy frame parser, so the
//! generator costs about a microsecond or two of CPU per delivery and leaves the cores to
//! the server. Publishers stamp each message with their id, a per-channel sequence number
//! and the send time; subscribers check the sequences (lost, duplicated, reordered) and
//! record the latency in an HDR histogram.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod ceiling;
mod churn;
mod conn;
mod frame;
mod handshake;
mod message;
mod plot;
mod procfs;
mod publisher;
mod report;
mod result;
mod run;
mod soak;
mod stats;
mod subscriber;
mod tls;

use clap::{Parser, Subcommand};

/// Load generator and benchmark tools for Rocket servers.
#[derive(Debug, Parser)]
#[command(name = "rocket-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run a scenario against a server and print (and optionally save) its figures.
    Run(Box<run::RunArgs>),
    /// Serve the trivial "physical ceiling" server (pre-framed fan-out, no JSON, no engine).
    Ceiling(ceiling::CeilingArgs),
    /// Write docs/BENCHMARKS.md and its plots from the JSON results of `bench.sh`.
    Report(report::ReportArgs),
    /// Write a self-signed certificate and key (cert.pem, key.pem) for a `wss://` server.
    Cert(tls::CertArgs),
    /// Internal: a subscriber worker process, started by `run`.
    #[command(hide = true)]
    Worker {
        /// The worker's spec, as JSON.
        spec: String,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Run(args) => run::run(&args).and_then(|r| {
            print!("{}", r.table());
            if let Some(path) = &args.json {
                let json = r.to_json()?;
                std::fs::write(path, json).map_err(|e| format!("{}: {e}", path.display()))?;
            }
            Ok(())
        }),
        Cmd::Ceiling(args) => ceiling::serve(&args).map_err(|e| e.to_string()),
        Cmd::Report(args) => report::write(&args),
        Cmd::Cert(args) => tls::write_self_signed(&args),
        Cmd::Worker { spec } => subscriber::run_worker(&spec),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rocket-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
