//! The server's configuration: the original Rocket `example.json` format, extended with
//! `Limits` and per-hub `AllowedOrigins`.
//!
//! [`Config::from_json`] parses *and* validates; a [`Config`] that exists is a valid one.
//! Deployment settings (address, TLS, log, hub paths, transport limits) stay here; each
//! hub's engine gets what it uses as a [`rocket_proto::EngineConfig`]
//! ([`Config::engine_config`]).
//!
//! ```
//! let config = rocket_server::Config::from_json(r#"{
//!     "Host": "localhost", "Port": 9772,
//!     "Hubs": [{ "Path": "/echo", "Codec": "JSON",
//!                "Users": { "backend": { "Name": "backend", "Secret": "s", "Permission": 7 } } }]
//! }"#).unwrap();
//! assert_eq!(config.hubs[0].path, "/echo");
//! assert_eq!(config.limits.max_message_bytes, 65536);
//! ```

use std::collections::{BTreeMap, HashSet};

use rocket_proto::config::parse_json;
use rocket_proto::{ConfigError, EngineConfig, EngineLimits, HistoryConfig, UserConfig};
use serde::Deserialize;

/// Default TCP port, as in the original Rocket.
pub const DEFAULT_PORT: u16 = 9772;
/// Default listen host, as in the original Rocket.
pub const DEFAULT_HOST: &str = "localhost";

/// A complete, validated server configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// Host name or address to listen on (`Host`, default `localhost`).
    #[serde(rename = "Host", default = "default_host")]
    pub host: String,
    /// TCP port to listen on (`Port`, default 9772; 0 picks a free port).
    #[serde(rename = "Port", default = "default_port")]
    pub port: u16,
    /// PEM certificate chain for `wss://` (`TLSCertFile`); empty means plain `ws://`.
    #[serde(rename = "TLSCertFile", default)]
    pub tls_cert_file: String,
    /// PEM private key for `wss://` (`TLSKeyFile`); set together with the certificate.
    #[serde(rename = "TLSKeyFile", default)]
    pub tls_key_file: String,
    /// Log file (`Log`); empty means standard error.
    #[serde(rename = "Log", default)]
    pub log: String,
    /// The hubs served, each on its own request path (`Hubs`).
    #[serde(rename = "Hubs")]
    pub hubs: Vec<HubConfig>,
    /// Resource limits (`Limits`); every field is optional.
    #[serde(rename = "Limits", default)]
    pub limits: Limits,
    /// Bearer token that `GET /metrics` requires (`MetricsToken`); empty: no token.
    #[serde(rename = "MetricsToken", default)]
    pub metrics_token: String,
    /// Several nodes sharing one Redis act as one server (`Cluster`); `None`: a single
    /// node, with no Redis code on any path.
    #[serde(rename = "Cluster", default)]
    pub cluster: Option<ClusterConfig>,
}

/// The cluster backplane (`"Cluster": {"Redis": "redis://127.0.0.1:6379/0", "Prefix":
/// "rocket"}`): every node of a cluster names the same Redis and prefix.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ClusterConfig {
    /// The Redis server's URL (`Redis`), e.g. `redis://127.0.0.1:6379/0` (`redis://:password@host:port/db`
    /// with a password; `unix:///path` for a socket).
    #[serde(rename = "Redis")]
    pub redis: String,
    /// What every Redis channel name of this cluster starts with (`Prefix`, default
    /// `rocket`): clusters sharing one Redis need different prefixes.
    #[serde(rename = "Prefix", default = "default_prefix")]
    pub prefix: String,
}

