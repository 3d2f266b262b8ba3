//! The server configuration: the original Rocket `example.json` format, extended with
//! `Limits` and per-hub `AllowedOrigins`.
//!
//! The model is pure data, shared by every frontend. [`Config::from_json`] parses *and*
//! validates; a [`Config`] that exists is a valid one.
//!
//! ```
//! let config = rocket_proto::Config::from_json(r#"{
//!     "Host": "localhost", "Port": 9772,
//!     "Hubs": [{ "Path": "/echo", "Codec": "JSON",
//!                "Users": { "backend": { "Name": "backend", "Secret": "s", "Permission": 7 } } }]
//! }"#).unwrap();
//! assert_eq!(config.hubs[0].path, "/echo");
//! assert_eq!(config.limits.max_message_bytes, 65536);
//! ```

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use serde::Deserialize;

use crate::Permissions;

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
    /// HTTP 403; handshakes without `Origin` (non-browser clients) are allowed.
    #[serde(rename = "AllowedOrigins", default)]
    pub allowed_origins: Option<Vec<String>>,
}

/// A configured user.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct UserConfig {
    /// The user's name; must equal its key in `Users` (`Name`, defaults to the key).
    #[serde(rename = "Name", default)]
    pub name: String,
    /// The shared secret (`Secret`). Empty: the user accepts any secret. A value starting
    /// with `$argon2` is an argon2 PHC hash (`rocket-cli hash-secret` makes one), verified
    /// by the frontend; anything else is a plain secret compared in constant time.
    #[serde(rename = "Secret", default)]
    pub secret: String,
    /// Permission bits (`Permission`): 1 = READ, 2 = WRITE, 4 = MANAGE.
    #[serde(rename = "Permission", deserialize_with = "permission_bits")]
    pub permission: Permissions,
}

impl fmt::Debug for UserConfig {
    // Secrets never reach logs, not even through `{:?}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserConfig")
            .field("name", &self.name)
            .field("secret", &"<redacted>")
            .field("permission", &self.permission)
            .finish()
    }
}

/// Resource limits. In JSON: `"Limits": { "MaxMessageBytes": 65536, … }`; every field is
/// optional and 0 means "no limit" for counts.
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

/// Why a configuration was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The text is not JSON.
    #[error("invalid JSON at line {line} column {column}: {message}")]
    Syntax {
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// What the parser expected.
        message: String,
    },
    /// The JSON does not have the config's shape (unknown key, wrong type, missing key).
    #[error(
        "invalid config at line {line} column {column}: {}{message}",
        key_prefix(key)
    )]
    Shape {
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// Where in the document, e.g. `Hubs[0].Users.u.Permission` (empty for the top).
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A value is well-formed JSON but not allowed.
    #[error("invalid config: {key}: {reason}")]
    Invalid {
        /// Where the value is, e.g. `Hubs[0].Users.backend.Permission`.
        key: String,
        /// Why it is rejected.
        reason: String,
    },
}

impl ConfigError {
    fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

impl From<serde_path_to_error::Error<serde_json::Error>> for ConfigError {
    fn from(e: serde_path_to_error::Error<serde_json::Error>) -> Self {
        let key = match e.path().to_string().replace(".[", "[") {
            top if top == "." => String::new(),
            key => key,
        };
        Self::json(e.into_inner(), key)
    }
}

fn key_prefix(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!("{key}: ")
    }
}

impl ConfigError {
    /// Classifies a serde_json error found at `key`.
    fn json(e: serde_json::Error, key: String) -> Self {
        let (line, column) = (e.line(), e.column());
        // serde_json appends " at line L column C"; we report those separately.
        let mut message = e.to_string();
        if let Some(pos) = message.rfind(" at line ") {
            message.truncate(pos);
        }
        match e.classify() {
            serde_json::error::Category::Data => Self::Shape {
                line,
                column,
                key,
                message,
            },
            _ => Self::Syntax {
                line,
                column,
                message,
            },
        }
    }
}

impl Config {
    /// Parses and validates a configuration from its JSON text.
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        let mut json = serde_json::Deserializer::from_str(text);
        let mut config: Config = serde_path_to_error::deserialize(&mut json)?;
        json.end()
            .map_err(|e| ConfigError::json(e, String::new()))?;
        config.validate()?;
        Ok(config)
    }

    /// A small built-in configuration for trying Rocket out: hub `/echo` with the original
    /// example's users (`backend`/`secret` with all permissions, `frontend` with any secret
    /// and READ|WRITE), on `localhost:9772`.
    pub fn demo() -> Self {
        Self::from_json(DEMO_CONFIG).expect("the built-in demo config is valid")
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
            for (key, user) in &mut hub.users {
                let at = |field: &str| format!("Hubs[{i}].Users.{key}.{field}");
                if key.is_empty() || key.len() > crate::MAX_NAME_BYTES {
                    return Err(ConfigError::invalid(
                        format!("Hubs[{i}].Users"),
                        format!("user name {key:?} must be 1 to 255 bytes"),
                    ));
                }
                if is_phc(&user.secret) && !phc_well_formed(&user.secret) {
                    return Err(ConfigError::invalid(
                        at("Secret"),
                        "starts with \"$argon2\" but is not a PHC hash like \"$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>\"",
                    ));
                }
                if user.name.is_empty() {
                    user.name = key.clone();
                } else if user.name != *key {
                    return Err(ConfigError::invalid(
                        at("Name"),
                        format!("{:?} differs from the user's key {key:?}", user.name),
                    ));
                }
            }
            if let Some(origins) = &hub.allowed_origins {
                for origin in origins {
                    if origin.is_empty() || origin.ends_with('/') || !origin.contains("://") {
                        return Err(ConfigError::invalid(
                            at("AllowedOrigins"),
                            format!("{origin:?} is not an origin like \"https://app.example.com\""),
                        ));
                    }
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

/// Whether a configured secret is an argon2 PHC hash rather than a plain secret.
pub fn is_phc(secret: &str) -> bool {
    secret.starts_with("$argon2")
}

/// `$argon2{id,i,d}$v=19$m=..,t=..,p=..$<salt>$<hash>` in shape (the frontend parses it fully).
fn phc_well_formed(secret: &str) -> bool {
    let parts: Vec<&str> = secret.split('$').collect();
    let b64 = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
    };
    parts.len() == 6
        && parts[0].is_empty()
        && matches!(parts[1], "argon2id" | "argon2i" | "argon2d")
        && parts[2].starts_with("v=")
        && parts[3].split(',').all(|kv| kv.contains('='))
        && b64(parts[4])
        && b64(parts[5])
}

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

fn permission_bits<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Permissions, D::Error> {
    let bits = i64::deserialize(d)?;
    u8::try_from(bits)
        .ok()
        .and_then(Permissions::from_bits)
        .ok_or_else(|| {
            serde::de::Error::custom(format_args!(
                "Permission {bits} is out of range: use 0..=7 (1 = READ, 2 = WRITE, 4 = MANAGE)"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../example.json");

    fn err(text: &str) -> String {
        Config::from_json(text).unwrap_err().to_string()
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
    fn secrets_are_not_debug_printed() {
        let c = Config::from_json(EXAMPLE).unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("\"secret\""), "{dbg}");
    }
}
