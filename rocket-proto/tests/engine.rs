//! Unit tests of the engine: every action, every reply and error, every permission value,
//! the check order, the limits, hub isolation and state hygiene (`docs/PROTOCOL.md`).

mod support;

use rocket_proto::{
    ClientId, Completion, ConnectError, Engine, EngineConfig, ErrorCode, HashSeed, Message, OpId,
    Output, Payload, Protocol, Publish, PublishKind, PublishStep, Token,
};
use serde_json::{Value, json};
use support::{Received, Sim, config, token_for};

fn err(code: &str) -> Value {
    json!({ "err": code })
}

fn invalid() -> Value {
    err("INVALID_PAYLOAD")
}

/// The users most tests need, with default limits.
fn users() -> Value {
    json!({
        "admin": { "Secret": "s3cret", "Permission": 7 },
        "public": { "Secret": "", "Permission": 3 },
        "reader": { "Secret": "r", "Permission": 1 },
        "writer": { "Secret": "w", "Permission": 2 },
        "nobody": { "Secret": "n", "Permission": 0 },
    })
}

fn sim() -> Sim {
    Sim::new(&config(users(), json!({})))
}

fn sim_with_limits(limits: Value) -> Sim {
    Sim::new(&config(users(), limits))
}

fn subscribe(channel: &str) -> Value {
    json!({ "subscribe": { "channel": channel } })
}

fn unsubscribe(channel: &str) -> Value {
    json!({ "unsubscribe": { "channel": channel } })
}

fn authenticate(user: &str, secret: &str) -> Value {
    json!({ "authenticate": { "user": user, "secret": secret } })
}

fn broadcast(event: &str, channel: &str, data: Value) -> Value {
    json!({ "broadcast": { "event": event, "channel": channel, "data": data } })
}

fn direct(event: &str, client: &str, data: Value) -> Value {
    json!({ "direct": { "event": event, "client": client, "data": data } })
}

// ---------------------------------------------------------------------------------------
// Greeting and connection

#[test]
fn greeting_is_the_token_in_32_lowercase_hex() {
    let mut sim = sim();
    let tokens = [
        Token::from_bytes([0xab; 16]),
        Token::from_bytes([0; 16]),
        Token::from_bytes([0xff; 16]),
        Token::from_bytes(*b"\x01\x23\x45\x67\x89\xab\xcd\xef\xfe\xdc\xba\x98\x76\x54\x32\x10"),
    ];
    for (i, token) in tokens.into_iter().enumerate() {
        let id = ClientId(100 + i as u64);
        sim.connect_with(id, token).unwrap();
        let greeting = sim.one(id);
        let text = greeting["connected"]
            .as_str()
            .expect("connected is a string");
        assert_eq!(greeting.as_object().unwrap().len(), 1, "{greeting}");
        assert_eq!(text.len(), 32, "{text}");
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "{text}"
        );
        assert_eq!(Token::parse(text), Some(token));
    }
    assert_eq!(
        sim.take(ClientId(103)),
        Vec::<Value>::new(),
        "greeting already taken"
    );
    let id = ClientId(103);
    assert_eq!(sim.token(id), "0123456789abcdeffedcba9876543210");
}