impl ClusterConfig {
    /// A cluster on the Redis at `url`, with the default prefix; validated.
    pub fn new(url: impl Into<String>) -> Result<Self, ConfigError> {
        let config = Self {
            redis: url.into(),
            prefix: default_prefix(),
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if let Err(e) = redis::Client::open(self.redis.as_str()) {
            return Err(ConfigError::invalid(
                "Cluster.Redis",
                format!(
                    "{:?} is not a Redis URL like \"redis://127.0.0.1:6379/0\": {e}",
                    self.redis
                ),
            ));
        }
        if self.prefix.is_empty() {
            return Err(ConfigError::invalid("Cluster.Prefix", "must not be empty"));
        }
        Ok(())
    }
}

fn default_prefix() -> String {
    "rocket".to_owned()
}

/// One hub: a request path with its own users, channels and clients.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct HubConfig {
    /// The exact request path that selects this hub, e.g. `/echo` (`Path`).
    #[serde(rename = "Path")]
    pub path: String,
    /// Wire codec (`Codec`); only `"JSON"` exists.
    #[serde(rename = "Codec", default = "default_codec")]
    pub codec: String,
    /// Users by name (`Users`).
    #[serde(rename = "Users", default)]
    pub users: BTreeMap<String, UserConfig>,
    /// Browser origins allowed to connect (`AllowedOrigins`). `None`: any origin.
    /// `Some(list)`: a handshake carrying an `Origin` header not in the list is refused with
    /// HTTP 403; handshakes without `Origin` (non-browser clients) are allowed. Entries and
    /// headers are compared as browsers serialise origins: scheme and host in lower case,
    /// the scheme's default port left out (validation stores entries that way).
    #[serde(rename = "AllowedOrigins", default)]
    pub allowed_origins: Option<Vec<String>>,
    /// Channel history with offsets and recovery (`History`: `{"Size": N, "TtlMs": T}`, both
    /// at least 1); `None` (the default): no history, no offsets.
    #[serde(rename = "History", default)]
    pub history: Option<HistoryConfig>,
    /// Answer `presence` requests (`Presence`, default `false`).
    #[serde(rename = "Presence", default)]
    pub presence: bool,
    /// Send `join`/`leave` to a channel's subscribers (`JoinLeave`, default `false`).
    #[serde(rename = "JoinLeave", default)]
    pub join_leave: bool,
}

/// Resource limits, the engine's and the transport's. In JSON:
/// `"Limits": { "MaxMessageBytes": 65536, … }`; every field is optional and 0 means
/// "no limit" for counts.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct Limits {
    /// Largest accepted message in bytes (`MaxMessageBytes`, 65536); larger: close 1009.
    #[serde(rename = "MaxMessageBytes")]
    pub max_message_bytes: usize,
    /// Most WebSocket connections at once (`MaxConnections`, 10000); more: HTTP 503.
    #[serde(rename = "MaxConnections")]
    pub max_connections: usize,
    /// Most connections from one IP address (`MaxConnectionsPerIp`, 0 = no limit).
    #[serde(rename = "MaxConnectionsPerIp")]
    pub max_connections_per_ip: usize,
    /// Outbound queue length per connection (`SendQueueMessages`, 1024); a client whose queue
    /// is full is a slow consumer and is closed with 1008.
    #[serde(rename = "SendQueueMessages")]
    pub send_queue_messages: usize,
    /// Queued message bytes per connection (`SendQueueBytes`, 1048576); more is a slow
    /// consumer, closed with 1008. Bytes already handed to the socket do not count, and one
    /// message is always accepted into an empty queue.
    #[serde(rename = "SendQueueBytes")]
    pub send_queue_bytes: usize,
    /// A write that makes no progress this long drops the connection (`WriteTimeoutMs`,
    /// 10000), e.g. a client that stopped reading.
    #[serde(rename = "WriteTimeoutMs")]
    pub write_timeout_ms: u64,
    /// Time to finish the WebSocket upgrade (`HandshakeTimeoutMs`, 10000).
    #[serde(rename = "HandshakeTimeoutMs")]
    pub handshake_timeout_ms: u64,
    /// Interval between server pings (`PingIntervalMs`, 30000; 0 = never ping).
    #[serde(rename = "PingIntervalMs")]
    pub ping_interval_ms: u64,
    /// A client silent this long is closed with 1001 (`IdleTimeoutMs`, 90000; 0 = never).
    #[serde(rename = "IdleTimeoutMs")]
    pub idle_timeout_ms: u64,
    /// Most channels one client may subscribe to (`MaxSubscriptionsPerClient`, 1024).
    #[serde(rename = "MaxSubscriptionsPerClient")]
    pub max_subscriptions_per_client: usize,
    /// Failed authentications after which a connection is closed with 1008
    /// (`MaxFailedAuth`, 5).
    #[serde(rename = "MaxFailedAuth")]
    pub max_failed_auth: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: 65536,
            max_connections: 10_000,
            max_connections_per_ip: 0,
            send_queue_messages: 1024,
            send_queue_bytes: 1024 * 1024,
            write_timeout_ms: 10_000,
            handshake_timeout_ms: 10_000,
            ping_interval_ms: 30_000,
            idle_timeout_ms: 90_000,
            max_subscriptions_per_client: 1024,
            max_failed_auth: 5,
        }
    }
}

