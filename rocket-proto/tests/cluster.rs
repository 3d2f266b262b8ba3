//! The engine on a node of a cluster: what it tells its driver this node holds (`Watch`,
//! `Unwatch`), what it sends to the other nodes (`Publish`, `Operation::Publish`), how the
//! other nodes' answer decides the reply, and what other nodes' messages do here
//! (`docs/PROTOCOL.md`, "Cluster").

mod support;

use rocket_proto::{
    ClientId, Completion, EngineConfig, ErrorCode, HashSeed, Output, Payload, Publication, Publish,
    PublishKind, PublishStep, Topic,
};
use serde_json::{Value, json};
use support::{Sim, token_for};

const USERS: &str = r#"{"Users": {
    "admin": {"Secret": "s3cret", "Permission": 7},
    "reader": {"Secret": "r", "Permission": 1}
}}"#;

fn clustered(json: &str) -> EngineConfig {
    let mut config = EngineConfig::from_json(json).unwrap();
    config.cluster = true;
    config.validate().unwrap();
    config
}

fn sim() -> Sim {
    Sim::with_config(&clustered(USERS), HashSeed::default())
}

fn channel(name: &str) -> Topic {
    Topic::Channel(name.into())
}

/// A connected client authenticated as admin; its greeting and reply are taken.
fn admin(sim: &mut Sim) -> ClientId {
    let id = sim.connect();
    sim.take(id);
    sim.auth(id, "admin", "s3cret");
    id
}

fn broadcast(channel: &str, data: Value) -> Value {
    json!({"broadcast": {"event": "e", "channel": channel, "data": data}})
}

#[test]
fn a_node_watches_its_clients_and_the_channels_it_has_subscribers_of() {
    let mut sim = sim();
    let a = admin(&mut sim);
    let b = admin(&mut sim);
    let (ta, tb) = (token_for(a.0), token_for(b.0));
    assert_eq!(
        std::mem::take(&mut sim.cluster),
        [
            Output::Watch(Topic::Client(ta)),
            Output::Watch(Topic::Client(tb))
        ]
    );
    sim.subscribe(a, "news");
    sim.subscribe(b, "news");
    sim.subscribe(b, "news"); // again: harmless
    assert_eq!(
        std::mem::take(&mut sim.cluster),
        [Output::Watch(channel("news"))],
        "watched once, on the first local subscriber"
    );
    sim.request(a, json!({"unsubscribe": {"channel": "news"}}));
    assert!(sim.cluster.is_empty(), "b is still subscribed");
    sim.request(b, json!({"logout": true}));
    assert_eq!(
        std::mem::take(&mut sim.cluster),
        [Output::Unwatch(channel("news"))],
        "the last local subscriber left"
    );
    sim.subscribe(a, "sport");
    sim.disconnect(a);
    assert_eq!(
        std::mem::take(&mut sim.cluster),
        [
            Output::Watch(channel("sport")),
            Output::Unwatch(channel("sport")),
            Output::Unwatch(Topic::Client(ta)),
        ],
        "a departure leaves its channels, then its token"
    );
    sim.disconnect(b);
    assert_eq!(sim.cluster, [Output::Unwatch(Topic::Client(tb))]);
    assert!(sim.engine().is_idle());
}

#[test]
fn a_broadcast_with_local_subscribers_is_answered_at_once_and_published_once() {
    let mut sim = sim();
    let a = admin(&mut sim);
    let b = admin(&mut sim);
    sim.subscribe(b, "news");
    sim.cluster.clear();
    sim.send(a, broadcast("news", json!([1, 2])));
    assert_eq!(sim.take(a), [json!({"broadcasted": "news"})]);
    let delivered = sim.take_text(b);
    let event = json!({"event": "e", "channel": "news", "data": [1, 2]});
    assert_eq!(delivered.len(), 1);
    assert_eq!(serde_json::from_str::<Value>(&delivered[0]).unwrap(), event);
    assert_eq!(
        sim.cluster,
        [Output::Publish(Publication {
            topic: channel("news"),
            payload: Payload::text(delivered[0].clone()),
        })],
        "the other nodes get the same event bytes, once"
    );
    assert!(
        sim.publications.is_empty(),
        "no operation: nothing to wait for"
    );
}

