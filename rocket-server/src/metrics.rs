//! Metrics: what the server counts, and `GET /metrics` in the Prometheus text format 0.0.4
//! (PROTOCOL.md, "Metrics").
//!
//! Counting stays off the fan-out path. The engine keeps its totals (messages, broadcasts,
//! directs, deliveries, failed authentications) as plain integers under the hub lock its
//! inputs already hold ([`rocket_proto::EngineStats`]); what happens outside an engine
//! (connections opened, closes by reason, refused handshakes, HTTP requests) is an atomic
//! or a short lock per connection or request, never per delivery. A scrape reads them
//! all and hands the values to `metrics-exporter-prometheus`, which writes the text.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use metrics::{Unit, counter, describe_counter, describe_gauge, gauge};
use metrics_exporter_prometheus::PrometheusBuilder;

use crate::state::ServerState;

/// Why a WebSocket connection ended: the `reason` label of `rocket_closes_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// The client closed it (or the socket went away).
    Client,
    /// The client asked with `{"disconnect":true}`.
    Disconnect,
    /// Its send queue overflowed.
    SlowConsumer,
    /// A write made no progress for `WriteTimeoutMs`.
    WriteTimeout,
    /// Silent for `IdleTimeoutMs`.
    IdleTimeout,
    /// `MaxFailedAuth` failed authentications.
    MaxFailedAuth,
    /// A message over `MaxMessageBytes` (1009).
    TooBig,
    /// A text message that is not UTF-8 (1007).
    InvalidUtf8,
    /// A WebSocket protocol violation (1002), or another close code.
    ProtocolError,
    /// The server shut down (1001).
    Shutdown,
}

impl CloseReason {
    /// Every reason, in label order.
    pub(crate) const ALL: [Self; 10] = [
        Self::Client,
        Self::Disconnect,
        Self::SlowConsumer,
        Self::WriteTimeout,
        Self::IdleTimeout,
        Self::MaxFailedAuth,
        Self::TooBig,
        Self::InvalidUtf8,
        Self::ProtocolError,
        Self::Shutdown,
    ];

    /// The label value.
    pub(crate) const fn label(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Disconnect => "disconnect",
            Self::SlowConsumer => "slow_consumer",
            Self::WriteTimeout => "write_timeout",
            Self::IdleTimeout => "idle_timeout",
            Self::MaxFailedAuth => "max_failed_auth",
            Self::TooBig => "too_big",
            Self::InvalidUtf8 => "invalid_utf8",
            Self::ProtocolError => "protocol_error",
            Self::Shutdown => "shutdown",
        }
    }
}

/// What a hub counts outside its engine.
#[derive(Debug, Default)]
pub(crate) struct HubCounters {
    /// WebSocket connections opened.
    pub(crate) opened: AtomicU64,
    /// Connections ended, by [`CloseReason`] (indexed like [`CloseReason::ALL`]).
    closes: [AtomicU64; CloseReason::ALL.len()],
    /// Publish API requests without usable credentials (no or a malformed
    /// `Authorization`); the engine counts the rest.
    api_auth_failures: AtomicU64,
}

impl HubCounters {
    /// A connection ended for `reason`.
    pub(crate) fn closed(&self, reason: CloseReason) {
        self.closes[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// A publish API request came without usable credentials.
    pub(crate) fn api_auth_failed(&self) {
        self.api_auth_failures.fetch_add(1, Ordering::Relaxed);
    }

    fn api_auth_failures(&self) -> u64 {
        self.api_auth_failures.load(Ordering::Relaxed)
    }

    /// Connections ended for `reason` so far.
    pub(crate) fn closes(&self, reason: CloseReason) -> u64 {
        self.closes[reason as usize].load(Ordering::Relaxed)
    }
}

/// Why a WebSocket handshake was refused: the `status` label of
/// `rocket_handshakes_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// `AllowedOrigins` (403).
    Origin,
    /// No hub on the path (404).
    NoHub,
    /// Connection limits or shutdown (503).
    Unavailable,
    /// The handshake did not finish within `HandshakeTimeoutMs`.
    Timeout,
}

impl Refused {
    const ALL: [Self; 4] = [Self::Origin, Self::NoHub, Self::Unavailable, Self::Timeout];

    const fn label(self) -> &'static str {
        match self {
            Self::Origin => "403",
            Self::NoHub => "404",
            Self::Unavailable => "503",
            Self::Timeout => "timeout",
        }
    }
}

/// What the server counts outside its hubs.
#[derive(Debug, Default)]
pub(crate) struct ServerCounters {
    refused: [AtomicU64; Refused::ALL.len()],
    /// Plain HTTP requests answered, by (path label, status).
    http: Mutex<BTreeMap<(String, u16), u64>>,
}

