//! Everything a frontend shares across connections: the hubs built from a [`Config`], the
//! admission rules of the handshake, and shutdown.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use rocket_proto::{ConfigError, Engine, HashSeed, Protocol};
use tungstenite::handshake::server::Request;
use tungstenite::http::{StatusCode, header};
use tungstenite::protocol::WebSocketConfig;

use crate::cluster::Backplane;
use crate::config::{Config, Limits};
use crate::gate::{Full, Gate, Permit};
use crate::hub::Hub;
use crate::metrics::{Refused, ServerCounters};
use crate::origin::AllowedOrigins;
use crate::static_files::StaticFiles;
use crate::tls::{CertificateFiles, TlsError};
use crate::verifier::{MAX_CONCURRENT_VERIFICATIONS, MAX_WAITING_PER_ADDRESS, Slot, Verifier};

mod reload;
pub use reload::{HubReload, ReloadReport};

/// The shared state of one server: hubs by path, limits, connection counts.
#[derive(Debug)]
pub struct ServerState {
    config: Config,
    hubs: Vec<HubEntry>,
    gate: Arc<Gate>,
    shutting_down: AtomicBool,
    /// Unfinished handshakes, under the same limits as connections.
    handshakes: Arc<Gate>,
    verifier: Verifier,
    static_files: Option<StaticFiles>,
    counters: ServerCounters,
    /// The link to the other nodes, with a `Cluster` setting.
    cluster: Option<Arc<Backplane>>,
    /// The certificate served from `TLSCertFile`/`TLSKeyFile`, which a reload replaces.
    tls_files: OnceLock<Arc<CertificateFiles>>,
}

#[derive(Debug)]
struct HubEntry {
    hub: Arc<Hub>,
    allowed_origins: AllowedOrigins,
}

/// Bytes each connection reads at a time, and the read buffer every connection keeps for
/// its whole life. Idle connections are most of a server's memory, and clients send small
/// requests: 256 bytes holds an authentication, a subscription or a broadcast of ~200 bytes
/// of data in one read and keeps an idle connection under 3 KiB (512 cost 0.25 KiB more
/// per connection). A larger message still arrives whole (the buffer grows to its size
/// while it is read), in reads of this size.
pub(crate) const READ_BUFFER_BYTES: usize = 256;

/// A handshake that passed admission: the hub it selected and its connection permit.
#[derive(Debug)]
pub(crate) struct Admission {
    /// The hub chosen by the request path.
    pub(crate) hub: Arc<Hub>,
    /// Holds the connection's place under `MaxConnections` (dropping it when the
    /// connection ends frees the place) and knows the client's address.
    pub(crate) permit: Permit,
}

impl ServerState {
    /// A state running the Rocket protocol on every hub of `config`.
    pub fn new(config: Config) -> Self {
        let cluster = config
            .cluster
            .as_ref()
            .map(|c| Backplane::new(c).expect("a validated config's Redis URL parses"));
        let hubs: Vec<HubEntry> = config
            .hubs
            .iter()
            .map(|h| {
                let engine = Engine::new(&config.engine_config(h), random_seed());
                let hub = match &cluster {
                    Some(b) => Hub::clustered(h.path.clone(), engine, Arc::clone(b)),
                    None => Hub::rocket(h.path.clone(), engine),
                };
                HubEntry {
                    hub: Arc::new(hub),
                    allowed_origins: AllowedOrigins::new(h.allowed_origins.as_deref()),
                }
            })
            .collect();
        if let Some(b) = &cluster {
            b.route_to(hubs.iter().map(|e| &e.hub));
        }
        let (total, per_ip) = (
            config.limits.max_connections,
            config.limits.max_connections_per_ip,
        );
        let gate = Gate::new(total, per_ip);
        let handshakes = Gate::new(total, per_ip);
        Self {
            config,
            hubs,
            gate,
            shutting_down: AtomicBool::new(false),
            handshakes,
            verifier: Verifier::new(MAX_CONCURRENT_VERIFICATIONS, MAX_WAITING_PER_ADDRESS),
            static_files: None,
            counters: ServerCounters::default(),
            cluster,
            tls_files: OnceLock::new(),
        }
    }

