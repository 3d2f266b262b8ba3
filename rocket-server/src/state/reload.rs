//! Reloading a running server's configuration (`rocket-cli` does it on SIGHUP): what a
//! reload applies, what it leaves for a restart, and the report of what changed.

use std::fmt;
use std::path::{Path, PathBuf};

use rocket_proto::Reloaded;

use super::ServerState;
use crate::config::{Config, Limits};

/// What [`ServerState::reload`] did, for the operator's log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReloadReport {
    /// The hubs reloaded, in the order of the new config, each with what changed.
    pub hubs: Vec<HubReload>,
    /// What the new config asks for that a reload does not apply, one sentence each
    /// (e.g. `hub "/new" is new: adding a hub needs a restart`). The running server keeps
    /// what it had there.
    pub not_applied: Vec<String>,
    /// The TLS certificate and key files the certificate was reloaded from, when it was:
    /// handshakes from now on present it.
    pub tls_reloaded: Option<(PathBuf, PathBuf)>,
}

impl ReloadReport {
    /// Whether anything was applied.
    pub fn changed(&self) -> bool {
        self.hubs.iter().any(HubReload::changed) || self.tls_reloaded.is_some()
    }
}

/// What a reload changed on one hub.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HubReload {
    /// The hub's path.
    pub path: String,
    /// Users, engine limits and the sessions they affected.
    pub users: Reloaded,
    /// Whether `AllowedOrigins` changed (it applies to new handshakes).
    pub origins_changed: bool,
}

impl HubReload {
    /// Whether anything changed on this hub.
    pub fn changed(&self) -> bool {
        !self.users.is_empty() || self.origins_changed
    }
}

impl fmt::Display for HubReload {
    /// `hub "/echo": users added: carol; removed: bob (1 session ended); ...`, or
    /// `hub "/echo": unchanged`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "hub {:?}: ", self.path)?;
        if !self.changed() {
            return f.write_str("unchanged");
        }
        let u = &self.users;
        let mut parts = Vec::new();
        let names = |list: &[String]| list.join(", ");
        if !u.added.is_empty() {
            parts.push(format!("users added: {}", names(&u.added)));
        }
        if !u.removed.is_empty() {
            parts.push(format!(
                "users removed: {} ({} session(s) ended)",
                names(&u.removed),
                u.sessions_ended
            ));
        }
        if !u.secret_changed.is_empty() {
            parts.push(format!("secret changed: {}", names(&u.secret_changed)));
        }
        if !u.permission_changed.is_empty() {
            let mut part = format!("permission changed: {}", names(&u.permission_changed));
            if u.sessions_unsubscribed > 0 {
                part += &format!(
                    " ({} session(s) lost READ and were unsubscribed)",
                    u.sessions_unsubscribed
                );
            }
            parts.push(part);
        }
        if u.limits_changed {
            parts.push("MaxSubscriptionsPerClient/MaxFailedAuth changed".to_owned());
        }
        if self.origins_changed {
            parts.push("AllowedOrigins changed".to_owned());
        }
        f.write_str(&parts.join("; "))
    }
}

impl ServerState {
    /// Applies `config` (valid, as every [`Config`] is) to the running server without
    /// closing a connection, and reports what changed:
    /// - every hub of `config` that the server serves with the Rocket engine on the same
    ///   path gets the hub's users and the engine limits (`MaxSubscriptionsPerClient`,
    ///   `MaxFailedAuth`); what its clients see is
    ///   [`Engine::handle_reload`](rocket_proto::Engine::handle_reload)'s contract. Its
    ///   `AllowedOrigins` applies to the handshakes that follow.
    /// - what a reload cannot do is left as it runs and listed in
    ///   [`ReloadReport::not_applied`]: adding or removing a hub (a changed path is both),
    ///   a hub served by a custom protocol, and the settings fixed at startup (`Host`,
    ///   `Port`, `Log`, `MetricsToken`, and the transport limits).
    /// - a server whose certificate came from `TLSCertFile` and `TLSKeyFile` reads the
    ///   files (the new config's) again: handshakes that follow present the new
    ///   certificate, connections already open keep theirs, and a pair that fails to load
    ///   is reported in `not_applied` and leaves the running certificate. Turning TLS on
    ///   or off needs a restart.
    ///
    /// The hubs that can be reloaded are, even when the config also asks for what needs a
    /// restart. Each hub changes atomically (between two of its inputs); call one reload at
    /// a time.
    pub fn reload(&self, config: &Config) -> ReloadReport {
        let mut report = ReloadReport {
            not_applied: fixed_at_startup(&self.config, config),
            ..ReloadReport::default()
        };
        self.reload_tls(config, &mut report);
        for hub in &config.hubs {
            let Some(entry) = self.hubs.iter().find(|e| e.hub.path() == hub.path) else {
                report.not_applied.push(format!(
                    "hub {:?} is new: adding a hub needs a restart",
                    hub.path
                ));
                continue;
            };
            let Some(users) = entry.hub.reload(&config.engine_config(hub)) else {
                report.not_applied.push(format!(
                    "hub {:?} is served by a custom protocol: not reloaded",
                    hub.path
                ));
                continue;
            };
            let origins_changed = entry
                .allowed_origins
                .replace(hub.allowed_origins.as_deref());
            report.hubs.push(HubReload {
                path: hub.path.clone(),
                users,
                origins_changed,
            });
        }
        for old in &self.config.hubs {
            if config.hub(&old.path).is_none() && self.hub(&old.path).is_some() {
                report.not_applied.push(format!(
                    "hub {:?} is not in the new config: it keeps serving (removing a hub needs a restart)",
                    old.path
                ));
            }
        }
        report
    }
}

