//! What one [`Engine`](crate::Engine) is configured with: its users, the protocol's
//! limits, and the hub's history, presence and join/leave settings. Deployment settings (address, TLS, logs, transport limits, hub paths) are the
//! server's, not the engine's: `rocket-server` reads the whole config file and hands each
//! engine its [`EngineConfig`].
//!
//! An [`EngineConfig`] also reads from JSON on its own, in the config file's key names:
//!
//! ```
//! let config = rocket_proto::EngineConfig::from_json(r#"{
//!     "Users": { "backend": { "Name": "backend", "Secret": "s", "Permission": 7 } },
//!     "Limits": { "MaxFailedAuth": 3 }
//! }"#).unwrap();
//! assert_eq!(config.users["backend"].permission, rocket_proto::Permissions::ALL);
//! assert_eq!(config.limits.max_failed_auth, 3);
//! assert_eq!(config.limits.max_subscriptions_per_client, 1024);
//! ```

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use crate::Permissions;

/// The settings of one engine (one hub): its users, limits, history, presence and
/// join/leave. [`EngineConfig::from_json`]
/// parses and validates; after changing fields by hand, call [`EngineConfig::validate`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct EngineConfig {
    /// Users by name (`Users`).
    #[serde(rename = "Users", default)]
    pub users: BTreeMap<String, UserConfig>,
    /// The protocol's limits (`Limits`).
    #[serde(rename = "Limits", default)]
    pub limits: EngineLimits,
    /// Channel history with offsets and recovery (`History`); `None` (the default): none.
    #[serde(rename = "History", default)]
    pub history: Option<HistoryConfig>,
    /// Answer `presence` requests (`Presence`, default `false`).
    #[serde(rename = "Presence", default)]
    pub presence: bool,
    /// Tell subscribers who joins and leaves their channels (`JoinLeave`, default `false`).
    #[serde(rename = "JoinLeave", default)]
    pub join_leave: bool,
    /// The hub runs on every node of a cluster (not read from the hub's JSON: the server
    /// sets it when its config has a `Cluster`): the engine then tells its driver what
    /// this node holds and what to send to other nodes (see [`Topic`](crate::Topic)).
    #[serde(skip)]
    pub cluster: bool,
}

/// A hub's channel history (`"History": {"Size": 100, "TtlMs": 600000}`): each channel keeps
/// its last `Size` broadcasts, for `TtlMs` after the last one. A channel's history therefore
/// costs at most `Size` messages (each at most `MaxMessageBytes` plus its offset and epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct HistoryConfig {
    /// Broadcasts kept per channel (`Size`, at least 1).
    #[serde(rename = "Size")]
    pub size: usize,
    /// How long a channel's history is kept after its last broadcast, in milliseconds
    /// (`TtlMs`, at least 1).
    #[serde(rename = "TtlMs")]
    pub ttl_ms: u64,
}

impl HistoryConfig {
    /// A history of `size` broadcasts kept for `ttl_ms` (check with [`Self::validate`]).
    pub fn new(size: usize, ttl_ms: u64) -> Self {
        Self { size, ttl_ms }
    }

    /// Both values are at least 1; the error names the key (`History.Size`, `History.TtlMs`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.size == 0 {
            return Err(ConfigError::invalid("History.Size", "must be at least 1"));
        }
        if self.ttl_ms == 0 {
            return Err(ConfigError::invalid("History.TtlMs", "must be at least 1"));
        }
        Ok(())
    }
}

impl EngineConfig {
    /// An engine configuration with these users and limits; the users are validated.
    pub fn new(
        users: BTreeMap<String, UserConfig>,
        limits: EngineLimits,
    ) -> Result<Self, ConfigError> {
        let mut config = Self {
            users,
            limits,
            ..Self::default()
        };
        config.validate()?;
        Ok(config)
    }

    /// This config with `History` set (`None`: no history); validated.
    pub fn with_history(mut self, history: Option<HistoryConfig>) -> Result<Self, ConfigError> {
        self.history = history;
        self.validate()?;
        Ok(self)
    }

