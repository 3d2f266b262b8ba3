//! Where the configuration comes from: the file named on the command line (or the built-in
//! demo), with the command-line flags laid over it.

use std::fmt;
use std::path::{Path, PathBuf};

use rocket_server::{ClusterConfig, Config};

use crate::args::Args;
use crate::error::Error;

/// The configuration to serve and where it came from.
#[derive(Debug)]
pub struct Loaded {
    /// The validated configuration, flags applied.
    pub config: Config,
    /// Where it was read from.
    pub source: Source,
}

/// Where a configuration was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A file named on the command line.
    File(PathBuf),
    /// [`Config::demo`]: no file was given.
    Demo,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(path) => write!(f, "{}", path.display()),
            Source::Demo => f.write_str("the built-in demo config"),
        }
    }
}

/// Reads the config file named in `args` (or takes the demo), then applies the flags.
pub fn load(args: &Args) -> Result<Loaded, Error> {
    let (config, source) = match &args.config {
        Some(path) => (read_file(path)?, Source::File(path.clone())),
        None => (Config::demo(), Source::Demo),
    };
    let config = apply_flags(config, args)?;
    Ok(Loaded { config, source })
}

/// How a user's `Secret` is stored, for the startup warnings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    /// Empty: the user accepts any secret.
    Empty,
    /// Plain text in the config file.
    Plain,
    /// An argon2 PHC hash.
    Hashed,
}

/// Every `(hub path, user name, kind of secret)`.
pub fn secrets(config: &Config) -> impl Iterator<Item = (&str, &str, SecretKind)> {
    config.hubs.iter().flat_map(|hub| {
        hub.users.values().map(move |user| {
            let kind = if user.secret.is_empty() {
                SecretKind::Empty
            } else if rocket_proto::is_phc(&user.secret) {
                SecretKind::Hashed
            } else {
                SecretKind::Plain
            };
            (hub.path.as_str(), user.name.as_str(), kind)
        })
    })
}

fn read_file(path: &Path) -> Result<Config, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::ReadConfig {
        path: path.to_owned(),
        source,
    })?;
    Config::from_json(&text).map_err(|source| Error::Config {
        path: path.to_owned(),
        source,
    })
}

/// Lays `--host`, `--port`, `--redis`, `--tls-cert`, `--tls-key` and `--log` over the config and
/// validates the result again (e.g. a certificate needs a key).
fn apply_flags(mut config: Config, args: &Args) -> Result<Config, Error> {
    if let Some(host) = &args.host {
        config.host.clone_from(host);
    }
    if let Some(port) = args.port {
        config.port = port;
    }
    if let Some(cert) = &args.tls_cert {
        config.tls_cert_file = cert.to_string_lossy().into_owned();
    }
    if let Some(key) = &args.tls_key {
        config.tls_key_file = key.to_string_lossy().into_owned();
    }
    if let Some(log) = &args.log {
        config.log = log.to_string_lossy().into_owned();
    }
    if let Some(url) = &args.redis {
        match &mut config.cluster {
            Some(cluster) => cluster.redis.clone_from(url),
            None => config.cluster = Some(ClusterConfig::new(url.as_str()).map_err(Error::Flags)?),
        }
    }
    config.validate().map_err(Error::Flags)?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(argv: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("rocket-cli").chain(argv.iter().copied())).unwrap()
    }

    #[test]
    fn demo_by_default_and_flags_override() {
        let loaded = load(&args(&[])).unwrap();
        assert_eq!(loaded.source, Source::Demo);
        assert_eq!(
            (loaded.config.host.as_str(), loaded.config.port),
            ("localhost", 9772)
        );
        assert_eq!(loaded.config.hubs, Config::demo().hubs);

        let loaded = load(&args(&[
            "--host", "0.0.0.0", "--port", "0", "--log", "r.log",
        ]))
        .unwrap();
        assert_eq!(
            (loaded.config.host.as_str(), loaded.config.port),
            ("0.0.0.0", 0)
        );
        assert_eq!(loaded.config.log, "r.log");
    }

    #[test]
    fn classifies_secrets() {
        let mut config = Config::demo();
        let phc = rocket_server::hash_secret("s").unwrap();
        let user = r#"{"Name":"h","Permission":1,"Secret":"PHC"}"#.replace("PHC", &phc);
        config.hubs[0]
            .users
            .insert("h".into(), serde_json_user(&user));
        let kinds: Vec<_> = secrets(&config).collect();
        assert_eq!(
            kinds,
            [
                ("/echo", "backend", SecretKind::Plain),
                ("/echo", "frontend", SecretKind::Empty),
                ("/echo", "h", SecretKind::Hashed),
            ]
        );
    }

    fn serde_json_user(json: &str) -> rocket_proto::UserConfig {
        let text = format!(r#"{{"Hubs":[{{"Path":"/x","Users":{{"h":{json}}}}}]}}"#);
        Config::from_json(&text).unwrap().hubs[0].users["h"].clone()
    }

    #[test]
    fn flags_are_validated() {
        let e = load(&args(&["--tls-cert", "c.pem"]))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("command-line flags: invalid config: TLSKeyFile"),
            "{e}"
        );
        let e = load(&args(&["--host", " "])).unwrap_err().to_string();
        assert!(e.contains("Host: must not be empty"), "{e}");
    }

    #[test]
    fn file_errors_name_the_file() {
        let e = load(&args(&["no/such/file.json"])).unwrap_err().to_string();
        assert!(
            e.starts_with("no/such/file.json: cannot read the config file: "),
            "{e}"
        );
    }
}
