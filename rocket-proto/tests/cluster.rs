//! The engine on a node of a cluster: what it tells its driver this node holds (`Watch`,
//! `Unwatch`), what it sends to the other nodes (`Publish`, `Operation::Publish`), how the
//! other nodes' answer decides the reply, and what other nodes' messages do here
//! (`docs/PROTOCOL.md`, "Cluster").

mod support;

use rocket_proto::{
    ClientId, Completion, Departure, EngineConfig, ErrorCode, HashSeed, HistoryRead, Joined, OpId,
    Operation, Output, Payload, Publication, Publish, PublishKind, PublishStep, Token, Topic,
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
        [Output::Publish(Box::new(Publication {
            topic: channel("news"),
            payload: Payload::text(delivered[0].clone()),
            history: None,
        }))],
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

/// A shared hub (History, Presence and JoinLeave in a cluster).
fn shared_sim() -> Sim {
    let json = r#"{"Users": {"admin": {"Secret": "s3cret", "Permission": 7}},
        "History": {"Size": 10, "TtlMs": 1000}, "Presence": true, "JoinLeave": true}"#;
    Sim::with_config(&clustered(json), HashSeed::default())
}

/// The last shared-store operation started, taken.
fn last_shared(sim: &mut Sim) -> (ClientId, OpId, Operation) {
    sim.shared.pop().expect("an operation on the store")
}