#[test]
fn a_broadcast_without_local_subscribers_asks_the_other_nodes() {
    let mut sim = sim();
    let a = admin(&mut sim);
    sim.cluster.clear();
    sim.send(a, broadcast("elsewhere", json!(1)));
    assert!(
        sim.take(a).is_empty(),
        "the reply waits for the other nodes"
    );
    let (client, op, publication) = sim.publications.pop().unwrap();
    assert_eq!(client, a);
    assert_eq!(publication.topic, channel("elsewhere"));
    let event: Value = serde_json::from_slice(publication.payload.as_bytes()).unwrap();
    assert_eq!(
        event,
        json!({"event": "e", "channel": "elsewhere", "data": 1})
    );
    assert!(
        sim.cluster.is_empty(),
        "published by the operation, not twice"
    );
    sim.complete(op, Completion::Published(true));
    assert_eq!(sim.take(a), [json!({"broadcasted": "elsewhere"})]);
    assert_eq!(sim.engine().stats().broadcasts, 1);

    // No node held it: the error a single node gives.
    sim.send(a, broadcast("nowhere", json!(2)));
    let (_, op, _) = sim.publications.pop().unwrap();
    sim.complete(op, Completion::Published(false));
    assert_eq!(sim.take(a), [json!({"err": "INVALID_CHANNEL"})]);
    assert_eq!(sim.engine().stats().broadcasts, 1, "not accepted");

    // A completion again, or of the wrong kind, is ignored.
    sim.complete(op, Completion::Published(true));
    assert!(sim.take(a).is_empty());
    let engine = format!("{:?}", sim.engine());
    assert!(engine.contains("pending_operations: 0"), "{engine}");
}

#[test]
fn a_local_subscriber_that_appeared_meanwhile_gets_the_broadcast_once() {
    let mut sim = sim();
    let a = admin(&mut sim);
    let b = admin(&mut sim);
    sim.send(a, broadcast("c", json!("x")));
    let (_, op, _) = sim.publications.pop().unwrap();
    sim.subscribe(b, "c");
    // Even if no other node held it, b was subscribed when the answer came.
    sim.complete(op, Completion::Published(false));
    assert_eq!(sim.take(a), [json!({"broadcasted": "c"})]);
    assert_eq!(
        sim.take(b),
        [json!({"event": "e", "channel": "c", "data": "x"})]
    );
}

#[test]
fn direct_messages_to_tokens_of_other_nodes_are_published_to_the_token() {
    let mut sim = sim();
    let a = admin(&mut sim);
    let far = token_for(999);
    let far_hex = far.to_string();
    sim.send(
        a,
        json!({"direct": {"event": "hi", "client": far_hex, "data": 5}}),
    );
    assert!(sim.take(a).is_empty());
    let (_, op, publication) = sim.publications.pop().unwrap();
    assert_eq!(publication.topic, Topic::Client(far));
    let message: Value = serde_json::from_slice(publication.payload.as_bytes()).unwrap();
    assert_eq!(
        message,
        json!({"event": "hi", "from": token_for(a.0).to_string(), "data": 5})
    );
    sim.complete(op, Completion::Published(true));
    assert_eq!(sim.take(a), [json!({"directSent": far_hex})]);
    assert_eq!(sim.engine().stats().directs, 1);

    sim.send(
        a,
        json!({"direct": {"event": "hi", "client": far_hex, "data": 6}}),
    );
    let (_, op, _) = sim.publications.pop().unwrap();
    sim.complete(op, Completion::Published(false));
    assert_eq!(sim.take(a), [json!({"err": "INVALID_CLIENT"})]);

    // Not a token at all: no node can hold it, nothing is published.
    let reply = sim.request(
        a,
        json!({"direct": {"event": "hi", "client": "not-a-token"}}),
    );
    assert_eq!(reply, json!({"err": "INVALID_CLIENT"}));
    assert!(sim.publications.is_empty());

    // A local token is delivered here, not published.
    let b = admin(&mut sim);
    let b_hex = sim.token(b);
    sim.send(a, json!({"direct": {"event": "hi", "client": b_hex}}));
    assert_eq!(sim.take(a), [json!({"directSent": b_hex})]);
    assert_eq!(sim.take(b).len(), 1);
    assert!(sim.publications.is_empty());
    assert!(
        !sim.cluster.iter().any(|o| matches!(o, Output::Publish(_))),
        "{:?}",
        sim.cluster
    );
}