impl Limits {
    /// The limits the engine enforces.
    pub fn engine(&self) -> EngineLimits {
        EngineLimits::default()
            .with_max_subscriptions_per_client(self.max_subscriptions_per_client)
            .with_max_failed_auth(self.max_failed_auth)
    }
}

impl Config {
    /// Parses and validates a configuration from its JSON text.
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        let mut config: Config = parse_json(text)?;
        config.validate()?;
        Ok(config)
    }

    /// A small built-in configuration for trying Rocket out: hub `/echo` with the original
    /// example's users (`backend`/`secret` with all permissions, `frontend` with any secret
    /// and READ|WRITE), on `localhost:9772`.
    pub fn demo() -> Self {
        Self::from_json(DEMO_CONFIG).expect("the built-in demo config is valid")
    }

    /// The engine settings of `hub`: its users, the engine's limits, and the hub's
    /// `History`, `Presence` and `JoinLeave`.
    pub fn engine_config(&self, hub: &HubConfig) -> EngineConfig {
        let mut config = EngineConfig::new(hub.users.clone(), self.limits.engine())
            .and_then(|c| c.with_history(hub.history))
            .expect("a validated config's hubs are valid")
            .with_presence(hub.presence, hub.join_leave);
        config.cluster = self.cluster.is_some();
        config
    }

    /// Checks every rule the JSON shape cannot express. Called by [`Config::from_json`];
    /// call it again after changing fields by hand.
    pub fn validate(&mut self) -> Result<(), ConfigError> {
        if self.host.trim().is_empty() {
            return Err(ConfigError::invalid("Host", "must not be empty"));
        }
        if self.tls_cert_file.is_empty() != self.tls_key_file.is_empty() {
            return Err(ConfigError::invalid(
                if self.tls_cert_file.is_empty() {
                    "TLSCertFile"
                } else {
                    "TLSKeyFile"
                },
                "TLSCertFile and TLSKeyFile must be set together",
            ));
        }
        if self.hubs.is_empty() {
            return Err(ConfigError::invalid("Hubs", "at least one hub is required"));
        }
        if let Some(cluster) = &self.cluster {
            cluster.validate()?;
        }
        let mut paths = HashSet::new();
        for (i, hub) in self.hubs.iter_mut().enumerate() {
            let at = |key: &str| format!("Hubs[{i}].{key}");
            validate_path(&hub.path).map_err(|reason| ConfigError::invalid(at("Path"), reason))?;
            if !paths.insert(hub.path.clone()) {
                return Err(ConfigError::invalid(
                    at("Path"),
                    format!("duplicate hub path {:?}", hub.path),
                ));
            }
            if hub.codec != "JSON" {
                return Err(ConfigError::invalid(
                    at("Codec"),
                    format!(
                        "unsupported codec {:?} (the only codec is \"JSON\")",
                        hub.codec
                    ),
                ));
            }
            // The engine checks its users (names, PHC shape) and fills in missing names;
            // the server parses PHC hashes fully, so a hash it cannot verify never loads.
            let mut engine =
                EngineConfig::new(std::mem::take(&mut hub.users), EngineLimits::default())
                    .and_then(|c| c.with_history(hub.history))
                    .map_err(|e| e.within(&format!("Hubs[{i}]")))?
                    .with_presence(hub.presence, hub.join_leave);
            engine.cluster = self.cluster.is_some();
            engine
                .validate()
                .map_err(|e| e.within(&format!("Hubs[{i}]")))?;
            hub.users = engine.users;
            for (key, user) in &hub.users {
                if rocket_proto::is_phc(&user.secret) {
                    crate::secrets::check_phc(&user.secret).map_err(|reason| {
                        ConfigError::invalid(
                            at(&format!("Users.{key}.Secret")),
                            format!("the secret of user {key:?} on hub {:?} {reason}", hub.path),
                        )
                    })?;
                }
            }
            if let Some(origins) = &mut hub.allowed_origins {
                for origin in origins.iter_mut() {
                    *origin = crate::origin::normalize_allowed(origin)
                        .map_err(|reason| ConfigError::invalid(at("AllowedOrigins"), reason))?;
                }
            }
        }
        let l = &self.limits;
        for (key, value) in [
            ("MaxMessageBytes", l.max_message_bytes as u64),
            ("SendQueueMessages", l.send_queue_messages as u64),
            ("SendQueueBytes", l.send_queue_bytes as u64),
            ("WriteTimeoutMs", l.write_timeout_ms),
            ("HandshakeTimeoutMs", l.handshake_timeout_ms),
        ] {
            if value == 0 {
                return Err(ConfigError::invalid(
                    format!("Limits.{key}"),
                    "must be at least 1",
                ));
            }
        }
        if l.idle_timeout_ms != 0 && l.ping_interval_ms > l.idle_timeout_ms {
            return Err(ConfigError::invalid(
                "Limits.PingIntervalMs",
                "must not exceed IdleTimeoutMs, or idle clients that answer pings are closed",
            ));
        }
        Ok(())
    }

    /// The hub served on `path`, if any (exact match; a query string must already be removed).
    pub fn hub(&self, path: &str) -> Option<&HubConfig> {
        self.hubs.iter().find(|h| h.path == path)
    }
}