    /// Loads the config's `TLSCertFile` and `TLSKeyFile` (a reload loads them again): the
    /// rustls configuration to serve `wss://` with. `None` when the config sets no TLS.
    pub(crate) fn config_tls(&self) -> Result<Option<Arc<rustls::ServerConfig>>, TlsError> {
        let c = &self.config;
        if c.tls_cert_file.is_empty() {
            return Ok(None);
        }
        let (tls, files) =
            crate::tls::load_tls_config(c.tls_cert_file.as_ref(), c.tls_key_file.as_ref())?;
        // Loaded at most once per server: a second load would serve the first files.
        let _ = self.tls_files.set(files);
        Ok(Some(tls))
    }

    /// The certificate files a reload reloads, once [`ServerState::config_tls`] loaded them.
    pub(crate) fn tls_files(&self) -> Option<&CertificateFiles> {
        self.tls_files.get().map(|f| &**f)
    }

    /// The cluster backplane, with a `Cluster` setting.
    pub(crate) fn cluster(&self) -> Option<&Arc<Backplane>> {
        self.cluster.as_ref()
    }

    /// With a `Cluster` setting, whether this node's connection to Redis is up (`/ready`
    /// answers 503 while it is not); `None` without one.
    pub fn cluster_up(&self) -> Option<bool> {
        self.cluster.as_ref().map(|b| b.is_up())
    }

    /// With a `Cluster` setting, this node's id (16 hex digits, random at startup), as it
    /// appears in the log; `None` without one.
    pub fn node_id(&self) -> Option<&str> {
        self.cluster.as_ref().map(|b| b.node())
    }

    /// Serves `protocol` on `path` instead of (or besides) the configured hubs: the way to
    /// run a custom protocol with the same frontends. `path` follows the config's rules for
    /// hub paths (it may not be `/health` or another HTTP endpoint, for one). An
    /// [`Engine`] given here is served as a Rocket hub.
    pub fn with_protocol(
        mut self,
        path: impl Into<String>,
        protocol: impl Protocol,
    ) -> Result<Self, ConfigError> {
        let path = path.into();
        crate::config::validate_path(&path).map_err(|reason| ConfigError::Invalid {
            key: format!("hub path {path:?}"),
            reason,
        })?;
        if let Some(files) = &self.static_files {
            check_no_collision(files, &path)?;
        }
        self.hubs.retain(|e| e.hub.path() != path);
        self.hubs.push(HubEntry {
            hub: Arc::new(Hub::custom(path, protocol)),
            allowed_origins: AllowedOrigins::default(),
        });
        Ok(self)
    }

    /// Serves `files` over plain HTTP beside the hubs (e.g. `rocket-cli --demo`'s page under
    /// `/demo/`), replacing files given before. A hub path under their prefix (or equal to
    /// it without the trailing `/`) would be shadowed: that is an error naming the hub.
    pub fn with_static_files(mut self, files: StaticFiles) -> Result<Self, ConfigError> {
        for path in self.paths() {
            check_no_collision(&files, path)?;
        }
        self.static_files = Some(files);
        Ok(self)
    }

    /// The static files served, if any.
    pub(crate) fn static_files(&self) -> Option<&StaticFiles> {
        self.static_files.as_ref()
    }