    /// This config with `Presence` and `JoinLeave` set.
    pub fn with_presence(mut self, presence: bool, join_leave: bool) -> Self {
        self.presence = presence;
        self.join_leave = join_leave;
        self
    }

    /// Parses and validates `{"Users": {...}, "Limits": {...}}`.
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        let mut config: Self = parse_json(text)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what the JSON shape cannot express: user names of 1 to 255 bytes, each user's
    /// `Name` equal to its key (filled in from the key when empty), and argon2 PHC secrets
    /// well-formed in shape, and `History`'s values at least 1. Errors name the key, e.g.
    /// `Users.alice.Name`.
    pub fn validate(&mut self) -> Result<(), ConfigError> {
        if let Some(history) = &self.history {
            history.validate()?;
        }
        for (key, user) in &mut self.users {
            let at = |field: &str| format!("Users.{key}.{field}");
            if key.is_empty() || key.len() > crate::MAX_NAME_BYTES {
                return Err(ConfigError::invalid(
                    "Users",
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
        Ok(())
    }
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

/// The limits the engine enforces. In the config file they sit in `Limits` beside the
/// server's transport limits; every field is optional.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct EngineLimits {
    /// Most channels one client may subscribe to (`MaxSubscriptionsPerClient`, 1024;
    /// 0 = no limit).
    #[serde(rename = "MaxSubscriptionsPerClient")]
    pub max_subscriptions_per_client: usize,
    /// Failed authentications after which a connection is closed with 1008
    /// (`MaxFailedAuth`, 5; 0 = never).
    #[serde(rename = "MaxFailedAuth")]
    pub max_failed_auth: u32,
}

impl Default for EngineLimits {
    fn default() -> Self {
        Self {
            max_subscriptions_per_client: 1024,
            max_failed_auth: 5,
        }
    }
}

impl EngineLimits {
    /// These limits with `MaxSubscriptionsPerClient` set.
    pub fn with_max_subscriptions_per_client(mut self, n: usize) -> Self {
        self.max_subscriptions_per_client = n;
        self
    }

    /// These limits with `MaxFailedAuth` set.
    pub fn with_max_failed_auth(mut self, n: u32) -> Self {
        self.max_failed_auth = n;
        self
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
        /// Where the value is, e.g. `Users.backend.Permission`.
        key: String,
        /// Why it is rejected.
        reason: String,
    },
}

impl ConfigError {
    /// A [`ConfigError::Invalid`] at `key`.
    pub fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
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

impl ConfigError {
    /// The same error for a document nested at `prefix`: a hub's engine settings checked
    /// alone report `Users.u.Name`; inside a server config they are `Hubs[0].Users.u.Name`.
    pub fn within(mut self, prefix: &str) -> Self {
        match &mut self {
            Self::Shape { key, .. } | Self::Invalid { key, .. } => {
                *key = if key.is_empty() {
                    prefix.to_owned()
                } else {
                    format!("{prefix}.{key}")
                };
            }
            Self::Syntax { .. } => {}
        }
        self
    }
}

/// Parses one JSON document as `T` with errors that name the line, column and key (e.g.
/// `Users.u.Permission`). Only the shape is checked; validation is the caller's.
pub fn parse_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, ConfigError> {
    let mut json = serde_json::Deserializer::from_str(text);
    let value: T = serde_path_to_error::deserialize(&mut json)?;
    json.end()
        .map_err(|e| ConfigError::json(e, String::new()))?;
    Ok(value)
}

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

    fn err(text: &str) -> String {
        EngineConfig::from_json(text).unwrap_err().to_string()
    }

    #[test]
    fn reads_users_and_limits_with_defaults() {
        let c = EngineConfig::from_json(r#"{"Users":{"u":{"Permission":3}}}"#).unwrap();
        assert_eq!(c.users["u"].name, "u", "the name defaults to the key");
        assert_eq!(c.users["u"].permission.bits(), 3);
        assert_eq!(c.limits, EngineLimits::default());
        assert_eq!(
            EngineConfig::from_json("{}").unwrap(),
            EngineConfig::default()
        );
    }

    #[test]
    fn errors_name_line_column_and_key() {
        let e = EngineConfig::from_json("{\n  oops\n}").unwrap_err();
        assert!(
            matches!(
                e,
                ConfigError::Syntax {
                    line: 2,
                    column: 3,
                    ..
                }
            ),
            "{e:?}"
        );
        let e = err(r#"{"Users":{"u":{"Permission":"x"}}}"#);
        assert!(e.contains(": Users.u.Permission: invalid type"), "{e}");
        let e = err(r#"{"Limits":{"MaxMessageBytes":1}}"#);
        assert!(e.contains("unknown field `MaxMessageBytes`"), "{e}");
    }

    #[test]
    fn permission_out_of_range() {
        for bad in ["8", "-1", "255", "1.5"] {
            let e = err(&format!(r#"{{"Users":{{"u":{{"Permission":{bad}}}}}}}"#));
            assert!(
                e.contains("Permission") || e.contains("invalid type"),
                "{bad}: {e}"
            );
        }
        for good in 0..=7 {
            let text = format!(r#"{{"Users":{{"u":{{"Permission":{good}}}}}}}"#);
            let c = EngineConfig::from_json(&text).unwrap();
            assert_eq!(c.users["u"].permission.bits(), good);
        }
    }

    #[test]
    fn user_name_must_match_key_and_fit() {
        let e = err(r#"{"Users":{"alice":{"Name":"bob","Permission":1}}}"#);
        assert_eq!(
            e,
            "invalid config: Users.alice.Name: \"bob\" differs from the user's key \"alice\""
        );
        let long = "x".repeat(256);
        let e = err(&format!(r#"{{"Users":{{"{long}":{{"Permission":1}}}}}}"#));
        assert!(e.contains("must be 1 to 255 bytes"), "{e}");
        assert_eq!(
            ConfigError::invalid("Users.a.Name", "bad")
                .within("Hubs[0]")
                .to_string(),
            "invalid config: Hubs[0].Users.a.Name: bad"
        );
    }

    #[test]
    fn phc_secrets_are_checked_for_shape_without_echo() {
        let user =
            |secret: &str| format!(r#"{{"Users":{{"u":{{"Secret":"{secret}","Permission":1}}}}}}"#);
        let good = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG";
        assert!(EngineConfig::from_json(&user(good)).is_ok());
        assert!(is_phc(good) && !is_phc("secret") && !is_phc(""));
        let e = err(&user("$argon2id$oops"));
        assert!(e.contains("Users.u.Secret") && e.contains("PHC"), "{e}");
        assert!(
            !e.contains("oops"),
            "the secret itself is never echoed: {e}"
        );
    }

    #[test]
    fn history_presence_and_join_leave_are_off_by_default_and_checked() {
        let c = EngineConfig::from_json("{}").unwrap();
        assert_eq!((c.history, c.presence, c.join_leave), (None, false, false));
        let c = EngineConfig::from_json(
            r#"{"History":{"Size":3,"TtlMs":50},"Presence":true,"JoinLeave":true}"#,
        )
        .unwrap();
        assert_eq!(c.history, Some(HistoryConfig::new(3, 50)));
        assert!(c.presence && c.join_leave);
        let e = err(r#"{"History":{"Size":0,"TtlMs":50}}"#);
        assert_eq!(e, "invalid config: History.Size: must be at least 1");
        let e = err(r#"{"History":{"Size":1,"TtlMs":0}}"#);
        assert_eq!(e, "invalid config: History.TtlMs: must be at least 1");
        assert!(err(r#"{"History":{"Size":1}}"#).contains("TtlMs"));
        assert!(err(r#"{"History":{"Size":1,"TtlMs":1,"X":1}}"#).contains("unknown field"));
        let e = EngineConfig::default()
            .with_history(Some(HistoryConfig::new(1, 0)))
            .unwrap_err();
        assert!(e.to_string().contains("History.TtlMs"), "{e}");
    }

    #[test]
    fn secrets_are_not_debug_printed() {
        let c = EngineConfig::from_json(r#"{"Users":{"u":{"Secret":"hunter2","Permission":1}}}"#)
            .unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
    }
}
