//! The command line: `rocket-cli [FLAGS] [CONFIG]`.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Rocket: a real-time WebSocket pub/sub server.
///
/// Serves the hubs of CONFIG (the original Rocket `example.json` format). Without CONFIG it
/// serves a built-in demo config: hub /echo with the users of example.json. Flags override
/// the file.
#[derive(Debug, Parser)]
#[command(
    name = "rocket-cli",
    version,
    about,
    long_about,
    args_conflicts_with_subcommands = true
)]
pub struct Args {
    /// A task other than serving.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// JSON config file; without it, the built-in demo config is served.
    #[arg(value_name = "CONFIG")]
    pub config: Option<PathBuf>,

    /// Host name or address to listen on; overrides `Host` [default: localhost].
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,

    /// TCP port to listen on, 0 for any free one; overrides `Port` [default: 9772].
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,

    /// Join a cluster through the Redis at URL (e.g. redis://127.0.0.1:6379/0): nodes
    /// sharing one Redis act as one server; overrides `Cluster.Redis`.
    #[arg(long, value_name = "URL")]
    pub redis: Option<String>,

    /// PEM certificate chain: serve wss://; overrides `TLSCertFile` (needs a key too).
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for the certificate; overrides `TLSKeyFile`.
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// Append logs to FILE; overrides `Log` [default: standard error].
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,

    /// Log filter, e.g. `debug` or `info,rocket_server=debug` [default: RUST_LOG, else info].
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,

    /// Serve the demo page (a chat and who-is-here page using the JavaScript client) at
    /// GET /demo/ on the server's port; no hub path may then lie under /demo.
    #[arg(long)]
    pub demo: bool,

    /// Async runtime to serve with. Besides tokio, prefer smol: async-std is discontinued
    /// upstream (RUSTSEC-2025-0052) and kept only for those who ask for it.
    #[arg(long, value_enum, value_name = "RUNTIME", default_value_t = Runtime::Tokio)]
    pub runtime: Runtime,
}

/// Tasks other than serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Print an argon2 PHC hash of a secret, for a user's `Secret` in the config. On a
    /// terminal the secret is typed twice and not shown; otherwise it is the first line of
    /// standard input.
    HashSecret,
}

/// The async runtimes `--runtime` can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Runtime {
    /// tokio (rocket-tokio).
    Tokio,
    /// smol (rocket-async-std's adapter on smol's executor): the recommended non-tokio
    /// runtime.
    Smol,
    /// async-std (rocket-async-std). Discontinued upstream (RUSTSEC-2025-0052): prefer smol.
    AsyncStd,
}

impl Runtime {
    /// The name `--runtime` takes.
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Tokio => "tokio",
            Runtime::Smol => "smol",
            Runtime::AsyncStd => "async-std",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn flags_parse() {
        let args = Args::try_parse_from([
            "rocket-cli",
            "--port",
            "0",
            "--runtime",
            "async-std",
            "--demo",
            "my.json",
        ])
        .unwrap();
        assert!(args.demo);
        assert_eq!(args.port, Some(0));
        assert_eq!(args.runtime, Runtime::AsyncStd);
        assert_eq!(args.config, Some(PathBuf::from("my.json")));
        let args = Args::try_parse_from(["rocket-cli", "--runtime", "smol"]).unwrap();
        assert_eq!(args.runtime, Runtime::Smol);
        assert!(Args::try_parse_from(["rocket-cli", "--runtime", "node"]).is_err());
        assert!(Args::try_parse_from(["rocket-cli", "--port", "65536"]).is_err());
        let args = Args::try_parse_from(["rocket-cli", "hash-secret"]).unwrap();
        assert_eq!(args.command, Some(Command::HashSecret));
        assert_eq!(args.config, None);
    }
}