    /// Waits for a place among the argon2 verifications allowed to run at once, in `peer`'s
    /// turn (see [`Verifier`]); `None` at once when `peer` already has its share waiting.
    pub(crate) fn verification_slot(
        &self,
        peer: IpAddr,
    ) -> impl std::future::Future<Output = Option<Slot<'_>>> + Send {
        self.verifier.slot(peer)
    }

    /// Checks a secret against its PHC hash for a client at `peer` (a WebSocket login or a
    /// publish API request): off the executor, through the server's verification queue.
    pub(crate) async fn verify(
        &self,
        runtime: &dyn crate::Runtime,
        peer: IpAddr,
        v: rocket_proto::Verification,
    ) -> bool {
        let Some(_slot) = self.verification_slot(peer).await else {
            tracing::debug!(%peer, "too many verifications waiting from this address");
            return false;
        };
        let job = move || crate::verify_phc(&v.phc, &v.secret);
        runtime.unblock(Box::new(job)).await
    }

    /// What the server counts outside its hubs (for metrics).
    pub(crate) fn counters(&self) -> &ServerCounters {
        &self.counters
    }

    /// The `path` label of an HTTP request for `rocket_http_requests_total`: the path
    /// itself when the server knows it (an endpoint, a hub, the static files' prefix),
    /// else `other`, so that scanners cannot grow the label set.
    pub(crate) fn path_label<'p>(&self, path: &'p str) -> &'p str {
        let known = matches!(
            path,
            "/health" | "/ready" | "/metrics" | "/api/broadcast" | "/api/direct"
        ) || self.paths().any(|p| p == path);
        match self.static_files() {
            _ if known => path,
            Some(files) if files.covers(path) => files.prefix_label(),
            _ => "other",
        }
    }

    /// The configuration the server started with. A [reload](Self::reload) changes the
    /// hubs' users, engine limits and `AllowedOrigins` where they are used (the engines and
    /// the admission), not here.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The limits in force: the transport's, read at startup (a reload changes only the
    /// engine's `MaxSubscriptionsPerClient` and `MaxFailedAuth`, inside the engines).
    pub fn limits(&self) -> &Limits {
        &self.config.limits
    }

    /// The hub on `path`, if any.
    pub fn hub(&self, path: &str) -> Option<&Arc<Hub>> {
        self.hubs.iter().map(|e| &e.hub).find(|h| h.path() == path)
    }

    /// The hubs served.
    pub(crate) fn hubs(&self) -> impl Iterator<Item = &Arc<Hub>> {
        self.hubs.iter().map(|e| &e.hub)
    }

    /// Paths of the hubs served.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.hubs.iter().map(|e| e.hub.path())
    }

    /// Open connections holding a place under `MaxConnections`: WebSocket connections and
    /// plain HTTP connections (PROTOCOL.md: "An HTTP connection counts against
    /// `MaxConnections` while open").
    pub fn active_connections(&self) -> usize {
        self.gate.active()
    }

    /// A place under `MaxConnections` (and `MaxConnectionsPerIp`) for a connection from
    /// `peer`; `None` when none is free. An HTTP connection holds it while open and hands it
    /// to its WebSocket if it upgrades.
    pub(crate) fn take_place(&self, peer: IpAddr) -> Option<Permit> {
        self.gate.try_admit(peer).ok()
    }

    /// Takes a place for a TCP connection from `peer` that has not finished its handshake
    /// yet. At most `MaxConnections` such sockets exist at once, and at most
    /// `MaxConnectionsPerIp` from one address (no limit when 0), so a slowloris flood cannot
    /// exhaust file descriptors and one address cannot hold every place; past that, the
    /// frontend drops the socket. Dropping the permit frees the place.
    pub(crate) fn begin_handshake(&self, peer: IpAddr) -> Result<Permit, Full> {
        self.handshakes.try_admit(peer)
    }

    /// TCP connections still in their handshake.
    pub fn pending_handshakes(&self) -> usize {
        self.handshakes.active()
    }

    /// Whether [`shutdown`](Self::shutdown) was called.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// Starts a graceful shutdown: new handshakes get 503 and every connection flushes and
    /// closes with 1001 "server shutting down". Frontends then wait for
    /// [`active_connections`](Self::active_connections) to reach 0, then call
    /// [`stop_cluster`](Self::stop_cluster).
    pub fn shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
        for e in &self.hubs {
            e.hub.close_all(1001, "server shutting down");
            e.hub.stop_timer();
        }
    }

    /// The last step of a shutdown: gives the cluster backplane until `deadline` to send
    /// what the departed clients left to send (their leaves), then stops it.
    pub async fn stop_cluster(&self, runtime: &dyn crate::Runtime, deadline: std::time::Instant) {
        if let Some(cluster) = &self.cluster {
            while !cluster.is_idle() && runtime.now() < deadline {
                runtime.sleep(std::time::Duration::from_millis(10)).await;
            }
            cluster.stop();
        }
    }

    /// The tungstenite settings for every connection: a small read buffer
    /// (256 bytes; it grows to hold a larger message while it is read), a bounded write
    /// buffer (tungstenite writes only its control frames, pongs and close: the server's
    /// messages are written by the connection's [`Wire`](crate::Wire)), and
    /// `MaxMessageBytes` as the message and frame size limit.
    pub fn websocket_config(&self) -> WebSocketConfig {
        let max = self.config.limits.max_message_bytes;
        WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER_BYTES)
            .write_buffer_size(16 * 1024)
            .max_write_buffer_size(1024 * 1024 + max)
            .max_message_size(Some(max))
            .max_frame_size(Some(max))
    }

    /// Decides a handshake: the path (query ignored) must name a hub (else 404), a present
    /// `Origin` must be allowed by the hub (else 403), and a connection place must be free
    /// (else 503).
    pub(crate) fn admit(
        &self,
        request: &Request,
        peer: IpAddr,
        place: &mut Option<Permit>,
    ) -> Result<Admission, Refusal> {
        let refusal = self.decide(request, peer, place);
        if let Err(Refusal(StatusCode::SERVICE_UNAVAILABLE, _)) = &refusal {
            self.counters.refused(Refused::Unavailable);
        }
        refusal
    }

    fn decide(
        &self,
        request: &Request,
        peer: IpAddr,
        place: &mut Option<Permit>,
    ) -> Result<Admission, Refusal> {
        if self.is_shutting_down() {
            return Err(Refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "server shutting down",
            ));
        }
        let path = request.uri().path();
        let Some(entry) = self.hubs.iter().find(|e| e.hub.path() == path) else {
            self.counters.refused(Refused::NoHub);
            return Err(Refusal(StatusCode::NOT_FOUND, "no hub on this path"));
        };
        if let Some(origin) = request.headers().get(header::ORIGIN)
            && !entry.allowed_origins.allow(origin.as_bytes())
        {
            self.counters.refused(Refused::Origin);
            return Err(Refusal(StatusCode::FORBIDDEN, "origin not allowed"));
        }
        // The connection's own place, or one freed since it was accepted.
        let permit = match place.take() {
            Some(permit) => Ok(permit),
            None => self.gate.try_admit(peer),
        };
        match permit {
            Ok(permit) => Ok(Admission {
                hub: Arc::clone(&entry.hub),
                permit,
            }),
            Err(Full::Total) => Err(Refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many connections",
            )),
            Err(Full::PerIp) => Err(Refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many connections from this address",
            )),
        }
    }
}