/// What a subscriber's departure from `channel` asks of the store.
fn departure_of(channel: &str, token: Token, join_leave: bool) -> Departure {
    let hex = token.to_string();
    let leave = format!(r#"{{"leave":{{"channel":"{channel}","client":"{hex}","user":"admin"}}}}"#);
    Departure::new(
        channel.into(),
        token,
        join_leave.then(|| Payload::text(leave)),
    )
}

fn joined(offset: u64, epoch: &str, recovery: Option<Option<Vec<&str>>>) -> Completion {
    let recovery = recovery.map(|r| r.map(|e| e.into_iter().map(Payload::text).collect()));
    Completion::Joined(Joined::new(offset, epoch.into(), recovery))
}

#[test]
fn a_shared_hub_subscribes_at_the_marker_and_leaves_through_the_store() {
    let mut sim = shared_sim();
    let a = admin(&mut sim);
    let ta = token_for(a.0);
    sim.cluster.clear();
    sim.send(a, json!({"subscribe": {"channel": "news"}}));
    assert!(sim.take(a).is_empty(), "the reply waits for the marker");
    assert_eq!(sim.cluster, [Output::Watch(channel("news"))]);
    let (client, op, Operation::Join(join)) = last_shared(&mut sim) else {
        panic!("a join")
    };
    assert_eq!(client, a);
    assert_eq!(
        (&*join.channel, join.token, &*join.user),
        ("news", ta, "admin")
    );
    assert!(join.presence && join.history.is_some() && join.since.is_none());
    let hex = ta.to_string();
    let join_event = json!({"join": {"channel": "news", "client": hex, "user": "admin"}});
    let leave_event = json!({"leave": {"channel": "news", "client": hex, "user": "admin"}});
    let text = |p: &Option<Payload>| {
        serde_json::from_str::<Value>(p.as_ref().unwrap().as_text().unwrap()).unwrap()
    };
    assert_eq!(text(&join.join), join_event);
    assert_eq!(text(&join.leave), leave_event);

    // What the channel carried before the marker is not the new subscriber's.
    sim.remote_broadcast(
        "news",
        Payload::text(r#"{"event":"e","channel":"news","offset":3,"epoch":"E"}"#),
    );
    assert!(sim.take(a).is_empty());
    sim.complete(op, joined(3, "E", None));
    assert_eq!(
        sim.take(a),
        [json!({"subscribed": "news", "offset": 3, "epoch": "E"})]
    );
    sim.remote_broadcast(
        "news",
        Payload::text(r#"{"event":"e","channel":"news","offset":4,"epoch":"E"}"#),
    );
    assert_eq!(sim.take(a).len(), 1, "after the marker it is");
    sim.complete(op, joined(9, "X", None));
    assert!(sim.take(a).is_empty(), "a second completion is ignored");

    // A broadcast goes to the store, which delivers it to every node, this one too (its
    // driver may answer it at once when it holds the channel); its answer decides.
    sim.cluster.clear();
    for (completion, reply) in [
        (Completion::Published(true), json!({"broadcasted": "news"})),
        (
            Completion::Published(false),
            json!({"err": "INVALID_CHANNEL"}),
        ),
        (Completion::Unavailable, json!({"err": "UNAVAILABLE"})),
    ] {
        sim.send(a, broadcast("news", json!(1)));
        assert!(sim.take(a).is_empty(), "the reply waits");
        let (_, op, publication) = sim.publications.pop().unwrap();
        assert!(publication.history.is_some());
        sim.complete(op, completion);
        assert_eq!(sim.take(a), [reply], "no local delivery");
    }
    assert!(
        sim.cluster.is_empty(),
        "nothing published but through the operation"
    );

    // History and presence are read from the store.
    sim.send(a, json!({"history": {"channel": "news", "limit": 2}}));
    let (_, op, operation) = last_shared(&mut sim);
    assert_eq!(
        operation,
        Operation::History {
            channel: "news".into(),
            limit: 2
        }
    );
    let event = r#"{"event":"e","channel":"news","offset":4,"epoch":"E"}"#;
    sim.complete(
        op,
        Completion::History(HistoryRead::new(4, "E".into(), vec![Payload::text(event)])),
    );
    assert_eq!(
        sim.take(a),
        [
            json!({"history": {"channel": "news", "offset": 4, "epoch": "E",
                            "events": [serde_json::from_str::<Value>(event).unwrap()]}})
        ]
    );
    sim.send(a, json!({"presence": {"channel": "news"}}));
    let (_, op, operation) = last_shared(&mut sim);
    assert_eq!(operation, Operation::Presence("news".into()));
    sim.complete(op, Completion::Presence(vec![(ta, "admin".into())]));
    assert_eq!(
        sim.take(a),
        [json!({"presence": {"channel": "news", "clients": {hex.clone(): {"user": "admin"}}}})]
    );
    sim.send(a, json!({"presence": {"channel": "news"}}));
    let (_, op, _) = last_shared(&mut sim);
    sim.complete(op, Completion::Unavailable);
    assert_eq!(sim.take(a), [json!({"err": "UNAVAILABLE"})]);

    // A second subscriber recovers; a re-subscribe announces no join.
    let b = admin(&mut sim);
    sim.cluster.clear();
    sim.send(
        b,
        json!({"subscribe": {"channel": "news", "since": {"offset": 3, "epoch": "E"}}}),
    );
    assert!(sim.cluster.is_empty(), "the node holds the channel already");
    let (_, op, Operation::Join(join)) = last_shared(&mut sim) else {
        panic!("a join")
    };
    assert_eq!(join.since, Some((3, "E".into())));
    sim.complete(op, joined(4, "E", Some(Some(vec![event]))));
    assert_eq!(
        sim.take(b),
        [
            json!({"subscribed": "news", "offset": 4, "epoch": "E", "recovered": true,
                "events": [serde_json::from_str::<Value>(event).unwrap()]})
        ]
    );
    sim.send(
        b,
        json!({"subscribe": {"channel": "news", "since": {"offset": 1, "epoch": "old"}}}),
    );
    let (_, op, Operation::Join(join)) = last_shared(&mut sim) else {
        panic!("a join")
    };
    assert_eq!(join.join, None, "subscribed already: no join");
    sim.complete(op, joined(4, "E", Some(None)));
    assert_eq!(
        sim.take(b),
        [json!({"subscribed": "news", "offset": 4, "epoch": "E", "recovered": false})]
    );

    // Leaving goes through the store; the node lets go of the channel with its last one.
    let tb = token_for(b.0);
    sim.send(b, json!({"unsubscribe": {"channel": "news"}}));
    assert_eq!(sim.take(b), [json!({"unsubscribed": "news"})]);
    assert!(
        sim.take(a).is_empty(),
        "the leave comes back from the store"
    );
    let [Output::Left(departure)] = &sim.cluster[..] else {
        panic!("{:?}", sim.cluster)
    };
    assert_eq!((&*departure.channel, departure.token), ("news", tb));
    sim.cluster.clear();
    sim.disconnect(a);
    assert_eq!(
        sim.cluster[..2],
        [
            Output::Unwatch(channel("news")),
            Output::Left(Box::new(departure_of("news", ta, true)))
        ]
    );
}

#[test]
fn a_join_that_fails_or_whose_client_goes_is_undone() {
    let mut sim = shared_sim();
    let a = admin(&mut sim);
    let ta = token_for(a.0);
    sim.cluster.clear();
    sim.send(a, json!({"subscribe": {"channel": "c"}}));
    let (_, op, _) = last_shared(&mut sim);
    sim.complete(op, Completion::Unavailable);
    assert_eq!(sim.take(a), [json!({"err": "UNAVAILABLE"})]);
    assert_eq!(
        sim.cluster,
        [
            Output::Watch(channel("c")),
            Output::Unwatch(channel("c")),
            Output::Left(Box::new(departure_of("c", ta, true)))
        ]
    );
    assert_eq!(sim.engine().subscriber_count("c"), 0);

    sim.cluster.clear();
    sim.send(a, json!({"subscribe": {"channel": "c"}}));
    let (_, op, _) = last_shared(&mut sim);
    sim.disconnect(a);
    assert_eq!(
        sim.cluster,
        [
            Output::Watch(channel("c")),
            Output::Unwatch(channel("c")),
            Output::Left(Box::new(departure_of("c", ta, true))),
            Output::Unwatch(Topic::Client(ta)),
        ],
        "a join under way is undone with its client"
    );
    sim.complete(op, joined(0, "E", None));
    assert!(sim.engine().is_idle());
}

#[test]
fn joins_and_leaves_from_the_store_reach_every_subscriber_but_their_subject() {
    let mut sim = shared_sim();
    let (a, b) = (admin(&mut sim), admin(&mut sim));
    for id in [a, b] {
        sim.send(id, json!({"subscribe": {"channel": "c"}}));
        let (_, op, _) = last_shared(&mut sim);
        sim.complete(op, joined(0, "E", None));
        sim.take(id);
    }
    let leave = format!(
        r#"{{"leave":{{"channel":"c","client":"{}","user":"admin"}}}}"#,
        token_for(b.0)
    );
    sim.engine_mut()
        .handle_remote_about("c", token_for(b.0), Payload::text(leave.clone()));
    sim.drive();
    assert_eq!(sim.take_text(a), std::slice::from_ref(&leave));
    assert!(sim.take(b).is_empty(), "nobody hears of itself");
    sim.engine_mut()
        .handle_remote_about("elsewhere", token_for(b.0), Payload::text(leave));
    sim.drive();
    sim.assert_silent();
}