/// The text of [`Config::demo`].
pub const DEMO_CONFIG: &str = r#"{
    "Host": "localhost",
    "Port": 9772,
    "Hubs": [{
        "Path": "/echo",
        "Codec": "JSON",
        "Users": {
            "backend": { "Name": "backend", "Secret": "secret", "Permission": 7 },
            "frontend": { "Name": "frontend", "Secret": "", "Permission": 3 }
        }
    }]
}"#;

/// Paths the server answers over plain HTTP; no hub may use them (nor any path under `/api/`).
pub const RESERVED_PATHS: &[&str] = &["/health", "/ready", "/metrics", "/api"];

/// Checks a hub path as the config does (`Hubs[].Path`): starts with `/`, printable ASCII,
/// no empty, `.` or `..` segment, not one of the HTTP endpoints ([`RESERVED_PATHS`], or
/// under `/api/`). The error says what is wrong.
pub fn validate_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("{path:?} must start with '/'"));
    }
    if RESERVED_PATHS.contains(&path) || path.starts_with("/api/") {
        return Err(format!(
            "{path:?} is reserved for the HTTP endpoints (/health, /ready, /metrics, /api/...)"
        ));
    }
    if path.len() > 1024 {
        return Err("must be at most 1024 bytes".into());
    }
    if let Some(c) = path
        .chars()
        .find(|c| !c.is_ascii_graphic() || matches!(c, '?' | '#' | '%' | '\\'))
    {
        return Err(format!(
            "{path:?} contains {c:?}; a hub path is printable ASCII without '?', '#', '%' or '\\'"
        ));
    }
    if path.contains("//") || path.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(format!("{path:?} has an empty, '.' or '..' segment"));
    }
    Ok(())
}