fn check_no_collision(files: &StaticFiles, hub_path: &str) -> Result<(), ConfigError> {
    if files.covers(hub_path) {
        return Err(ConfigError::Invalid {
            key: format!("hub path {hub_path:?}"),
            reason: format!(
                "collides with the static files served under {} (the demo page of \
                 rocket-cli --demo): choose another hub path or leave the demo off",
                files.prefix()
            ),
        });
    }
    Ok(())
}

/// A handshake refused by [`ServerState::admit`]: the HTTP status and a short reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refusal(pub(crate) StatusCode, pub(crate) &'static str);

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.0.as_u16(), self.1)
    }
}

fn random_seed() -> HashSeed {
    let mut bytes = [0u8; 32];
    // Without OS randomness the maps' keys could be guessed; the server cannot run safely.
    getrandom::fill(&mut bytes).expect("the OS random generator is available");
    // `i` is 0..4, so each slice is 8 bytes of the 32.
    let word = |i: usize| u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
    HashSeed([word(0), word(1), word(2), word(3)])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(path: &str, origin: Option<&str>) -> Request {
        let mut b = Request::builder().uri(path);
        if let Some(o) = origin {
            b = b.header("Origin", o);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn max_connections_per_ip_bounds_pending_handshakes_per_address() {
        let config = Config::from_json(
            r#"{"Hubs":[{"Path":"/a"}],"Limits":{"MaxConnections":10,"MaxConnectionsPerIp":2}}"#,
        )
        .unwrap();
        let s = ServerState::new(config);
        let (a, b): (IpAddr, IpAddr) = ([127, 0, 0, 1].into(), [127, 0, 0, 2].into());
        let held: Vec<_> = (0..2).map(|_| s.begin_handshake(a).unwrap()).collect();
        assert_eq!(s.begin_handshake(a).unwrap_err(), Full::PerIp);
        let other = s
            .begin_handshake(b)
            .expect("another address still gets a place");
        assert_eq!(s.pending_handshakes(), 3);
        drop(held);
        assert!(s.begin_handshake(a).is_ok());
        drop(other);
        assert_eq!(s.pending_handshakes(), 0);
    }

    #[test]
    fn routes_by_exact_path_and_checks_origin_and_limits() {
        let config = Config::from_json(
            r#"{"Hubs":[{"Path":"/a"},{"Path":"/b","AllowedOrigins":["https://ok.example"]}],
                "Limits":{"MaxConnections":2}}"#,
        )
        .unwrap();
        let s = ServerState::new(config);
        let ip: IpAddr = [127, 0, 0, 1].into();
        let status = |r: Result<Admission, Refusal>| r.map(|_| ()).unwrap_err().0;
        assert_eq!(
            status(s.admit(&request("/a/", None), ip, &mut None)),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            status(s.admit(&request("/c", None), ip, &mut None)),
            StatusCode::NOT_FOUND
        );
        let b_bad = request("/b", Some("https://evil.example"));
        assert_eq!(
            status(s.admit(&b_bad, ip, &mut None)),
            StatusCode::FORBIDDEN
        );
        let a = s
            .admit(&request("/a?x=1", Some("https://anything")), ip, &mut None)
            .unwrap();
        assert_eq!(a.hub.path(), "/a");
        let b = s
            .admit(&request("/b", Some("https://ok.example")), ip, &mut None)
            .unwrap();
        assert_eq!(
            status(s.admit(&request("/b", None), ip, &mut None)),
            StatusCode::SERVICE_UNAVAILABLE
        );
        drop(b);
        assert!(
            s.admit(&request("/b", None), ip, &mut None).is_ok(),
            "no Origin: non-browser client"
        );
        drop(a);
        let pending: Vec<_> = (0..2).map(|_| s.begin_handshake(ip).unwrap()).collect();
        assert_eq!(
            s.begin_handshake(ip).unwrap_err(),
            Full::Total,
            "MaxConnections bounds pending handshakes"
        );
        drop(pending);
        assert_eq!(s.pending_handshakes(), 0);
        assert!(s.begin_handshake(ip).is_ok());
        s.shutdown();
        assert_eq!(
            status(s.admit(&request("/a", None), ip, &mut None)),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[test]
    fn hub_paths_may_not_collide_with_static_files() {
        let files = || crate::StaticFiles::new("/demo/", vec![]).unwrap();
        let state = |path: &str| {
            let json = format!(r#"{{"Hubs":[{{"Path":"{path}"}}]}}"#);
            ServerState::new(Config::from_json(&json).unwrap())
        };
        for path in ["/demo/chat", "/demo"] {
            let e = state(path)
                .with_static_files(files())
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&format!("{path:?}")) && e.contains("collides"),
                "{e}"
            );
        }
        let s = state("/demos").with_static_files(files()).unwrap();
        let c = Config::demo();
        let engine = || Engine::new(&c.engine_config(&c.hubs[0]), HashSeed::default());
        let e = s
            .with_protocol("/demo/x", engine())
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"/demo/x\"") && e.contains("collides"), "{e}");
    }
}