#[test]
fn connect_refuses_a_live_id_or_token_and_leaves_no_trace() {
    let mut sim = sim();
    let a = sim.connect();
    let b = sim.connect();
    let token_a = Token::parse(&sim.token(a)).unwrap();
    assert_eq!(
        sim.connect_with(a, token_for(999)),
        Err(ConnectError::DuplicateClient(a))
    );
    assert_eq!(
        sim.connect_with(ClientId(50), token_a),
        Err(ConnectError::DuplicateToken)
    );
    sim.assert_silent();
    assert_eq!(sim.engine().client_count(), 2);
    // The refused connection left nothing: its id is unknown, and token_for(999) is free.
    sim.engine_mut()
        .handle_message(ClientId(50), Message::Text(r#"{"logout":true}"#));
    sim.drive();
    sim.assert_silent();
    let reply = sim.request(b, direct("e", &token_for(999).to_string(), json!(1)));
    assert_eq!(reply, err("ACCESS_DENIED"), "anonymous first");
    sim.auth(b, "admin", "s3cret");
    let reply = sim.request(b, direct("e", &token_for(999).to_string(), json!(1)));
    assert_eq!(reply, err("INVALID_CLIENT"));
    // A token becomes free again once its client left.
    sim.disconnect(a);
    sim.connect_with(ClientId(51), token_a).unwrap();
    assert_eq!(
        sim.one(ClientId(51)),
        json!({ "connected": token_a.to_string() })
    );
}

// ---------------------------------------------------------------------------------------
// authenticate

#[test]
fn authenticate_success_replies_with_the_user_name() {
    let mut sim = sim();
    let c = sim.connect();
    assert_eq!(
        sim.request(c, authenticate("admin", "s3cret")),
        json!({ "authenticated": "admin" })
    );
    // The session grants the user's permissions.
    sim.subscribe(c, "news");
}

#[test]
fn authenticate_unknown_user_is_invalid_user_and_leaves_anonymous() {
    let mut sim = sim();
    let c = sim.connect();
    sim.auth(c, "admin", "s3cret");
    for user in ["mallory", "Admin", "admin ", "ádmin"] {
        assert_eq!(
            sim.request(c, authenticate(user, "s3cret")),
            err("INVALID_USER"),
            "{user}"
        );
    }
    assert_eq!(sim.request(c, subscribe("news")), err("ACCESS_DENIED"));
}

#[test]
fn authenticate_wrong_secret_is_invalid_credentials_and_leaves_anonymous() {
    let mut sim = sim_with_limits(json!({ "MaxFailedAuth": 0 }));
    let c = sim.connect();
    for secret in ["", "s3cre", "s3cret ", "S3CRET", "s3cret\u{0}", "x"] {
        sim.auth(c, "admin", "s3cret");
        assert_eq!(
            sim.request(c, authenticate("admin", secret)),
            err("INVALID_CREDENTIALS"),
            "{secret:?}"
        );
        assert_eq!(sim.request(c, subscribe("news")), err("ACCESS_DENIED"));
        assert_eq!(
            sim.request(c, broadcast("e", "news", json!(1))),
            err("ACCESS_DENIED")
        );
    }
}

#[test]
fn failed_authentications_are_reported_for_the_log_without_the_secret() {
    let mut sim = sim();
    let c = sim.connect();
    sim.request(c, authenticate("ghost", "pw1"));
    sim.request(c, authenticate("admin", "pw2"));
    sim.auth(c, "admin", "s3cret");
    assert_eq!(
        sim.auth_failures,
        [
            (c, "ghost".to_owned(), "INVALID_USER"),
            (c, "admin".to_owned(), "INVALID_CREDENTIALS")
        ]
    );
}

const PHC: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG";

fn phc_sim(limits: Value) -> Sim {
    Sim::new(&config(
        json!({ "hashed": { "Secret": PHC, "Permission": 3 } }),
        limits,
    ))
}

#[test]
fn a_phc_secret_is_verified_by_the_frontend_before_the_reply() {
    let mut sim = phc_sim(json!({}));
    let c = sim.connect();
    sim.send(c, authenticate("hashed", "guess"));
    assert!(sim.take(c).is_empty(), "no reply before the verification");
    assert_eq!(sim.verifications, [(c, PHC.to_owned(), "guess".to_owned())]);
    sim.verified(c, true);
    assert_eq!(sim.take(c), [json!({ "authenticated": "hashed" })]);
    sim.subscribe(c, "news");
    // A failed verification is INVALID_CREDENTIALS, counted and logged like a wrong secret.
    sim.send(c, authenticate("hashed", "wrong"));
    assert_eq!(
        sim.engine().subscriber_count("news"),
        0,
        "the old session ended at once"
    );
    sim.verified(c, false);
    assert_eq!(sim.take(c), [err("INVALID_CREDENTIALS")]);
    assert_eq!(
        sim.auth_failures,
        [(c, "hashed".to_owned(), "INVALID_CREDENTIALS")]
    );
    assert_eq!(sim.request(c, subscribe("news")), err("ACCESS_DENIED"));
    // Stale or unasked answers change nothing.
    sim.verified(c, true);
    assert!(sim.take(c).is_empty());
    assert_eq!(sim.request(c, subscribe("news")), err("ACCESS_DENIED"));
}

#[test]
fn phc_failures_count_towards_max_failed_auth_and_departed_clients_are_ignored() {
    let mut sim = phc_sim(json!({ "MaxFailedAuth": 2 }));
    let c = sim.connect();
    for _ in 0..2 {
        sim.send(c, authenticate("hashed", "x"));
        sim.verified(c, false);
    }
    let got = sim.take_raw(c);
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(
        matches!(&got[2], Received::Close { code: 1008, .. }),
        "{got:?}"
    );
    let d = sim.connect();
    sim.send(d, authenticate("hashed", "x"));
    sim.disconnect(d);
    sim.verified(d, true); // the answer arrives after the client left
    assert!(sim.engine().client_count() == 0 || sim.take_raw(d).is_empty());
}

#[test]
fn each_verification_gets_a_fresh_operation_id_for_its_client() {
    let mut sim = phc_sim(json!({}));
    let (c, d) = (sim.connect(), sim.connect());
    sim.send(c, authenticate("hashed", "one"));
    sim.send(d, authenticate("hashed", "two"));
    let (op_c, op_d) = (sim.last_op(c).unwrap(), sim.last_op(d).unwrap());
    assert_ne!(op_c, op_d);
    assert_eq!(sim.started, [(c, op_c), (d, op_d)]);
    // Completions may come in any order; each concludes its own client.
    sim.complete(op_d, Completion::SecretVerified(false));
    assert_eq!(sim.take(d), [err("INVALID_CREDENTIALS")]);
    assert!(sim.take(c).is_empty());
    sim.complete(op_c, Completion::SecretVerified(true));
    assert_eq!(sim.take(c), [json!({ "authenticated": "hashed" })]);
    // A completed operation is over: its id is not awaited any more.
    sim.complete(op_c, Completion::SecretVerified(false));
    sim.assert_silent();
    sim.send(d, authenticate("hashed", "three"));
    assert!(sim.last_op(d).unwrap() > op_d, "ids are never reused");
}

#[test]
fn unknown_operation_ids_are_ignored() {
    let mut sim = phc_sim(json!({}));
    let c = sim.connect();
    sim.complete(OpId(1), Completion::SecretVerified(true));
    sim.complete(OpId(u64::MAX), Completion::SecretVerified(true));
    sim.assert_silent();
    assert!(sim.auth_failures.is_empty());
    assert_eq!(sim.request(c, subscribe("news")), err("ACCESS_DENIED"));
    // With a verification outstanding, another id still changes nothing.
    sim.send(c, authenticate("hashed", "guess"));
    let op = sim.last_op(c).unwrap();
    sim.complete(OpId(op.0 + 1), Completion::SecretVerified(true));
    sim.assert_silent();
    sim.complete(op, Completion::SecretVerified(true));
    assert_eq!(sim.take(c), [json!({ "authenticated": "hashed" })]);
}

#[test]
fn a_completion_after_its_client_disconnected_is_ignored() {
    let mut sim = phc_sim(json!({}));
    let c = sim.connect();
    sim.send(c, authenticate("hashed", "guess"));
    let op = sim.last_op(c).unwrap();
    sim.disconnect(c);
    assert!(
        sim.engine().is_idle(),
        "the pending operation left with its client"
    );
    sim.complete(op, Completion::SecretVerified(true));
    sim.assert_silent();
    assert!(sim.engine().is_idle());
    // A new client, even with the same id, is not concluded by the old operation.
    sim.connect_with(c, token_for(77)).unwrap();
    sim.take(c);
    sim.complete(op, Completion::SecretVerified(true));
    assert!(sim.take(c).is_empty());
    assert_eq!(sim.request(c, subscribe("news")), err("ACCESS_DENIED"));
}

#[test]
fn a_completion_after_its_client_re_authenticated_is_ignored() {
    let mut sim = Sim::new(&config(
        json!({
            "hashed": { "Secret": PHC, "Permission": 3 },
            "reader": { "Secret": "r", "Permission": 1 },
        }),
        json!({}),
    ));
    let c = sim.connect();
    // A frontend holds frames back while verifying; the engine must cope if one does not.
    sim.send(c, authenticate("hashed", "guess"));
    let first = sim.last_op(c).unwrap();
    sim.auth(c, "reader", "r");
    sim.complete(first, Completion::SecretVerified(true));
    sim.assert_silent();
    assert_eq!(
        sim.request(c, json!({"broadcast": {"event": "e", "channel": "x"}})),
        err("ACCESS_DENIED"),
        "still the reader"
    );
    // Logout and a second verification: only the newest operation counts.
    sim.send(c, authenticate("hashed", "guess"));
    let second = sim.last_op(c).unwrap();
    assert_eq!(
        sim.request(c, json!({"logout": true})),
        json!({"loggedOut": true})
    );
    sim.complete(second, Completion::SecretVerified(true));
    sim.assert_silent();
    sim.send(c, authenticate("hashed", "guess"));
    let third = sim.last_op(c).unwrap();
    sim.complete(second, Completion::SecretVerified(true));
    sim.assert_silent();
    sim.complete(third, Completion::SecretVerified(false));
    assert_eq!(sim.take(c), [err("INVALID_CREDENTIALS")]);
    sim.disconnect(c);
    assert!(sim.engine().is_idle());
}

#[test]
fn a_user_with_an_empty_secret_accepts_any_secret() {
    let mut sim = sim();
    let c = sim.connect();
    let long = "k".repeat(10_000);
    for secret in ["", "anything", "s3cret", "\u{0}", "é\"\\", long.as_str()] {
        sim.auth(c, "public", secret);
        sim.subscribe(c, "news");
    }
}

#[test]
fn reauthenticating_drops_subscriptions_silently() {
    let mut sim = sim();
    let (c, other) = (sim.connect(), sim.connect());
    sim.auth(c, "admin", "s3cret");
    sim.auth(other, "admin", "s3cret");
    sim.subscribe(c, "a");
    sim.subscribe(c, "b");
    sim.subscribe(other, "b");
    // Success as another user: the only reply is `authenticated`, no `unsubscribed`.
    assert_eq!(
        sim.take(c),
        Vec::<Value>::new(),
        "nothing pending before the test"
    );
    sim.send(c, authenticate("public", "x"));
    assert_eq!(sim.take(c), vec![json!({ "authenticated": "public" })]);
    assert_eq!(sim.engine().channel_count(), 1, "`a` had only c");
    assert_eq!(sim.engine().subscriber_count("a"), 0);
    assert_eq!(sim.engine().subscriber_count("b"), 1);
    // c gets no more deliveries from b.
    assert_eq!(
        sim.take(other),
        Vec::<Value>::new(),
        "nothing pending before broadcast"
    );
    sim.send(other, broadcast("e", "b", json!(1)));
    assert_eq!(
        sim.take(other),
        vec![
            json!({ "event": "e", "channel": "b", "data": 1 }),
            json!({ "broadcasted": "b" })
        ]
    );
    sim.assert_silent();
    // The same happens when re-authenticating as the same user, and on a failure.
    sim.subscribe(c, "a");
    sim.auth(c, "public", "y");
    assert_eq!(sim.engine().subscriber_count("a"), 0);
    sim.subscribe(c, "a");
    assert_eq!(
        sim.request(c, authenticate("public2", "")),
        err("INVALID_USER")
    );
    assert_eq!(sim.engine().subscriber_count("a"), 0);
    assert_eq!(sim.engine().channel_count(), 1);
}

#[test]
fn reauthenticating_changes_permissions() {
    let mut sim = sim();
    let c = sim.connect();
    sim.auth(c, "reader", "r");
    sim.subscribe(c, "news");
    assert_eq!(
        sim.request(c, broadcast("e", "news", Value::Null)),
        err("ACCESS_DENIED")
    );
    sim.auth(c, "writer", "w");
    assert_eq!(sim.request(c, subscribe("news")), err("ACCESS_DENIED"));
    // `news` vanished with the reader session, so the writer's broadcast finds no channel.
    assert_eq!(
        sim.request(c, broadcast("e", "news", Value::Null)),
        err("INVALID_CHANNEL")
    );
}

// ---------------------------------------------------------------------------------------
// subscribe / unsubscribe

#[test]
fn subscribe_creates_the_channel_and_needs_a_session() {
    let mut sim = sim();
    let c = sim.connect();
    assert_eq!(sim.request(c, subscribe("news")), err("ACCESS_DENIED"));
    assert_eq!(sim.engine().channel_count(), 0);
    sim.auth(c, "reader", "r");
    assert_eq!(
        sim.request(c, subscribe("news")),
        json!({ "subscribed": "news" })
    );
    assert_eq!(sim.engine().channel_count(), 1);
    assert_eq!(sim.engine().subscriber_count("news"), 1);
    assert_eq!(sim.engine().subscriber_count("News"), 0, "names are exact");
}

#[test]
fn resubscribing_is_idempotent_without_duplicate_deliveries() {
    let mut sim = sim();
    let (c, w) = (sim.connect(), sim.connect());
    sim.auth(c, "reader", "r");
    sim.auth(w, "writer", "w");
    for _ in 0..3 {
        assert_eq!(
            sim.request(c, subscribe("news")),
            json!({ "subscribed": "news" })
        );
    }
    assert_eq!(sim.engine().subscriber_count("news"), 1);
    sim.send(w, broadcast("e", "news", json!("x")));
    assert_eq!(sim.take(w), vec![json!({ "broadcasted": "news" })]);
    assert_eq!(
        sim.take(c),
        vec![json!({ "event": "e", "channel": "news", "data": "x" })]
    );
    // One unsubscribe is enough to leave.
    assert_eq!(
        sim.request(c, unsubscribe("news")),
        json!({ "unsubscribed": "news" })
    );
    assert_eq!(
        sim.request(w, broadcast("e", "news", json!("x"))),
        err("INVALID_CHANNEL")
    );
}

#[test]
fn unsubscribe_succeeds_when_not_subscribed_and_needs_no_permission() {
    let mut sim = sim();
    let (anon, nobody, reader) = (sim.connect(), sim.connect(), sim.connect());
    sim.auth(nobody, "nobody", "n");
    sim.auth(reader, "reader", "r");
    sim.subscribe(reader, "news");
    for c in [anon, nobody, reader] {
        for channel in ["news", "never-existed"] {
            assert_eq!(
                sim.request(c, unsubscribe(channel)),
                json!({ "unsubscribed": channel })
            );
        }
    }
    assert_eq!(sim.engine().channel_count(), 0, "no channel is created");
    sim.assert_silent();
}

#[test]
fn names_with_escapes_round_trip() {
    let mut sim = sim();
    let c = sim.connect();
    sim.auth(c, "admin", "s3cret");
    let name = "a\"b\\c\n\u{1}é\u{2028}🚀";
    sim.subscribe(c, name);
    // The escaped form in the request names the same channel.
    sim.send_text(
        c,
        r#"{"broadcast":{"event":"\u0065","channel":"a\"b\\c\n\u0001\u00e9\u2028\ud83d\ude80"}}"#,
    );
    assert_eq!(
        sim.take(c),
        vec![
            json!({ "event": "e", "channel": name }),
            json!({ "broadcasted": name })
        ]
    );
}

// ---------------------------------------------------------------------------------------
// broadcast

/// A hub with a subscribed listener `l`, a subscribed writer `w` and an unsubscribed
/// admin `a`, all on channel `news` (except `a`).
fn news() -> (Sim, ClientId, ClientId, ClientId) {
    let mut sim = sim();
    let (l, w, a) = (sim.connect(), sim.connect(), sim.connect());
    sim.auth(l, "reader", "r");
    sim.auth(w, "public", "");
    sim.auth(a, "admin", "s3cret");
    sim.subscribe(l, "news");
    sim.subscribe(w, "news");
    (sim, l, w, a)
}

#[test]
fn broadcast_delivers_data_of_every_kind() {
    let (mut sim, l, w, a) = news();
    for data in [
        json!({ "k": [1, 2.5, "x", null, true, { "n": {} }] }),
        Value::Null,
        json!(false),
        json!(0),
        json!(-9_223_372_036_854_775_808i64),
        json!(18_446_744_073_709_551_615u64),
        json!(1.0e300),
        json!("text with \"quotes\" and \n"),
        json!([]),
    ] {
        sim.send(a, broadcast("ev", "news", data.clone()));
        assert_eq!(sim.take(a), vec![json!({ "broadcasted": "news" })]);
        let delivery = json!({ "event": "ev", "channel": "news", "data": data });
        assert_eq!(sim.take(l), vec![delivery.clone()]);
        assert_eq!(sim.take(w), vec![delivery]);
        sim.assert_silent();
    }
}

#[test]
fn broadcast_without_data_omits_it_and_null_is_kept() {
    let (mut sim, l, _w, a) = news();
    sim.send(
        a,
        json!({ "broadcast": { "event": "ev", "channel": "news" } }),
    );
    let got = sim.take(l);
    assert_eq!(got, vec![json!({ "event": "ev", "channel": "news" })]);
    assert!(got[0].get("data").is_none());
    sim.send(a, broadcast("ev", "news", Value::Null));
    let got = sim.take(l);
    assert_eq!(
        got,
        vec![json!({ "event": "ev", "channel": "news", "data": null })]
    );
    assert!(got[0].as_object().unwrap().contains_key("data"));
}

#[test]
fn broadcast_forwards_a_huge_number_unchanged() {
    let (mut sim, l, _w, a) = news();
    // No f64 holds this number, so it must be forwarded as written, not re-encoded.
    sim.send_text(
        a,
        r#"{"broadcast":{"event":"ev","channel":"news","data":1e999999}}"#,
    );
    assert_eq!(
        sim.take(a),
        vec![json!({ "broadcasted": "news" })],
        "accepted"
    );
    let got = sim.take_text(l);
    assert_eq!(
        got,
        vec![r#"{"event":"ev","channel":"news","data":1e999999}"#]
    );
    let big = format!("123456789{}", "0".repeat(400));
    sim.send_text(
        a,
        &format!(r#"{{"broadcast":{{"event":"ev","channel":"news","data":[{big}]}}}}"#),
    );
    assert_eq!(sim.take(a), vec![json!({ "broadcasted": "news" })]);
    let got = sim.take_text(l);
    assert_eq!(got.len(), 1);
    assert!(got[0].contains(&format!("[{big}]")), "{}", got[0]);
}

#[test]
fn the_sender_gets_its_own_copy_first_when_subscribed() {
    let (mut sim, l, w, a) = news();
    sim.send(w, broadcast("ev", "news", json!(1)));
    assert_eq!(
        sim.take(w),
        vec![
            json!({ "event": "ev", "channel": "news", "data": 1 }),
            json!({ "broadcasted": "news" }),
        ]
    );
    assert_eq!(
        sim.take(l),
        vec![json!({ "event": "ev", "channel": "news", "data": 1 })]
    );
    // Not subscribed: only the reply.
    sim.send(a, broadcast("ev", "news", json!(2)));
    assert_eq!(sim.take(a), vec![json!({ "broadcasted": "news" })]);
    assert_eq!(sim.take(w).len(), 1);
    assert_eq!(sim.take(l).len(), 1);
    sim.assert_silent();
}

#[test]
fn broadcast_reaches_only_that_channel_in_order() {
    let (mut sim, l, w, a) = news();
    let sports = sim.connect();
    sim.auth(sports, "reader", "r");
    sim.subscribe(sports, "sports");
    for i in 0..20 {
        sim.send(a, broadcast("ev", "news", json!(i)));
    }
    let expected: Vec<Value> = (0..20)
        .map(|i| json!({ "event": "ev", "channel": "news", "data": i }))
        .collect();
    assert_eq!(sim.take(l), expected);
    assert_eq!(sim.take(w), expected);
    assert_eq!(sim.take(a).len(), 20);
    sim.assert_silent();
    assert_eq!(sim.engine().subscriber_count("sports"), 1);
    assert_eq!(sports, ClientId(4));
}

#[test]
fn broadcast_to_a_channel_without_subscribers_is_invalid_channel() {
    let (mut sim, l, w, a) = news();
    assert_eq!(
        sim.request(a, broadcast("ev", "sports", json!(1))),
        err("INVALID_CHANNEL")
    );
    // The channel ceases to exist after its last subscriber leaves, by any route.
    sim.send(l, unsubscribe("news"));
    sim.send(w, json!({ "logout": true }));
    assert_eq!(sim.take(l), vec![json!({ "unsubscribed": "news" })]);
    assert_eq!(sim.take(w), vec![json!({ "loggedOut": true })]);
    assert_eq!(sim.engine().channel_count(), 0);
    assert_eq!(
        sim.request(a, broadcast("ev", "news", json!(1))),
        err("INVALID_CHANNEL")
    );
    sim.subscribe(a, "news");
    sim.disconnect(a);
    assert_eq!(sim.engine().channel_count(), 0);
}

#[test]
fn a_broadcast_payload_is_encoded_once_and_shared() {
    let config = EngineConfig::from_json(&config(users(), json!({}))).unwrap();
    let mut engine = Engine::new(&config, HashSeed::default());
    let mut out = Vec::new();
    for n in 1..=3 {
        engine.handle_connect(ClientId(n), token_for(n)).unwrap();
        engine.handle_message(
            ClientId(n),
            Message::Text(r#"{"authenticate":{"user":"public","secret":""}}"#),
        );
        engine.handle_message(
            ClientId(n),
            Message::Text(r#"{"subscribe":{"channel":"c"}}"#),
        );
    }
    engine.drain_outputs(&mut out);
    out.clear();
    engine.handle_message(
        ClientId(1),
        Message::Text(r#"{"broadcast":{"event":"e","channel":"c","data":[1,2,3]}}"#),
    );
    engine.drain_outputs(&mut out);
    let deliveries: Vec<&Payload> = out
        .iter()
        .filter_map(|o| match o {
            Output::Send { payload, .. } if payload.as_bytes().starts_with(b"{\"event\"") => {
                Some(payload)
            }
            _ => None,
        })
        .collect();
    assert_eq!(deliveries.len(), 3, "{out:?}");
    assert!(deliveries.iter().all(|p| p.is_text()));
    let first = deliveries[0].as_bytes().as_ptr();
    assert!(
        deliveries.iter().all(|p| p.as_bytes().as_ptr() == first),
        "each recipient shares the same bytes"
    );
}

// ---------------------------------------------------------------------------------------
// direct

#[test]
fn direct_reaches_the_token_with_the_sender_as_from() {
    let mut sim = sim();
    let (s, r) = (sim.connect(), sim.connect());
    sim.auth(s, "writer", "w");
    let (ts, tr) = (sim.token(s), sim.token(r));
    // The recipient needs no session and no subscription.
    sim.send(s, direct("hi", &tr, json!({ "x": [1] })));
    assert_eq!(sim.take(s), vec![json!({ "directSent": tr })]);
    assert_eq!(
        sim.take(r),
        vec![json!({ "event": "hi", "from": ts, "data": { "x": [1] } })]
    );
    sim.send(
        s,
        json!({ "direct": { "event": "hi", "client": tr, "extra": 1 } }),
    );
    assert_eq!(sim.take(s), vec![json!({ "directSent": tr })]);
    let got = sim.take(r);
    assert_eq!(got, vec![json!({ "event": "hi", "from": ts })]);
    sim.send(s, direct("hi", &tr, Value::Null));
    assert_eq!(sim.take(s).len(), 1);
    assert_eq!(
        sim.take(r),
        vec![json!({ "event": "hi", "from": ts, "data": null })]
    );
    sim.assert_silent();
}

#[test]
fn direct_to_self_delivers_then_replies() {
    let mut sim = sim();
    let s = sim.connect();
    sim.auth(s, "admin", "s3cret");
    let ts = sim.token(s);
    sim.send(s, direct("me", &ts, json!(7)));
    assert_eq!(
        sim.take(s),
        vec![
            json!({ "event": "me", "from": ts, "data": 7 }),
            json!({ "directSent": ts }),
        ]
    );
}

#[test]
fn direct_to_anything_but_a_live_token_is_invalid_client() {
    let mut sim = sim();
    let (s, r, gone) = (sim.connect(), sim.connect(), sim.connect());
    sim.auth(s, "admin", "s3cret");
    let tr = sim.token(r);
    let t_gone = sim.token(gone);
    sim.disconnect(gone);
    let unknown = token_for(12345).to_string();
    for target in [
        String::new(),
        unknown,
        tr.to_uppercase(),
        format!(" {tr}"),
        format!("{tr}0"),
        tr[..31].to_string(),
        t_gone,
        "not a token at all".into(),
        "g".repeat(32),
    ] {
        assert_eq!(
            sim.request(s, direct("e", &target, json!(1))),
            err("INVALID_CLIENT"),
            "{target:?}"
        );
    }
    sim.assert_silent();
    // Text that is the live token is of course accepted.
    assert_eq!(
        sim.request(s, direct("e", &tr, json!(1))),
        json!({ "directSent": tr })
    );
    assert_eq!(sim.take(r).len(), 1);
}

#[test]
fn direct_needs_write() {
    let mut sim = sim();
    let (s, r) = (sim.connect(), sim.connect());
    let tr = sim.token(r);
    assert_eq!(
        sim.request(s, direct("e", &tr, json!(1))),
        err("ACCESS_DENIED")
    );
    sim.auth(s, "reader", "r");
    assert_eq!(
        sim.request(s, direct("e", &tr, json!(1))),
        err("ACCESS_DENIED")
    );
    sim.assert_silent();
}

// ---------------------------------------------------------------------------------------
// logout and disconnect

#[test]
fn logout_drops_session_and_subscriptions() {
    let (mut sim, l, w, _a) = news();
    sim.subscribe(l, "other");
    assert_eq!(sim.engine().channel_count(), 2);
    assert_eq!(
        sim.request(l, json!({ "logout": true })),
        json!({ "loggedOut": true })
    );
    assert_eq!(sim.engine().channel_count(), 1, "`other` is gone");
    assert_eq!(sim.engine().subscriber_count("news"), 1);
    assert_eq!(sim.request(l, subscribe("news")), err("ACCESS_DENIED"));
    sim.send(w, broadcast("e", "news", json!(1)));
    assert_eq!(sim.take(w).len(), 2);
    sim.assert_silent();
    // Allowed in any state, with `true` or any object.
    for req in [
        r#"{"logout":true}"#,
        r#"{"logout":{}}"#,
        r#"{"logout":{"why":[1,{"a":null}]}}"#,
    ] {
        assert_eq!(sim.request_text(l, req), json!({ "loggedOut": true }));
    }
    for bad in [
        r#"{"logout":false}"#,
        r#"{"logout":null}"#,
        r#"{"logout":1}"#,
        r#"{"logout":"true"}"#,
        r#"{"logout":[]}"#,
    ] {
        assert_eq!(sim.request_text(l, bad), invalid(), "{bad}");
    }
}

#[test]
fn disconnect_closes_with_1000_and_forgets_the_client() {
    for request in [r#"{"disconnect":true}"#, r#"{"disconnect":{"bye":1}}"#] {
        let (mut sim, l, w, a) = news();
        let tl = sim.token(l);
        sim.send_text(l, request);
        assert_eq!(
            sim.take_raw(l),
            vec![Received::Close {
                code: 1000,
                reason: String::new()
            }],
            "no reply, just the close"
        );
        assert_eq!(sim.engine().client_count(), 2);
        assert_eq!(sim.engine().subscriber_count("news"), 1);
        // Later frames and a late disconnect from the frontend are ignored.
        sim.send(l, subscribe("x"));
        sim.send(l, json!({ "disconnect": true }));
        sim.send_binary(l, b"\xff");
        sim.send_text(l, "garbage");
        sim.engine_mut().handle_disconnect(l);
        sim.drive();
        sim.assert_silent();
        assert_eq!(sim.engine().client_count(), 2);
        // Its token is no longer a client.
        assert_eq!(
            sim.request(a, direct("e", &tl, json!(1))),
            err("INVALID_CLIENT")
        );
        sim.send(w, broadcast("e", "news", json!(1)));
        assert_eq!(sim.take(w).len(), 2);
        sim.assert_silent();
    }
}

#[test]
fn disconnect_with_a_bad_value_is_invalid_and_stays_open() {
    let mut sim = sim();
    let c = sim.connect();
    for bad in [
        r#"{"disconnect":false}"#,
        r#"{"disconnect":"yes"}"#,
        r#"{"disconnect":null}"#,
        r#"{"disconnect":0}"#,
    ] {
        assert_eq!(sim.request_text(c, bad), invalid(), "{bad}");
    }
    assert_eq!(sim.engine().client_count(), 1);
    assert_eq!(
        sim.request(c, json!({ "logout": true })),
        json!({ "loggedOut": true })
    );
}

#[test]
fn handle_disconnect_forgets_everything() {
    let (mut sim, l, w, a) = news();
    sim.subscribe(l, "solo");
    sim.disconnect(l);
    assert_eq!(sim.engine().client_count(), 2);
    assert_eq!(sim.engine().channel_count(), 1);
    assert_eq!(sim.engine().subscriber_count("news"), 1);
    assert_eq!(
        sim.request(a, broadcast("e", "solo", json!(1))),
        err("INVALID_CHANNEL")
    );
    sim.disconnect(w);
    sim.disconnect(a);
    assert!(sim.engine().is_idle());
}

// ---------------------------------------------------------------------------------------
// Malformed requests

#[test]
fn a_binary_frame_is_invalid_payload_and_the_connection_stays_usable() {
    let mut sim = sim();
    let c = sim.connect();
    for bytes in [
        &b""[..],
        b"\x00\xff",
        br#"{"authenticate":{"user":"admin","secret":"s3cret"}}"#,
    ] {
        sim.send_binary(c, bytes);
        assert_eq!(sim.take(c), vec![invalid()]);
    }
    sim.auth(c, "admin", "s3cret");
}

#[test]
fn invalid_requests_are_invalid_payload_in_any_state() {
    let long = "x".repeat(256);
    let bad: Vec<String> = vec![
        "".into(),
        " ".into(),
        "null".into(),
        "true".into(),
        "42".into(),
        "\"subscribe\"".into(),
        "[]".into(),
        r#"[{"subscribe":{"channel":"c"}}]"#.into(),
        "{}".into(),
        "{".into(),
        r#"{"subscribe":{"channel":"c"}"#.into(),
        r#"{"subscribe":{"channel":"c"}} {}"#.into(),
        r#"{"subscribe":{"channel":"c"}}x"#.into(),
        // unknown actions
        r#"{"publish":{"channel":"c"}}"#.into(),
        r#"{"Subscribe":{"channel":"c"}}"#.into(),
        r#"{"":true}"#.into(),
        r#"{"subscribed":"c"}"#.into(),
        // several keys
        r#"{"subscribe":{"channel":"c"},"logout":true}"#.into(),
        r#"{"logout":true,"logout":true}"#.into(),
        r#"{"subscribe":{"channel":"c"},"subscribe":{"channel":"c"}}"#.into(),
        r#"{"subscribe":{"channel":"c"},"x":1}"#.into(),
        // missing or mistyped fields
        r#"{"subscribe":{}}"#.into(),
        r#"{"subscribe":"c"}"#.into(),
        r#"{"subscribe":null}"#.into(),
        r#"{"subscribe":{"channel":1}}"#.into(),
        r#"{"subscribe":{"channel":["c"]}}"#.into(),
        r#"{"subscribe":{"channel":"a","channel":"b"}}"#.into(),
        r#"{"unsubscribe":{"chanel":"c"}}"#.into(),
        r#"{"authenticate":{"user":"admin"}}"#.into(),
        r#"{"authenticate":{"secret":"s3cret"}}"#.into(),
        r#"{"authenticate":{"user":"admin","secret":null}}"#.into(),
        r#"{"authenticate":{"user":"admin","secret":1}}"#.into(),
        r#"{"broadcast":{"channel":"c","data":1}}"#.into(),
        r#"{"broadcast":{"event":"e","data":1}}"#.into(),
        r#"{"broadcast":{"event":"e","channel":"c","data":}}"#.into(),
        r#"{"broadcast":{"event":1,"channel":"c"}}"#.into(),
        r#"{"direct":{"event":"e","data":1}}"#.into(),
        r#"{"direct":{"client":"","data":1}}"#.into(),
        r#"{"direct":{"event":"e","client":null}}"#.into(),
        // empty and overlong names
        r#"{"subscribe":{"channel":""}}"#.into(),
        r#"{"authenticate":{"user":"","secret":""}}"#.into(),
        r#"{"broadcast":{"event":"","channel":"c"}}"#.into(),
        r#"{"direct":{"event":"","client":""}}"#.into(),
        format!(r#"{{"subscribe":{{"channel":"{long}"}}}}"#),
        // invalid JSON inside strings
        r#"{"subscribe":{"channel":"\x"}}"#.into(),
        r#"{"subscribe":{"channel":"\ud800"}}"#.into(),
        "{\"subscribe\":{\"channel\":\"a\nb\"}}".into(),
    ];
    let mut sim = sim();
    let (anon, admin) = (sim.connect(), sim.connect());
    sim.auth(admin, "admin", "s3cret");
    sim.subscribe(admin, "c");
    for text in &bad {
        for c in [anon, admin] {
            assert_eq!(sim.request_text(c, text), invalid(), "{text:?}");
        }
    }
    // Nothing changed: admin is still subscribed and authenticated.
    assert_eq!(sim.engine().subscriber_count("c"), 1);
    sim.send(admin, broadcast("e", "c", json!(1)));
    assert_eq!(sim.take(admin).len(), 2);
    assert_eq!(sim.request(anon, subscribe("c")), err("ACCESS_DENIED"));
}

#[test]
fn unknown_fields_inside_an_action_are_ignored() {
    let mut sim = sim();
    let c = sim.connect();
    assert_eq!(
        sim.request_text(
            c,
            r#"{"authenticate":{"x":[{}],"user":"admin","secret":"s3cret","user2":1}}"#
        ),
        json!({ "authenticated": "admin" })
    );
    assert_eq!(
        sim.request_text(c, r#"{"subscribe":{"channel":"c","data":{"deep":[1]}}}"#),
        json!({ "subscribed": "c" })
    );
    sim.send_text(
        c,
        r#"{"broadcast":{"event":"e","channel":"c","client":"x","data":2,"more":null}}"#,
    );
    assert_eq!(
        sim.take(c),
        vec![
            json!({ "event": "e", "channel": "c", "data": 2 }),
            json!({ "broadcasted": "c" })
        ]
    );
    assert_eq!(
        sim.request_text(c, r#"{ "unsubscribe" : { "channel" : "c" , "n" : 1 } }"#),
        json!({ "unsubscribed": "c" })
    );
}

#[test]
fn names_may_have_255_bytes_but_not_256() {
    let mut sim = sim_with_limits(json!({ "MaxFailedAuth": 0 }));
    let (c, d) = (sim.connect(), sim.connect());
    sim.auth(c, "admin", "s3cret");
    let td = sim.token(d);
    let ok_ascii = "n".repeat(255);
    let ok_multi = format!("x{}", "é".repeat(127)); // 255 bytes, 128 chars
    let bad_ascii = "n".repeat(256);
    let bad_multi = "é".repeat(128); // 256 bytes, 128 chars
    assert_eq!((ok_multi.len(), bad_multi.len()), (255, 256));
    for name in [&ok_ascii, &ok_multi] {
        sim.subscribe(c, name);
        sim.send(c, broadcast(name, name, json!(1)));
        assert_eq!(
            sim.take(c),
            vec![
                json!({ "event": name, "channel": name, "data": 1 }),
                json!({ "broadcasted": name })
            ]
        );
        assert_eq!(
            sim.request(c, direct(name, &td, json!(1))),
            json!({ "directSent": td })
        );
        assert_eq!(
            sim.take(d),
            vec![json!({ "event": name, "from": sim.token(c), "data": 1 })]
        );
        assert_eq!(
            sim.request(c, unsubscribe(name)),
            json!({ "unsubscribed": name })
        );
        // A 255-byte user name is well formed; this hub has no such user.
        assert_eq!(sim.request(d, authenticate(name, "")), err("INVALID_USER"));
    }
    for name in [&bad_ascii, &bad_multi] {
        for req in [
            subscribe(name),
            unsubscribe(name),
            broadcast(name, "c", json!(1)),
            broadcast("e", name, json!(1)),
            direct(name, &td, json!(1)),
            authenticate(name, ""),
        ] {
            assert_eq!(sim.request(c, req.clone()), invalid(), "{req}");
        }
    }
    // The `client` of direct is not a name: overlong is just not a token.
    assert_eq!(
        sim.request(c, direct("e", &bad_ascii, json!(1))),
        err("INVALID_CLIENT")
    );
    // Neither is a secret: any length works.
    sim.auth(c, "public", &bad_ascii);
    sim.assert_silent();
    assert_eq!(sim.engine().channel_count(), 0);
}

fn nested(levels: usize) -> String {
    format!("{}{}", "[".repeat(levels), "]".repeat(levels))
}

#[test]
fn nesting_up_to_128_levels_is_accepted_and_deeper_is_invalid() {
    let mut sim = sim();
    let c = sim.connect();
    sim.auth(c, "admin", "s3cret");
    sim.subscribe(c, "c");
    // The request object and the broadcast object are levels 1 and 2.
    let req =
        |data: &str| format!(r#"{{"broadcast":{{"event":"e","channel":"c","data":{data}}}}}"#);
    sim.send_text(c, &req(&nested(126)));
    let got = sim.take_text(c);
    assert_eq!(got.len(), 2, "delivered and replied");
    assert!(got[0].contains(&nested(126)), "data forwarded as sent");
    assert_eq!(
        serde_json::from_str::<Value>(&got[1]).unwrap(),
        json!({ "broadcasted": "c" })
    );
    for levels in [127, 128, 129, 1_000, 200_000] {
        assert_eq!(sim.request_text(c, &req(&nested(levels))), invalid());
    }
    let objects = format!("{}1{}", r#"{"a":"#.repeat(127), "}".repeat(127));
    assert_eq!(sim.request_text(c, &req(&objects)), invalid());
    // Unbalanced and ignored deep values count too.
    assert_eq!(sim.request_text(c, &"[".repeat(200_000)), invalid());
    let ignored = format!(r#"{{"subscribe":{{"channel":"c","x":{}}}}}"#, nested(200));
    assert_eq!(sim.request_text(c, &ignored), invalid());
    let logout = format!(r#"{{"logout":{{"x":{}}}}}"#, nested(200));
    assert_eq!(sim.request_text(c, &logout), invalid());
    // Brackets inside strings do not nest.
    let in_string = format!(r#""{}""#, "[".repeat(500));
    sim.send_text(c, &req(&in_string));
    assert_eq!(sim.take(c).len(), 2);
    assert_eq!(sim.engine().subscriber_count("c"), 1);
}

// ---------------------------------------------------------------------------------------
// Check order: shape, permission, limit, target

#[test]
fn checks_run_in_order_shape_permission_limit_target() {
    let mut sim = sim_with_limits(json!({ "MaxSubscriptionsPerClient": 1 }));
    let (anon, reader, writer) = (sim.connect(), sim.connect(), sim.connect());
    sim.auth(reader, "reader", "r");
    sim.auth(writer, "writer", "w");
    sim.subscribe(reader, "full");
    // Shape before permission.
    for c in [anon, reader] {
        assert_eq!(
            sim.request_text(c, r#"{"broadcast":{"event":"e"}}"#),
            invalid()
        );
        assert_eq!(
            sim.request_text(c, r#"{"subscribe":{"channel":""}}"#),
            invalid()
        );
        assert_eq!(
            sim.request_text(c, r#"{"direct":{"client":""}}"#),
            invalid()
        );
    }
    // Permission before target.
    assert_eq!(
        sim.request(anon, broadcast("e", "nonexistent", json!(1))),
        err("ACCESS_DENIED")
    );
    assert_eq!(
        sim.request(reader, broadcast("e", "nonexistent", json!(1))),
        err("ACCESS_DENIED")
    );
    assert_eq!(
        sim.request(reader, direct("e", "nobody", json!(1))),
        err("ACCESS_DENIED")
    );
    assert_eq!(
        sim.request(anon, direct("e", "", json!(1))),
        err("ACCESS_DENIED")
    );
    // Permission before limit: the writer has no READ and no subscription either.
    assert_eq!(sim.request(writer, subscribe("a")), err("ACCESS_DENIED"));
    // Limit: the reader is at its limit.
    assert_eq!(sim.request(reader, subscribe("a")), err("LIMIT_EXCEEDED"));
    // Target last.
    assert_eq!(
        sim.request(writer, broadcast("e", "nonexistent", json!(1))),
        err("INVALID_CHANNEL")
    );
    assert_eq!(
        sim.request(writer, direct("e", "nobody", json!(1))),
        err("INVALID_CLIENT")
    );
    sim.assert_silent();
}

// ---------------------------------------------------------------------------------------
// Permissions

#[test]
fn every_permission_value_against_every_action() {
    let mut users = serde_json::Map::new();
    for bits in 0..=7 {
        users.insert(
            format!("p{bits}"),
            json!({ "Secret": "k", "Permission": bits }),
        );
    }
    let mut sim = Sim::new(&config(Value::Object(users), json!({})));
    let listener = sim.connect();
    sim.auth(listener, "p1", "k");
    sim.subscribe(listener, "news");
    let tl = sim.token(listener);
    for bits in 0u8..=7 {
        let c = sim.connect();
        sim.auth(c, &format!("p{bits}"), "k");
        let read = bits & 1 != 0;
        let write = bits & 2 != 0;

        let reply = sim.request(c, subscribe("mine"));
        if read {
            assert_eq!(reply, json!({ "subscribed": "mine" }), "p{bits}");
        } else {
            assert_eq!(reply, err("ACCESS_DENIED"), "p{bits}");
        }

        sim.send(c, broadcast("e", "news", json!(bits)));
        if write {
            assert_eq!(
                sim.take(c),
                vec![json!({ "broadcasted": "news" })],
                "p{bits}"
            );
            assert_eq!(
                sim.take(listener),
                vec![json!({ "event": "e", "channel": "news", "data": bits })],
                "p{bits}"
            );
        } else {
            assert_eq!(sim.take(c), vec![err("ACCESS_DENIED")], "p{bits}");
        }

        sim.send(c, direct("d", &tl, json!(bits)));
        if write {
            assert_eq!(sim.take(c), vec![json!({ "directSent": tl })], "p{bits}");
            assert_eq!(
                sim.take(listener),
                vec![json!({ "event": "d", "from": sim.token(c), "data": bits })],
                "p{bits}"
            );
        } else {
            assert_eq!(sim.take(c), vec![err("ACCESS_DENIED")], "p{bits}");
        }

        // Allowed whatever the permission.
        assert_eq!(
            sim.request(c, unsubscribe("mine")),
            json!({ "unsubscribed": "mine" })
        );
        assert_eq!(
            sim.request(c, json!({ "logout": true })),
            json!({ "loggedOut": true })
        );
        sim.assert_silent();
        sim.disconnect(c);
    }
    assert_eq!(sim.engine().channel_count(), 1);
}

// ---------------------------------------------------------------------------------------
// Limits

#[test]
fn max_subscriptions_per_client_is_enforced() {
    let mut sim = sim_with_limits(json!({ "MaxSubscriptionsPerClient": 2 }));
    let (c, other) = (sim.connect(), sim.connect());
    sim.auth(c, "admin", "s3cret");
    sim.auth(other, "admin", "s3cret");
    sim.subscribe(c, "a");
    sim.subscribe(c, "b");
    assert_eq!(sim.request(c, subscribe("c")), err("LIMIT_EXCEEDED"));
    assert_eq!(
        sim.engine().channel_count(),
        2,
        "the refused channel is not created"
    );
    // Resubscribing to a channel it has is fine at the limit.
    sim.subscribe(c, "a");
    sim.subscribe(c, "b");
    // The limit is per client.
    sim.subscribe(other, "c");
    assert_eq!(sim.request(c, subscribe("c")), err("LIMIT_EXCEEDED"));
    // The refused subscription gets no deliveries.
    sim.send(other, broadcast("e", "c", json!(1)));
    assert_eq!(
        sim.take(other),
        vec![
            json!({ "event": "e", "channel": "c", "data": 1 }),
            json!({ "broadcasted": "c" })
        ]
    );
    sim.assert_silent();
    // Leaving one makes room.
    assert_eq!(
        sim.request(c, unsubscribe("a")),
        json!({ "unsubscribed": "a" })
    );
    sim.subscribe(c, "c");
    assert_eq!(sim.request(c, subscribe("a")), err("LIMIT_EXCEEDED"));
    // So does a new session.
    sim.auth(c, "admin", "s3cret");
    sim.subscribe(c, "x");
    sim.subscribe(c, "y");
    assert_eq!(sim.request(c, subscribe("z")), err("LIMIT_EXCEEDED"));
}

#[test]
fn zero_max_subscriptions_means_unlimited() {
    let mut sim = sim_with_limits(json!({ "MaxSubscriptionsPerClient": 0 }));
    let c = sim.connect();
    sim.auth(c, "reader", "r");
    for i in 0..5_000 {
        sim.subscribe(c, &format!("ch{i}"));
    }
    assert_eq!(sim.engine().channel_count(), 5_000);
}

#[test]
fn the_default_subscription_limit_is_1024() {
    let mut sim = sim();
    let c = sim.connect();
    sim.auth(c, "reader", "r");
    for i in 0..1024 {
        sim.subscribe(c, &format!("ch{i}"));
    }
    assert_eq!(sim.request(c, subscribe("one more")), err("LIMIT_EXCEEDED"));
}

fn close(code: u16) -> impl Fn(&Received) -> bool {
    move |r| matches!(r, Received::Close { code: c, reason } if *c == code && reason.len() <= 123)
}

#[test]
fn max_failed_auth_closes_after_the_error_reply() {
    let mut sim = sim_with_limits(json!({ "MaxFailedAuth": 3 }));
    let (c, other) = (sim.connect(), sim.connect());
    sim.auth(other, "admin", "s3cret");
    sim.subscribe(other, "news");
    sim.auth(c, "admin", "s3cret");
    sim.subscribe(c, "news");
    assert_eq!(
        sim.request(c, authenticate("admin", "bad")),
        err("INVALID_CREDENTIALS")
    );
    assert_eq!(
        sim.request(c, authenticate("ghost", "")),
        err("INVALID_USER")
    );
    // A success does not reset the count.
    sim.auth(c, "admin", "s3cret");
    sim.subscribe(c, "news");
    sim.send(c, authenticate("admin", "bad"));
    let got = sim.take_raw(c);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].json(), err("INVALID_CREDENTIALS"));
    assert!(close(1008)(&got[1]), "{got:?}");
    assert!(sim.is_gone(c));
    // Forgotten: gone from the channel and the clients, frames ignored.
    assert_eq!(sim.engine().client_count(), 1);
    assert_eq!(sim.engine().subscriber_count("news"), 1);
    sim.send(c, authenticate("admin", "s3cret"));
    sim.engine_mut().handle_disconnect(c);
    sim.drive();
    sim.assert_silent();
    let tc = sim.token(c);
    assert_eq!(
        sim.request(other, direct("e", &tc, json!(1))),
        err("INVALID_CLIENT")
    );
}

#[test]
fn max_failed_auth_counts_invalid_user_and_one_means_first_failure() {
    let mut sim = sim_with_limits(json!({ "MaxFailedAuth": 1 }));
    let c = sim.connect();
    sim.send(c, authenticate("ghost", "x"));
    let got = sim.take_raw(c);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].json(), err("INVALID_USER"));
    assert!(close(1008)(&got[1]), "{got:?}");
    assert!(sim.engine().is_idle());
    // The count is per connection.
    let d = sim.connect();
    sim.auth(d, "public", "");
    sim.send(d, authenticate("admin", ""));
    let got = sim.take_raw(d);
    assert_eq!(got[0].json(), err("INVALID_CREDENTIALS"));
    assert!(close(1008)(&got[1]), "{got:?}");
}

#[test]
fn default_max_failed_auth_is_five() {
    let mut sim = sim();
    let c = sim.connect();
    for _ in 0..4 {
        assert_eq!(
            sim.request(c, authenticate("admin", "")),
            err("INVALID_CREDENTIALS")
        );
    }
    sim.send(c, authenticate("admin", ""));
    let got = sim.take_raw(c);
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(close(1008)(&got[1]), "{got:?}");
}

#[test]
fn zero_max_failed_auth_means_unlimited() {
    let mut sim = sim_with_limits(json!({ "MaxFailedAuth": 0 }));
    let c = sim.connect();
    for i in 0..1_000 {
        let reply = if i % 2 == 0 {
            sim.request(c, authenticate("admin", "nope"))
        } else {
            sim.request(c, authenticate("nobody-here", "nope"))
        };
        assert!(reply == err("INVALID_CREDENTIALS") || reply == err("INVALID_USER"));
    }
    assert!(!sim.is_gone(c));
    sim.auth(c, "admin", "s3cret");
}

// ---------------------------------------------------------------------------------------
// Hubs, the Protocol trait, clusters, hygiene

#[test]
fn two_hubs_share_nothing() {
    let mut a = Sim::new(&config(
        json!({ "u": { "Secret": "a", "Permission": 7 } }),
        json!({}),
    ));
    let mut b = Sim::new(&config(
        json!({ "u": { "Secret": "b", "Permission": 7 },
                "only-b": { "Secret": "", "Permission": 7 } }),
        json!({}),
    ));
    // The same ids and tokens may live in both hubs.
    let (a1, b1) = (a.connect(), b.connect());
    assert_eq!((a1, a.token(a1)), (b1, b.token(b1)));
    let (a2, _b2) = (a.connect(), b.connect());
    // Users are per hub.
    assert_eq!(
        a.request(a1, authenticate("u", "b")),
        err("INVALID_CREDENTIALS")
    );
    assert_eq!(
        a.request(a1, authenticate("only-b", "")),
        err("INVALID_USER")
    );
    a.auth(a1, "u", "a");
    b.auth(b1, "u", "b");
    a.auth(a2, "u", "a");
    // Channels are per hub.
    a.subscribe(a1, "news");
    assert_eq!(b.engine().channel_count(), 0);
    assert_eq!(
        b.request(b1, broadcast("e", "news", json!(1))),
        err("INVALID_CHANNEL")
    );
    // Clients are per hub: a token live in b only is no client in a.
    let b3 = ClientId(3);
    b.connect_with(b3, token_for(77)).unwrap();
    assert_eq!(b.take(b3).len(), 1, "greeting");
    let t77 = token_for(77).to_string();
    assert_eq!(
        a.request(a1, direct("e", &t77, json!(1))),
        err("INVALID_CLIENT")
    );
    assert_eq!(
        b.request(b1, direct("e", &t77, json!(1))),
        json!({ "directSent": t77 })
    );
    assert_eq!(b.take(b3).len(), 1);
    // And a direct in a reaches a's client 2, not b's.
    let t2 = a.token(a2);
    assert_eq!(
        a.request(a1, direct("e", &t2, json!(1))),
        json!({ "directSent": t2 })
    );
    assert_eq!(a.take(a2).len(), 1);
    b.assert_silent();
    a.assert_silent();
}

#[test]
fn the_protocol_trait_drives_the_engine() {
    fn drive<P: Protocol>(p: &mut P) -> Vec<Output> {
        p.handle_connect(ClientId(1), Token::from_bytes([1; 16]))
            .unwrap();
        p.handle_message(ClientId(1), Message::Text(r#"{"logout":true}"#));
        p.handle_message(ClientId(1), Message::Binary(b"x"));
        p.handle_message(ClientId(1), Message::Text(r#"{"disconnect":true}"#));
        p.handle_disconnect(ClientId(1));
        let mut out = Vec::new();
        p.drain_outputs(&mut out);
        assert!(p.poll_output().is_none());
        out
    }
    let mut engine = Engine::new(&support::demo(), HashSeed([1, 2, 3, 4]));
    let out = drive(&mut engine);
    let texts: Vec<Option<&str>> = out
        .iter()
        .map(|o| match o {
            Output::Send { payload, .. } => payload.as_text(),
            _ => None,
        })
        .collect();
    assert_eq!(
        texts,
        [
            Some(r#"{"connected":"01010101010101010101010101010101"}"#),
            Some(r#"{"loggedOut":true}"#),
            Some(r#"{"err":"INVALID_PAYLOAD"}"#),
            None,
        ]
    );
    assert!(matches!(
        &out[3],
        Output::Close { client: ClientId(1), code, .. } if code.0 == 1000
    ));
    assert!(engine.is_idle());
}

#[test]
fn replies_follow_request_order_when_pipelined() {
    let mut engine = Engine::new(&support::demo(), HashSeed::default());
    let c = ClientId(9);
    engine.handle_connect(c, token_for(9)).unwrap();
    let requests = [
        r#"{"subscribe":{"channel":"x"}}"#,
        r#"{"authenticate":{"user":"frontend","secret":""}}"#,
        r#"{"subscribe":{"channel":"x"}}"#,
        r#"{"broadcast":{"event":"e","channel":"x"}}"#,
        "nonsense",
        r#"{"unsubscribe":{"channel":"x"}}"#,
        r#"{"broadcast":{"event":"e","channel":"x"}}"#,
        r#"{"logout":true}"#,
    ];
    for r in requests {
        engine.handle_message(c, Message::Text(r));
    }
    let mut texts = Vec::new();
    while let Some(o) = engine.poll_output() {
        match o {
            Output::Send { client, payload } => {
                assert_eq!(client, c);
                texts.push(payload.as_text().unwrap().to_owned());
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        texts[1..],
        [
            r#"{"err":"ACCESS_DENIED"}"#,
            r#"{"authenticated":"frontend"}"#,
            r#"{"subscribed":"x"}"#,
            r#"{"event":"e","channel":"x"}"#,
            r#"{"broadcasted":"x"}"#,
            r#"{"err":"INVALID_PAYLOAD"}"#,
            r#"{"unsubscribed":"x"}"#,
            r#"{"err":"INVALID_CHANNEL"}"#,
            r#"{"loggedOut":true}"#,
        ]
    );
}

#[test]
fn remote_broadcast_reaches_local_subscribers_only() {
    let (mut sim, l, w, _a) = news();
    let other = sim.connect();
    sim.auth(other, "reader", "r");
    sim.subscribe(other, "sports");
    let payload = Payload::text(r#"{"event":"remote","channel":"news","data":[1]}"#);
    sim.remote_broadcast("news", payload.clone());
    for c in [l, w] {
        assert_eq!(
            sim.take_text(c),
            vec![payload.as_text().unwrap().to_owned()]
        );
    }
    // No reply to anyone, nothing to non-subscribers.
    sim.assert_silent();
    // A channel with one subscriber.
    let solo = Payload::text(r#"{"event":"remote","channel":"sports"}"#);
    sim.remote_broadcast("sports", solo.clone());
    assert_eq!(
        sim.take_text(other),
        vec![solo.as_text().unwrap().to_owned()]
    );
    sim.assert_silent();
    // A channel with no local subscriber: nothing, and no channel is created.
    sim.remote_broadcast("nowhere", payload);
    sim.assert_silent();
    assert_eq!(sim.engine().channel_count(), 2);
    assert_eq!(sim.engine().subscriber_count("nowhere"), 0);
}

#[test]
fn the_engine_is_idle_after_everyone_left() {
    let mut sim = sim_with_limits(json!({ "MaxFailedAuth": 2 }));
    assert!(sim.engine().is_idle(), "fresh engine");
    let mut clients = Vec::new();
    for i in 0..20 {
        let c = sim.connect();
        sim.auth(c, if i % 2 == 0 { "admin" } else { "public" }, "s3cret");
        for ch in 0..(i % 5) {
            sim.subscribe(c, &format!("ch{ch}"));
        }
        clients.push(c);
    }
    assert!(!sim.engine().is_idle());
    sim.send(clients[0], json!({ "logout": true }));
    assert_eq!(sim.take(clients[0]), vec![json!({ "loggedOut": true })]);
    // Leave by every route: disconnect request, failed authentication, socket close.
    sim.send(clients[1], json!({ "disconnect": true }));
    sim.send(clients[2], authenticate("x", ""));
    sim.send(clients[2], authenticate("x", ""));
    assert!(sim.is_gone(clients[1]) && sim.is_gone(clients[2]));
    for &c in &clients {
        sim.disconnect(c);
    }
    assert_eq!(sim.engine().client_count(), 0);
    assert_eq!(sim.engine().channel_count(), 0);
    assert!(sim.engine().is_idle());
    // The clients may come back: their ids and tokens are free again.
    let c = clients[0];
    sim.connect_with(c, Token::parse(&sim.token(c)).unwrap())
        .unwrap();
    assert_eq!(sim.take(c).len(), 1, "greeting");
    // Pending outputs count as state: the close is queued until drained.
    sim.engine_mut()
        .handle_message(c, Message::Text(r#"{"disconnect":true}"#));
    assert_eq!(sim.engine().client_count(), 0);
    assert!(!sim.engine().is_idle());
    sim.drive();
    assert!(sim.engine().is_idle());
}

// ---------------------------------------------------------------------------------------
// Churn

/// 1,000,000 distinct channel names go through subscribe and unsubscribe, and nothing is
/// left afterwards. Requests are fed in batches of 1,000 (subscribe to each, then
/// unsubscribe from each), so the maps grow and shrink a thousand times; every reply is
/// checked.
#[test]
fn a_million_distinct_channels_leave_nothing_behind() {
    const CHANNELS: usize = 1_000_000;
    const BATCH: usize = 1_000;
    /// The name of channel `n` (distinct for n < 1,000,000), without `format!`, which is
    /// slow in debug builds.
    fn name(n: usize, out: &mut String) {
        let mut digits = *b"c000000";
        let mut rest = n;
        for d in digits[1..].iter_mut().rev() {
            *d = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        assert_eq!(rest, 0);
        out.push_str(std::str::from_utf8(&digits).unwrap());
    }

    let config = EngineConfig::from_json(&config(
        users(),
        json!({ "MaxSubscriptionsPerClient": BATCH }),
    ))
    .unwrap();
    let mut engine = Engine::new(&config, HashSeed([9; 4]));
    let (c, d) = (ClientId(1), ClientId(2));
    let login = r#"{"authenticate":{"user":"reader","secret":"r"}}"#;
    let mut out = Vec::new();
    for (n, id) in [(1, c), (2, d)] {
        engine.handle_connect(id, token_for(n)).unwrap();
        engine.handle_message(id, Message::Text(login));
    }
    engine.drain_outputs(&mut out);
    assert_eq!(out.len(), 4);
    out.clear();

    let (mut text, mut want) = (String::new(), String::new());
    // Sends `action` from `id` for channels first..first + BATCH and checks every reply.
    let mut run = |engine: &mut Engine, id: ClientId, action: &str, reply: &str, first| {
        for n in first..first + BATCH {
            text.clear();
            text.push_str(r#"{""#);
            text.push_str(action);
            text.push_str(r#"":{"channel":""#);
            name(n, &mut text);
            text.push_str(r#""}}"#);
            engine.handle_message(id, Message::Text(&text));
        }
        engine.drain_outputs(&mut out);
        assert_eq!(out.len(), BATCH);
        for (n, output) in (first..).zip(out.drain(..)) {
            want.clear();
            want.push_str(r#"{""#);
            want.push_str(reply);
            want.push_str(r#"":""#);
            name(n, &mut want);
            want.push_str(r#""}"#);
            match output {
                Output::Send { client, payload }
                    if client == id && payload.as_bytes() == want.as_bytes() => {}
                other => panic!("{other:?}, expected {want} for {id}"),
            }
        }
    };
    for batch in 0..CHANNELS / BATCH {
        let first = batch * BATCH;
        let (id, other) = if batch % 2 == 0 { (c, d) } else { (d, c) };
        run(&mut engine, id, "subscribe", "subscribed", first);
        assert_eq!(engine.channel_count(), BATCH);
        if batch % 100 == 0 {
            // Now and then a second subscriber joins, then leaves all at once.
            run(&mut engine, other, "subscribe", "subscribed", first);
            let mut last = String::new();
            name(first + BATCH - 1, &mut last);
            assert_eq!(engine.subscriber_count(&last), 2);
            engine.handle_message(other, Message::Text(r#"{"logout":true}"#));
            engine.handle_message(other, Message::Text(login));
            let replies: Vec<Output> = std::iter::from_fn(|| engine.poll_output()).collect();
            assert_eq!(replies.len(), 2, "{replies:?}");
            assert_eq!(engine.subscriber_count(&last), 1);
        }
        run(&mut engine, id, "unsubscribe", "unsubscribed", first);
        assert_eq!(engine.channel_count(), 0);
    }
    assert_eq!(engine.client_count(), 2);
    engine.handle_disconnect(c);
    engine.handle_disconnect(d);
    assert!(engine.is_idle());
}

#[test]
fn the_engine_has_no_timers_yet_and_time_changes_nothing() {
    let mut sim = sim();
    let c = sim.connect();
    sim.auth(c, "admin", "s3cret");
    sim.subscribe(c, "news");
    let engine = sim.engine_mut();
    assert_eq!(Protocol::poll_timeout(engine), None);
    let now = std::time::Instant::now();
    for later in [0, 1, 3_600_000] {
        Protocol::handle_timeout(engine, now + std::time::Duration::from_millis(later));
    }
    sim.drive();
    sim.assert_silent();
    assert_eq!(sim.engine().subscriber_count("news"), 1);
}

// ---------------------------------------------------------------------------------------
// The publish API (HTTP) and the engine's statistics

fn publish(
    sim: &mut Sim,
    kind: PublishKind,
    body: Value,
    user: &str,
    secret: &str,
) -> Result<Value, &'static str> {
    let publish = Publish::parse(kind, body.to_string().as_bytes()).expect("a valid body");
    let step = sim.engine_mut().handle_publish(&publish, user, secret);
    sim.drive();
    match step {
        PublishStep::Done(Ok(reply)) => Ok(serde_json::from_str(reply.as_text().unwrap()).unwrap()),
        PublishStep::Done(Err(e)) => Err(e.name()),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn an_api_broadcast_delivers_what_a_websocket_broadcast_delivers() {
    let mut sim = sim();
    let (sub, pub_) = (sim.connect(), sim.connect());
    sim.auth(sub, "reader", "r");
    sim.subscribe(sub, "news");
    sim.auth(pub_, "writer", "w");
    sim.send(
        pub_,
        json!({"broadcast": {"channel": "news", "event": "e", "data": {"n": [1, 2]}}}),
    );
    assert_eq!(sim.take(pub_), [json!({"broadcasted": "news"})]);
    let over_ws = sim.take_text(sub);
    let body = json!({"hub": "/h", "channel": "news", "event": "e", "data": {"n": [1, 2]}});
    let reply = publish(&mut sim, PublishKind::Broadcast, body, "writer", "w");
    assert_eq!(reply, Ok(json!({"broadcasted": "news"})));
    assert_eq!(
        sim.take_text(sub),
        over_ws,
        "byte for byte the same delivery"
    );
    sim.assert_silent();
}

#[test]
fn an_api_direct_has_no_from() {
    let mut sim = sim();
    let to = sim.connect();
    let token = sim.token(to);
    sim.take(to);
    let body = json!({"hub": "/h", "client": token, "event": "ping", "data": 1});
    let reply = publish(&mut sim, PublishKind::Direct, body, "admin", "s3cret");
    assert_eq!(reply, Ok(json!({"directSent": token})));
    assert_eq!(sim.take(to), [json!({"event": "ping", "data": 1})]);
    let body = json!({"hub": "/h", "client": token, "event": "bare"});
    publish(&mut sim, PublishKind::Direct, body, "admin", "s3cret").unwrap();
    assert_eq!(sim.take(to), [json!({"event": "bare"})]);
}

#[test]
fn api_checks_run_credentials_then_permission_then_target() {
    let mut sim = sim();
    let to_nowhere = json!({"hub": "/h", "channel": "empty", "event": "e"});
    for (user, secret, expected) in [
        ("ghost", "x", "INVALID_USER"),
        ("writer", "wrong", "INVALID_CREDENTIALS"),
        ("reader", "r", "ACCESS_DENIED"),
        ("writer", "w", "INVALID_CHANNEL"),
    ] {
        let got = publish(
            &mut sim,
            PublishKind::Broadcast,
            to_nowhere.clone(),
            user,
            secret,
        );
        assert_eq!(got, Err(expected), "{user}");
    }
    let body = json!({"hub": "/h", "client": "00", "event": "e"});
    assert_eq!(
        publish(&mut sim, PublishKind::Direct, body, "public", "any"),
        Err("INVALID_CLIENT")
    );
    assert_eq!(sim.engine().stats().auth_failures, 2);
    sim.assert_silent();
}

#[test]
fn an_api_publish_as_a_phc_user_waits_for_the_verification() {
    let mut sim = phc_sim(json!({}));
    let sub = sim.connect();
    sim.send(sub, authenticate("hashed", "right"));
    sim.verified(sub, true);
    sim.take(sub);
    sim.subscribe(sub, "c");
    let publish = Publish::parse(
        PublishKind::Broadcast,
        br#"{"hub":"/h","channel":"c","event":"e"}"#,
    )
    .unwrap();
    let PublishStep::Verify(v) = sim.engine_mut().handle_publish(&publish, "hashed", "guess")
    else {
        panic!("a PHC user is verified off the engine")
    };
    assert_eq!((&*v.phc, v.secret.as_str()), (PHC, "guess"));
    let engine = sim.engine_mut();
    let mut verified =
        |phc: &str, ok: bool| match engine.handle_publish_verified(&publish, "hashed", phc, ok) {
            PublishStep::Done(result) => result,
            other => panic!("unexpected {other:?}"),
        };
    assert_eq!(verified(PHC, false), Err(ErrorCode::InvalidCredentials));
    // A hash the user no longer has (e.g. changed by a reload meanwhile) grants nothing.
    assert_eq!(
        verified("$argon2id$other", true),
        Err(ErrorCode::InvalidCredentials)
    );
    assert!(verified(PHC, true).is_ok());
    sim.drive();
    assert_eq!(sim.take(sub), [json!({"event": "e", "channel": "c"})]);
}

#[test]
fn stats_count_what_happened() {
    let mut sim = sim();
    let (a, b, c) = (sim.connect(), sim.connect(), sim.connect());
    let stats = sim.engine().stats();
    assert_eq!(
        (stats.clients, stats.messages_received, stats.deliveries),
        (3, 0, 0)
    );
    sim.auth(a, "admin", "s3cret");
    sim.auth(b, "admin", "s3cret");
    sim.send(c, authenticate("admin", "nope"));
    sim.subscribe(a, "x");
    sim.subscribe(b, "x");
    sim.subscribe(b, "y");
    sim.send(a, json!({"broadcast": {"channel": "x", "event": "e"}}));
    sim.remote_broadcast("y", Payload::text("{}"));
    let token = sim.token(c);
    sim.send(a, json!({"direct": {"client": token, "event": "e"}}));
    sim.send_text(a, "garbage");
    let stats = sim.engine().stats();
    assert_eq!(
        (stats.clients, stats.channels, stats.subscriptions),
        (3, 2, 3)
    );
    assert_eq!((stats.broadcasts, stats.directs), (1, 1));
    assert_eq!(
        stats.deliveries,
        2 + 1 + 1,
        "two subscribers, one remote, one direct"
    );
    assert_eq!(stats.auth_failures, 1);
    assert_eq!(stats.messages_received, 3 + 3 + 2 + 1);
}

/// With `set_whole_broadcasts`, a broadcast to several subscribers is one
/// `Output::Broadcast` naming them in the order they subscribed, and splits into exactly
/// the sends the engine makes without it; a broadcast to one subscriber stays a send.
#[test]
fn a_whole_broadcast_is_one_output_with_the_same_sends_inside() {
    let outputs = |whole: bool, channel: &str| -> Vec<Output> {
        let mut engine = Engine::new(&support::demo(), HashSeed::default());
        engine.set_whole_broadcasts(whole);
        let mut out = Vec::new();
        for n in 1..=4 {
            let id = ClientId(n);
            engine.handle_connect(id, token_for(n)).unwrap();
            let text = authenticate("backend", "secret").to_string();
            engine.handle_message(id, Message::Text(&text));
        }
        for n in [3, 1, 2] {
            let text = subscribe("many").to_string();
            engine.handle_message(ClientId(n), Message::Text(&text));
        }
        let text = subscribe("one").to_string();
        engine.handle_message(ClientId(2), Message::Text(&text));
        engine.drain_outputs(&mut out);
        out.clear();
        let text = broadcast("e", channel, json!(1)).to_string();
        engine.handle_message(ClientId(4), Message::Text(&text));
        engine.drain_outputs(&mut out);
        out
    };
    let whole = outputs(true, "many");
    let [
        Output::Broadcast { clients, payload },
        Output::Send { client, .. },
    ] = &whole[..]
    else {
        panic!("one broadcast, then the reply: {whole:?}")
    };
    assert_eq!(clients[..], [ClientId(3), ClientId(1), ClientId(2)]);
    assert_eq!(*client, ClientId(4));
    assert!(payload.as_text().unwrap().starts_with(r#"{"event":"e""#));
    let split: Vec<Output> = whole.into_iter().flat_map(Output::split).collect();
    assert_eq!(split, outputs(false, "many"));
    let one = outputs(true, "one");
    assert!(matches!(
        &one[..],
        [
            Output::Send {
                client: ClientId(2),
                ..
            },
            Output::Send { .. }
        ]
    ));
    assert_eq!(one, outputs(false, "one"));
}