fn default_host() -> String {
    DEFAULT_HOST.to_owned()
}
fn default_port() -> u16 {
    DEFAULT_PORT
}
fn default_codec() -> String {
    "JSON".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rocket_proto::{Permissions, is_phc};

    const EXAMPLE: &str = include_str!("../../example.json");

    fn err(text: &str) -> String {
        Config::from_json(text).unwrap_err().to_string()
    }

    #[test]
    fn a_cluster_needs_a_redis_url_and_names_its_keys() {
        let hubs = r#""Hubs":[{"Path":"/echo"}]"#;
        let config = Config::from_json(&format!(
            r#"{{{hubs},"Cluster":{{"Redis":"redis://127.0.0.1:6379/0"}}}}"#
        ))
        .unwrap();
        let cluster = config.cluster.as_ref().unwrap();
        assert_eq!(cluster.prefix, "rocket", "the default prefix");
        assert!(config.engine_config(&config.hubs[0]).cluster);
        assert!(
            !Config::demo()
                .engine_config(&Config::demo().hubs[0])
                .cluster
        );
        let e = err(&format!(
            r#"{{{hubs},"Cluster":{{"Redis":"localhost:6379"}}}}"#
        ));
        assert!(
            e.contains("Cluster.Redis") && e.contains("\"localhost:6379\""),
            "{e}"
        );
        let e = err(&format!(
            r#"{{{hubs},"Cluster":{{"Redis":"redis://h/0","Prefix":""}}}}"#
        ));
        assert!(e.contains("Cluster.Prefix"), "{e}");
        let e = err(&format!(
            r#"{{{hubs},"Cluster":{{"Redis":"redis://h/0","Db":1}}}}"#
        ));
        assert!(e.contains("Db"), "unknown keys are refused: {e}");
        let shared = Config::from_json(
            r#"{"Hubs":[{"Path":"/h","History":{"Size":1,"TtlMs":1},"Presence":true}],"Cluster":{"Redis":"redis://h/0"}}"#,
        )
        .unwrap();
        let engine = shared.engine_config(&shared.hubs[0]);
        assert!(engine.cluster && engine.presence && engine.history.is_some());
        assert_eq!(
            ClusterConfig::new("redis://h:1/2").unwrap().redis,
            "redis://h:1/2"
        );
        assert!(ClusterConfig::new("nope").is_err());
    }

    #[test]
    fn reads_the_original_example_unchanged() {
        let c = Config::from_json(EXAMPLE).unwrap();
        assert_eq!((c.host.as_str(), c.port), ("localhost", 9772));
        assert_eq!(c.tls_cert_file, "");
        let hub = c.hub("/echo").unwrap();
        assert_eq!(hub.users["backend"].secret, "secret");
        assert_eq!(hub.users["backend"].permission, Permissions::ALL);
        assert_eq!(hub.users["frontend"].permission.bits(), 3);
        assert_eq!(c.limits, Limits::default());
        assert!(hub.allowed_origins.is_none());
        assert_eq!(Config::demo().hubs, c.hubs);
    }

    #[test]
    fn bad_json_names_line_and_column() {
        let e = Config::from_json("{\n  \"Host\": \"x\",\n  oops\n}").unwrap_err();
        assert!(
            matches!(
                e,
                ConfigError::Syntax {
                    line: 3,
                    column: 3,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(
            e.to_string().starts_with("invalid JSON at line 3 column 3"),
            "{e}"
        );
    }

    #[test]
    fn unknown_and_mistyped_keys_are_shape_errors() {
        let e = err(r#"{"Hubs":[], "Prot": 1}"#);
        assert!(e.contains("unknown field `Prot`"), "{e}");
        let e = err(r#"{"Hubs":[], "Port": "x"}"#);
        assert!(e.contains("invalid type"), "{e}");
        let e = err(r#"{"Port": 1}"#);
        assert!(e.ends_with("column 11: missing field `Hubs`"), "{e}");
        let e = err(r#"{"Hubs":[{"Path":"/a","Users":{"u":{"Permission":"x"}}}]}"#);
        assert!(
            e.contains(": Hubs[0].Users.u.Permission: invalid type"),
            "{e}"
        );
    }

    #[test]
    fn codec_must_be_json() {
        let e = err(r#"{"Hubs":[{"Path":"/a","Codec":"XML"}]}"#);
        assert_eq!(
            e,
            "invalid config: Hubs[0].Codec: unsupported codec \"XML\" (the only codec is \"JSON\")"
        );
    }

    #[test]
    fn permission_out_of_range() {
        for bad in ["8", "-1", "255", "1.5"] {
            let text = format!(
                r#"{{"Hubs":[{{"Path":"/a","Users":{{"u":{{"Name":"u","Permission":{bad}}}}}}}]}}"#
            );
            let e = err(&text);
            assert!(
                e.contains("Permission") || e.contains("invalid type"),
                "{bad}: {e}"
            );
        }
        for good in 0..=7 {
            let text =
                format!(r#"{{"Hubs":[{{"Path":"/a","Users":{{"u":{{"Permission":{good}}}}}}}]}}"#);
            let c = Config::from_json(&text).unwrap();
            assert_eq!(c.hubs[0].users["u"].permission.bits(), good);
            assert_eq!(c.hubs[0].users["u"].name, "u");
        }
    }

    #[test]
    fn hub_paths_are_checked() {
        for (path, why) in [
            ("echo", "must start with '/'"),
            ("/a b", "contains ' '"),
            ("/a?x", "contains '?'"),
            ("/a//b", "empty, '.' or '..' segment"),
            ("/../b", "empty, '.' or '..' segment"),
            ("/health", "reserved for the HTTP endpoints"),
            ("/ready", "reserved for the HTTP endpoints"),
            ("/metrics", "reserved for the HTTP endpoints"),
            ("/api", "reserved for the HTTP endpoints"),
            ("/api/broadcast", "reserved for the HTTP endpoints"),
        ] {
            let e = err(&format!(r#"{{"Hubs":[{{"Path":"{path}"}}]}}"#));
            assert!(e.contains("Hubs[0].Path") && e.contains(why), "{path}: {e}");
        }
        let e = err(r#"{"Hubs":[{"Path":"/a"},{"Path":"/b"},{"Path":"/a"}]}"#);
        assert_eq!(e, "invalid config: Hubs[2].Path: duplicate hub path \"/a\"");
        assert!(err(r#"{"Hubs":[]}"#).contains("at least one hub"));
        // Only the exact endpoints and what lies under /api/ are reserved.
        for path in ["/healthz", "/apix", "/metrics/x", "/echo"] {
            Config::from_json(&format!(r#"{{"Hubs":[{{"Path":"{path}"}}]}}"#)).unwrap();
        }
    }

    #[test]
    fn user_name_must_match_key() {
        let e = err(r#"{"Hubs":[{"Path":"/a","Users":{"alice":{"Name":"bob","Permission":1}}}]}"#);
        assert_eq!(
            e,
            "invalid config: Hubs[0].Users.alice.Name: \"bob\" differs from the user's key \"alice\""
        );
    }

    #[test]
    fn limits_default_and_override() {
        let c = Config::from_json(
            r#"{"Hubs":[{"Path":"/a"}],"Limits":{"MaxMessageBytes":10,"MaxFailedAuth":0}}"#,
        )
        .unwrap();
        assert_eq!(c.limits.max_message_bytes, 10);
        assert_eq!(c.limits.max_failed_auth, 0);
        assert_eq!(c.limits.send_queue_messages, 1024);
        assert_eq!(c.limits.send_queue_bytes, 1 << 20);
        assert_eq!(c.limits.write_timeout_ms, 10_000);
        for key in ["SendQueueBytes", "WriteTimeoutMs"] {
            let e = err(&format!(
                r#"{{"Hubs":[{{"Path":"/a"}}],"Limits":{{"{key}":0}}}}"#
            ));
            assert!(
                e.contains(&format!("Limits.{key}: must be at least 1")),
                "{e}"
            );
        }
        let e = err(r#"{"Hubs":[{"Path":"/a"}],"Limits":{"SendQueueMessages":0}}"#);
        assert!(
            e.contains("Limits.SendQueueMessages: must be at least 1"),
            "{e}"
        );
        let e = err(r#"{"Hubs":[{"Path":"/a"}],"Limits":{"MaxMesageBytes":1}}"#);
        assert!(e.contains("unknown field `MaxMesageBytes`"), "{e}");
    }

    #[test]
    fn tls_files_go_together_and_origins_are_checked() {
        let e = err(r#"{"Hubs":[{"Path":"/a"}],"TLSCertFile":"c.pem"}"#);
        assert!(e.contains("TLSKeyFile"), "{e}");
        let e = err(r#"{"Hubs":[{"Path":"/a","AllowedOrigins":["app.example.com"]}]}"#);
        assert!(e.contains("Hubs[0].AllowedOrigins"), "{e}");
        let e = err(r#"{"Hubs":[{"Path":"/a","AllowedOrigins":["https://a.example/app"]}]}"#);
        assert!(
            e.contains("Hubs[0].AllowedOrigins") && e.contains("path"),
            "{e}"
        );
        let c = Config::from_json(
            r#"{"Hubs":[{"Path":"/a","AllowedOrigins":["HTTPS://App.Example.com:443"]}]}"#,
        )
        .unwrap();
        assert_eq!(
            c.hubs[0].allowed_origins.as_deref(),
            Some(&["https://app.example.com".to_owned()][..]),
            "stored as browsers send it"
        );
    }

    #[test]
    fn phc_secrets_are_checked_for_shape() {
        let user = |secret: &str| {
            format!(
                r#"{{"Hubs":[{{"Path":"/a","Users":{{"u":{{"Secret":"{secret}","Permission":1}}}}}}]}}"#
            )
        };
        let good = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG";
        assert!(Config::from_json(&user(good)).is_ok());
        assert!(is_phc(good) && !is_phc("secret") && !is_phc(""));
        // Well-formed in shape but not a hash argon2 can verify: refused at startup, not
        // silently failing every login later.
        let e = err(&user(
            "$argon2id$v=19$m=abc,t=2,p=1$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG",
        ));
        assert!(
            e.starts_with("invalid config: Hubs[0].Users.u.Secret: the secret of user \"u\" on hub \"/a\" has invalid argon2 parameters"),
            "{e}"
        );
        assert!(
            !e.contains("RdescudvJCsgt3ub"),
            "the hash is never echoed: {e}"
        );
        let e = err(&user("$argon2id$oops"));
        assert!(
            e.contains("Hubs[0].Users.u.Secret") && e.contains("PHC"),
            "{e}"
        );
        assert!(
            !e.contains("oops"),
            "the secret itself is never echoed: {e}"
        );
    }

    #[test]
    fn history_presence_and_join_leave_are_per_hub_off_by_default_and_checked() {
        let hub = |extra: &str| format!(r#"{{"Hubs":[{{"Path":"/a"}},{{"Path":"/h"{extra}}}]}}"#);
        let c = Config::from_json(&hub("")).unwrap();
        let e = c.engine_config(&c.hubs[1]);
        assert_eq!((e.history, e.presence, e.join_leave), (None, false, false));
        let c = Config::from_json(&hub(
            r#","History":{"Size":5,"TtlMs":100},"Presence":true,"JoinLeave":true"#,
        ))
        .unwrap();
        let e = c.engine_config(&c.hubs[1]);
        assert_eq!(e.history, Some(HistoryConfig::new(5, 100)));
        assert!(e.presence && e.join_leave);
        assert_eq!(c.engine_config(&c.hubs[0]).history, None, "per hub");
        assert_eq!(
            err(&hub(r#","History":{"Size":0,"TtlMs":100}"#)),
            "invalid config: Hubs[1].History.Size: must be at least 1"
        );
        assert_eq!(
            err(&hub(r#","History":{"Size":1,"TtlMs":0}"#)),
            "invalid config: Hubs[1].History.TtlMs: must be at least 1"
        );
        assert!(err(&hub(r#","Presence":1"#)).contains("Presence"));
    }

    #[test]
    fn secrets_are_not_debug_printed() {
        let c = Config::from_json(EXAMPLE).unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("\"secret\""), "{dbg}");
    }
}