impl ServerState {
    /// Reloads the certificate from the new config's TLS files (see [`ServerState::reload`]).
    fn reload_tls(&self, config: &Config, report: &mut ReloadReport) {
        let (cert, key) = (&config.tls_cert_file, &config.tls_key_file);
        match self.tls_files() {
            Some(_) if cert.is_empty() => report
                .not_applied
                .push("TLSCertFile removed: turning TLS off needs a restart".to_owned()),
            Some(files) => match files.reload(Path::new(cert), Path::new(key)) {
                Ok(()) => report.tls_reloaded = Some(files.paths()),
                Err(e) => report.not_applied.push(format!(
                    "TLS certificate not reloaded, the running one is kept: {e}"
                )),
            },
            None if cert.is_empty() => {}
            None if self.config.tls_cert_file.is_empty() => report
                .not_applied
                .push("TLSCertFile set: turning TLS on needs a restart".to_owned()),
            // TLS from files this server did not load itself (an embedder's own rustls
            // configuration): nothing to reload.
            None => {}
        }
    }
}

/// The settings that differ between `running` and `new` but apply only at startup.
fn fixed_at_startup(running: &Config, new: &Config) -> Vec<String> {
    let mut changed = Vec::new();
    let mut check = |key: &str, old: String, new: String| {
        if old != new {
            changed.push(format!("{key} changed ({old} -> {new}): needs a restart"));
        }
    };
    let text = |s: &str| format!("{s:?}");
    check("Host", text(&running.host), text(&new.host));
    check("Port", running.port.to_string(), new.port.to_string());
    check("Log", text(&running.log), text(&new.log));
    for ((key, old), (_, new)) in transport_limits(&running.limits)
        .into_iter()
        .zip(transport_limits(&new.limits))
    {
        check(&format!("Limits.{key}"), old.to_string(), new.to_string());
    }
    if running.metrics_token != new.metrics_token {
        // A secret: never in the log.
        changed.push("MetricsToken changed: needs a restart".to_owned());
    }
    if running.cluster != new.cluster {
        // The Redis URL may hold a password: not in the log either.
        changed.push("Cluster changed: needs a restart".to_owned());
    }
    changed
}