impl ServerCounters {
    /// A handshake was refused.
    pub(crate) fn refused(&self, why: Refused) {
        self.refused[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// A plain HTTP request on `path` (already a bounded label, see
    /// [`ServerState::path_label`]) was answered with `status`.
    pub(crate) fn http_request(&self, path: &str, status: u16) {
        let mut http = self.http.lock().unwrap_or_else(|e| e.into_inner());
        match http.get_mut(&(path.to_owned(), status)) {
            Some(n) => *n += 1,
            None => {
                http.insert((path.to_owned(), status), 1);
            }
        }
    }
}

/// The body of `GET /metrics`: every family of PROTOCOL.md with its current values.
pub(crate) fn render(state: &ServerState) -> String {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        describe();
        for hub in state.hubs() {
            let path = hub.path().to_owned();
            let c = hub.counters();
            gauge!("rocket_connections", "hub" => path.clone()).set(hub.connection_count() as f64);
            counter!("rocket_connections_opened_total", "hub" => path.clone())
                .absolute(c.opened.load(Ordering::Relaxed));
            for reason in CloseReason::ALL {
                counter!("rocket_closes_total", "hub" => path.clone(), "reason" => reason.label())
                    .absolute(c.closes(reason));
            }
            // Custom protocols have no engine: their engine series stay 0.
            let s = hub.stats().unwrap_or_default();
            gauge!("rocket_subscriptions", "hub" => path.clone()).set(s.subscriptions as f64);
            gauge!("rocket_channels", "hub" => path.clone()).set(s.channels as f64);
            for (name, value) in [
                ("rocket_frames_received_total", s.messages_received),
                ("rocket_broadcasts_total", s.broadcasts),
                ("rocket_directs_total", s.directs),
                ("rocket_deliveries_total", s.deliveries),
                (
                    "rocket_auth_failures_total",
                    s.auth_failures + c.api_auth_failures(),
                ),
            ] {
                counter!(name, "hub" => path.clone()).absolute(value);
            }
        }
        let counters = state.counters();
        for why in Refused::ALL {
            counter!("rocket_handshakes_refused_total", "status" => why.label())
                .absolute(counters.refused[why as usize].load(Ordering::Relaxed));
        }
        if let Some(cluster) = state.cluster() {
            let c = &cluster.counters;
            describe_cluster();
            gauge!("rocket_cluster_up").set(if cluster.is_up() { 1.0 } else { 0.0 });
            for (name, value) in [
                ("rocket_cluster_published_total", &c.published),
                ("rocket_cluster_received_total", &c.received),
                ("rocket_cluster_reconnects_total", &c.reconnects),
                ("rocket_cluster_dropped_total", &c.dropped),
            ] {
                counter!(name).absolute(value.load(Ordering::Relaxed));
            }
        }
        let http = counters.http.lock().unwrap_or_else(|e| e.into_inner());
        for ((path, status), n) in http.iter() {
            counter!("rocket_http_requests_total", "path" => path.clone(), "status" => status.to_string())
                .absolute(*n);
        }
    });
    handle.render()
}

fn describe() {
    describe_gauge!(
        "rocket_connections",
        Unit::Count,
        "Open WebSocket connections."
    );
    describe_counter!(
        "rocket_connections_opened_total",
        Unit::Count,
        "WebSocket connections opened."
    );
    describe_gauge!(
        "rocket_subscriptions",
        Unit::Count,
        "Channel subscriptions held."
    );
    describe_gauge!(
        "rocket_channels",
        Unit::Count,
        "Channels with at least one subscriber."
    );
    describe_counter!(
        "rocket_frames_received_total",
        Unit::Count,
        "Messages received from clients."
    );
    describe_counter!(
        "rocket_broadcasts_total",
        Unit::Count,
        "Broadcasts accepted (WebSocket and publish API)."
    );
    describe_counter!(
        "rocket_directs_total",
        Unit::Count,
        "Direct messages accepted (WebSocket and publish API)."
    );
    describe_counter!(
        "rocket_deliveries_total",
        Unit::Count,
        "Event messages queued to clients (broadcast, direct), not replies."
    );
    describe_counter!(
        "rocket_closes_total",
        Unit::Count,
        "WebSocket connections ended, by reason."
    );
    describe_counter!(
        "rocket_auth_failures_total",
        Unit::Count,
        "Failed authentications (WebSocket and publish API)."
    );
    describe_counter!(
        "rocket_handshakes_refused_total",
        Unit::Count,
        "WebSocket handshakes refused, by status."
    );
    describe_counter!(
        "rocket_http_requests_total",
        Unit::Count,
        "Plain HTTP requests answered, by path and status."
    );
}

/// The cluster families, declared on a node with a `Cluster` setting only.
fn describe_cluster() {
    describe_gauge!(
        "rocket_cluster_up",
        Unit::Count,
        "1 while the connection to the cluster's Redis is up, else 0."
    );
    describe_counter!(
        "rocket_cluster_published_total",
        Unit::Count,
        "Messages this node published to the other nodes through Redis."
    );
    describe_counter!(
        "rocket_cluster_received_total",
        Unit::Count,
        "Messages received from other nodes through Redis."
    );
    describe_counter!(
        "rocket_cluster_reconnects_total",
        Unit::Count,
        "Connections to Redis re-established after one was lost."
    );
    describe_counter!(
        "rocket_cluster_dropped_total",
        Unit::Count,
        "Publications to other nodes dropped because Redis fell 65,536 commands behind."
    );
}