#[test]
fn the_checks_before_the_target_are_answered_without_asking_the_other_nodes() {
    let mut sim = sim();
    let r = sim.connect();
    sim.take(r);
    sim.auth(r, "reader", "r");
    let reply = sim.request(r, broadcast("c", json!(1)));
    assert_eq!(reply, json!({"err": "ACCESS_DENIED"}));
    let reply = sim.request(r, json!({"broadcast": {"channel": "c"}}));
    assert_eq!(reply, json!({"err": "INVALID_PAYLOAD"}));
    assert!(sim.publications.is_empty());
}

#[test]
fn a_publication_in_flight_is_forgotten_with_its_client() {
    let mut sim = sim();
    let a = admin(&mut sim);
    sim.send(a, broadcast("c", json!(1)));
    let (_, op, _) = sim.publications.pop().unwrap();
    sim.disconnect(a);
    sim.complete(op, Completion::Published(true));
    assert!(sim.engine().is_idle(), "{:?}", sim.engine());
}

#[test]
fn messages_from_other_nodes_reach_local_holders_only() {
    let mut sim = sim();
    let a = admin(&mut sim);
    let b = admin(&mut sim);
    sim.subscribe(a, "news");
    let event = Payload::text(r#"{"event":"e","channel":"news","data":1}"#);
    sim.remote(&channel("news"), event.clone());
    assert_eq!(
        sim.take_text(a),
        [r#"{"event":"e","channel":"news","data":1}"#]
    );
    assert!(sim.take(b).is_empty());
    sim.remote(&channel("other"), event);
    assert!(sim.take(a).is_empty());

    let direct = Payload::text(r#"{"event":"d","data":2}"#);
    sim.remote(&Topic::Client(token_for(b.0)), direct.clone());
    assert_eq!(sim.take_text(b), [r#"{"event":"d","data":2}"#]);
    sim.remote(&Topic::Client(token_for(12345)), direct);
    assert!(sim.take(a).is_empty() && sim.take(b).is_empty());
    assert_eq!(sim.engine().stats().deliveries, 2);
    assert!(
        !sim.cluster.iter().any(|o| matches!(o, Output::Publish(_))),
        "nothing received is published again"
    );
}

#[test]
fn the_publish_api_asks_the_other_nodes_too() {
    let mut sim = sim();
    let engine = sim.engine_mut();
    let body = br#"{"hub":"/h","channel":"c","event":"e","data":1}"#;
    let publish = Publish::parse(PublishKind::Broadcast, body).unwrap();
    let PublishStep::Publish(publication) = engine.handle_publish(&publish, "admin", "s3cret")
    else {
        panic!("expected a publication")
    };
    assert_eq!(publication.topic, channel("c"));
    assert_eq!(
        engine.handle_publish_published(&publication, false),
        Err(ErrorCode::InvalidChannel)
    );
    let reply = engine.handle_publish_published(&publication, true).unwrap();
    assert_eq!(reply.as_text(), Some(r#"{"broadcasted":"c"}"#));

    let body = format!(r#"{{"hub":"/h","client":"{}","event":"e"}}"#, token_for(7));
    let publish = Publish::parse(PublishKind::Direct, body.as_bytes()).unwrap();
    let PublishStep::Publish(publication) = engine.handle_publish(&publish, "admin", "s3cret")
    else {
        panic!("expected a publication")
    };
    assert_eq!(publication.topic, Topic::Client(token_for(7)));
    assert_eq!(
        publication.payload.as_text(),
        Some(r#"{"event":"e"}"#),
        "no from"
    );
    assert_eq!(
        engine.handle_publish_published(&publication, false),
        Err(ErrorCode::InvalidClient)
    );
}

#[test]
fn a_single_node_engine_says_nothing_of_clusters() {
    let mut sim = Sim::new(USERS);
    let a = admin(&mut sim);
    sim.subscribe(a, "news");
    sim.send(a, broadcast("news", json!(1)));
    sim.send(a, broadcast("none", json!(1)));
    sim.disconnect(a);
    assert!(sim.cluster.is_empty());
    assert!(sim.publications.is_empty());
}

#[test]
fn node_local_features_are_refused_in_a_cluster() {
    for (setting, key) in [
        (r#""History": {"Size": 10, "TtlMs": 1000}"#, "History"),
        (r#""Presence": true"#, "Presence"),
        (r#""JoinLeave": true"#, "JoinLeave"),
    ] {
        let json = format!(r#"{{"Users": {{}}, {setting}}}"#);
        let mut config = EngineConfig::from_json(&json).unwrap();
        config.cluster = true;
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains(key), "{error}");
        assert!(error.contains("cluster"), "{error}");
    }
}