/// The limits the transport reads at startup (the engine's two reload).
fn transport_limits(l: &Limits) -> [(&'static str, u64); 9] {
    [
        ("MaxMessageBytes", l.max_message_bytes as u64),
        ("MaxConnections", l.max_connections as u64),
        ("MaxConnectionsPerIp", l.max_connections_per_ip as u64),
        ("SendQueueMessages", l.send_queue_messages as u64),
        ("SendQueueBytes", l.send_queue_bytes as u64),
        ("WriteTimeoutMs", l.write_timeout_ms),
        ("HandshakeTimeoutMs", l.handshake_timeout_ms),
        ("PingIntervalMs", l.ping_interval_ms),
        ("IdleTimeoutMs", l.idle_timeout_ms),
    ]
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::sync::Arc;

    use rocket_proto::{Message, Token};
    use tungstenite::handshake::server::Request;

    use super::*;
    use crate::hub::Cork;
    use crate::hub::tests::received;
    use crate::outbox::Outbox;

    const START: &str = r#"{"Port":0,"Hubs":[
        {"Path":"/a","Users":{"alice":{"Secret":"a","Permission":3},
                              "bob":{"Secret":"b","Permission":3}}},
        {"Path":"/b","AllowedOrigins":["https://one.example"]},
        {"Path":"/old"}]}"#;

    fn origin_allowed(state: &ServerState, origin: &str) -> bool {
        let request = Request::builder()
            .uri("/b")
            .header("Origin", origin)
            .body(())
            .unwrap();
        let ip: IpAddr = [127, 0, 0, 1].into();
        state.admit(&request, ip, &mut None).is_ok()
    }

    #[test]
    fn a_reload_applies_users_and_origins_and_lists_what_needs_a_restart() {
        let state = ServerState::new(Config::from_json(START).unwrap());
        let hub = Arc::clone(state.hub("/a").unwrap());
        let outbox = Arc::new(Outbox::new(16, 1 << 20, None));
        let bob = hub
            .connect(Token::from_bytes([1; 16]), Arc::clone(&outbox))
            .unwrap();
        hub.handle_message(
            bob,
            Message::Text(r#"{"authenticate":{"user":"bob","secret":"b"}}"#),
            &mut Cork::default(),
        );
        hub.handle_message(
            bob,
            Message::Text(r#"{"subscribe":{"channel":"c"}}"#),
            &mut Cork::default(),
        );
        assert_eq!(received(&outbox).len(), 3);
        assert!(origin_allowed(&state, "https://one.example"));
        assert!(!origin_allowed(&state, "https://two.example"));

        let new = Config::from_json(
            r#"{"Port":1,"MetricsToken":"t0k3n","Limits":{"MaxMessageBytes":10},
            "Cluster":{"Redis":"redis://:pw@127.0.0.1/0"},"Hubs":[
            {"Path":"/a","Users":{"alice":{"Secret":"a2","Permission":3},
                                  "carol":{"Secret":"c","Permission":1}}},
            {"Path":"/b","AllowedOrigins":["https://two.example"]},
            {"Path":"/new"}]}"#,
        )
        .unwrap();
        let report = state.reload(&new);
        assert!(report.changed());
        assert_eq!(
            report.not_applied,
            [
                "Port changed (0 -> 1): needs a restart",
                "Limits.MaxMessageBytes changed (65536 -> 10): needs a restart",
                "MetricsToken changed: needs a restart",
                "Cluster changed: needs a restart",
                "hub \"/new\" is new: adding a hub needs a restart",
                "hub \"/old\" is not in the new config: it keeps serving (removing a hub needs a restart)",
            ]
        );
        let lines: Vec<String> = report.hubs.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "hub \"/a\": users added: carol; users removed: bob (1 session(s) ended); \
                 secret changed: alice",
                "hub \"/b\": AllowedOrigins changed",
            ]
        );
        // Bob was told nothing, is anonymous now, and the old hub still serves.
        assert!(received(&outbox).is_empty());
        hub.handle_message(
            bob,
            Message::Text(r#"{"subscribe":{"channel":"c"}}"#),
            &mut Cork::default(),
        );
        assert_eq!(received(&outbox), [r#"{"err":"ACCESS_DENIED"}"#]);
        assert_eq!(hub.channel_count(), Some(0));
        assert!(state.hub("/old").is_some() && state.hub("/new").is_none());
        assert!(!origin_allowed(&state, "https://one.example"));
        assert!(origin_allowed(&state, "https://two.example"));

        // The same config again: nothing changes, what needs a restart still does.
        let again = state.reload(&new);
        assert!(!again.changed());
        assert_eq!(again.hubs[1].to_string(), "hub \"/b\": unchanged");
        assert_eq!(again.not_applied, report.not_applied);
    }

    #[test]
    fn custom_protocols_are_not_reloaded() {
        let config = Config::from_json(r#"{"Hubs":[{"Path":"/a"}]}"#).unwrap();
        struct Silent;
        impl rocket_proto::Protocol for Silent {
            fn handle_connect(
                &mut self,
                _: rocket_proto::ClientId,
                _: Token,
            ) -> Result<(), rocket_proto::ConnectError> {
                Ok(())
            }
            fn handle_message(&mut self, _: rocket_proto::ClientId, _: Message<'_>) {}
            fn handle_disconnect(&mut self, _: rocket_proto::ClientId) {}
            fn poll_output(&mut self) -> Option<rocket_proto::Output> {
                None
            }
        }
        let state = ServerState::new(config.clone())
            .with_protocol("/a", Silent)
            .unwrap();
        let report = state.reload(&config);
        assert!(report.hubs.is_empty());
        assert_eq!(
            report.not_applied,
            ["hub \"/a\" is served by a custom protocol: not reloaded"]
        );
    }
}
