//! History, recovery, presence and join/leave (`docs/PROTOCOL.md`, "History, recovery and
//! presence"): offsets and epochs, `since`, `history`, `presence`, join/leave on every path a
//! client leaves a channel, `Size` and `TtlMs` with injected time.

mod support;

use std::time::{Duration, Instant};

use rocket_proto::{
    ClientId, Engine, EngineConfig, HashSeed, Output, Publish, PublishKind, PublishStep,
};
use serde_json::{Value, json};
use support::{Sim, config};

const TTL: Duration = Duration::from_millis(1000);

fn users() -> Value {
    json!({
        "admin": { "Secret": "s", "Permission": 7 },
        "reader": { "Secret": "r", "Permission": 1 },
        "writer": { "Secret": "w", "Permission": 2 },
    })
}

/// A hub with `History` (`Size` = `size`, `TtlMs` = 1000), `Presence` and `JoinLeave`.
fn hub_json(size: usize, presence: bool, join_leave: bool) -> String {
    let mut c: Value = serde_json::from_str(&config(users(), json!({}))).unwrap();
    c["History"] = json!({ "Size": size, "TtlMs": TTL.as_millis() as u64 });
    c["Presence"] = json!(presence);
    c["JoinLeave"] = json!(join_leave);
    c.to_string()
}

/// A History hub (no presence, no join/leave) whose engine has been given the time `t0`.
fn history_sim(size: usize) -> (Sim, Instant) {
    let mut sim = Sim::new(&hub_json(size, false, false));
    let t0 = Instant::now();
    sim.time(t0);
    (sim, t0)
}

fn admin(sim: &mut Sim) -> ClientId {
    let c = sim.connect();
    sim.auth(c, "admin", "s");
    c
}

/// Subscribes and returns the whole reply.
fn sub(sim: &mut Sim, c: ClientId, channel: &str) -> Value {
    sim.request(c, json!({ "subscribe": { "channel": channel } }))
}

fn sub_since(sim: &mut Sim, c: ClientId, channel: &str, offset: u64, epoch: &str) -> Value {
    sim.request(
        c,
        json!({ "subscribe": { "channel": channel, "since": { "offset": offset, "epoch": epoch } } }),
    )
}

/// Broadcasts `data` to `channel` from `c` and returns `c`'s messages (reply and own copy).
fn bcast(sim: &mut Sim, c: ClientId, channel: &str, data: Value) -> Vec<Value> {
    sim.send(
        c,
        json!({ "broadcast": { "event": "e", "channel": channel, "data": data } }),
    );
    sim.take(c)
}

fn epoch_of(reply: &Value) -> String {
    reply["epoch"].as_str().expect("an epoch").to_owned()
}

#[test]
fn off_by_default_a_version_1_client_sees_nothing_new() {
    let mut sim = Sim::new(&config(users(), json!({})));
    let (a, b) = (admin(&mut sim), admin(&mut sim));
    sim.subscribe(a, "c");
    // `since` is an ignored field here, even when malformed.
    let reply = sim.request(
        b,
        json!({ "subscribe": { "channel": "c", "since": { "offset": 3, "epoch": "x" } } }),
    );
    assert_eq!(reply, json!({ "subscribed": "c" }));
    assert_eq!(
        sim.request(b, json!({ "subscribe": { "channel": "c", "since": 5 } })),
        json!({ "subscribed": "c" })
    );
    assert!(sim.take(a).is_empty(), "no join");
    assert_eq!(
        bcast(&mut sim, a, "c", json!(1)),
        vec![
            json!({ "event": "e", "channel": "c", "data": 1 }),
            json!({ "broadcasted": "c" })
        ]
    );
    assert_eq!(
        sim.one(b),
        json!({ "event": "e", "channel": "c", "data": 1 })
    );
    for unknown in [
        json!({ "history": { "channel": "c" } }),
        json!({ "presence": { "channel": "c" } }),
    ] {
        assert_eq!(sim.request(a, unknown), json!({ "err": "INVALID_PAYLOAD" }));
    }
    sim.request(b, json!({ "unsubscribe": { "channel": "c" } }));
    assert!(sim.take(a).is_empty(), "no leave");
    assert_eq!(sim.engine().poll_timeout(), None);
    assert_eq!(sim.engine().history_count(), 0);
}

#[test]
fn every_broadcast_carries_the_next_offset_and_the_channels_epoch() {
    let (mut sim, _) = history_sim(100);
    let (a, b) = (admin(&mut sim), admin(&mut sim));
    let first = sub(&mut sim, a, "c");
    let epoch = epoch_of(&first);
    assert_eq!(
        first,
        json!({ "subscribed": "c", "offset": 0, "epoch": epoch })
    );
    assert_eq!(epoch.len(), 16, "{epoch}");
    let other = sub(&mut sim, a, "d");
    assert_ne!(epoch_of(&other), epoch, "each channel has its own epoch");
    for n in 1..=3u64 {
        let got = bcast(&mut sim, b, "c", json!(n));
        assert_eq!(
            got,
            vec![json!({ "broadcasted": "c" })],
            "the reply is unchanged"
        );
        assert_eq!(
            sim.one(a),
            json!({ "event": "e", "channel": "c", "data": n, "offset": n, "epoch": epoch })
        );
    }
    // Offsets are per channel.
    bcast(&mut sim, b, "d", Value::Null);
    assert_eq!(sim.one(a)["offset"], 1);
    // A second subscriber is told where the channel is.
    assert_eq!(
        sub(&mut sim, b, "c"),
        json!({ "subscribed": "c", "offset": 3, "epoch": epoch })
    );
    // The publish API numbers its broadcasts in the same sequence.
    let publish = Publish::parse(
        PublishKind::Broadcast,
        br#"{"hub":"/h","channel":"c","event":"api"}"#,
    )
    .unwrap();
    let PublishStep::Done(Ok(_)) = sim.engine_mut().handle_publish(&publish, "admin", "s") else {
        panic!("published")
    };
    sim.drive();
    let expected = json!({ "event": "api", "channel": "c", "offset": 4, "epoch": epoch });
    assert_eq!(sim.one(a), expected);
    assert_eq!(sim.one(b), expected);
}

#[test]
fn a_broadcast_is_encoded_once_and_its_bytes_shared_by_every_recipient() {
    let config = EngineConfig::from_json(&hub_json(10, false, false)).unwrap();
    let mut engine = Engine::new(&config, HashSeed::default());
    let mut out = Vec::new();
    for n in 1..=3u64 {
        engine
            .handle_connect(ClientId(n), support::token_for(n))
            .unwrap();
        for request in [
            r#"{"authenticate":{"user":"admin","secret":"s"}}"#,
            r#"{"subscribe":{"channel":"c"}}"#,
        ] {
            engine.handle_message(ClientId(n), rocket_proto::Message::Text(request));
        }
    }
    engine.drain_outputs(&mut out);
    out.clear();
    engine.handle_message(
        ClientId(1),
        rocket_proto::Message::Text(r#"{"broadcast":{"event":"e","channel":"c","data":1}}"#),
    );
    engine.drain_outputs(&mut out);
    let deliveries: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::Send { payload, .. } if payload.as_bytes().starts_with(b"{\"event\"") => {
                Some(payload.bytes().as_ptr())
            }
            _ => None,
        })
        .collect();
    assert_eq!(deliveries.len(), 3);
    assert!(
        deliveries.iter().all(|p| *p == deliveries[0]),
        "one encoding"
    );
}

#[test]
fn epochs_are_deterministic_for_a_seed_and_differ_between_seeds() {
    let config = EngineConfig::from_json(&hub_json(10, false, false)).unwrap();
    let epoch = |seed| {
        let mut sim = Sim::with_config(&config, HashSeed(seed));
        let a = admin(&mut sim);
        epoch_of(&sub(&mut sim, a, "c"))
    };
    assert_eq!(epoch([1, 2, 3, 4]), epoch([1, 2, 3, 4]));
    assert_ne!(epoch([1, 2, 3, 4]), epoch([5, 6, 7, 8]));
}

#[test]
fn since_recovers_exactly_the_missed_deliveries_as_they_were_delivered() {
    let (mut sim, _) = history_sim(100);
    let (a, b) = (admin(&mut sim), admin(&mut sim));
    let epoch = epoch_of(&sub(&mut sim, a, "c"));
    sub(&mut sim, b, "c");
    for n in 1..=2 {
        bcast(&mut sim, a, "c", json!(n));
    }
    sim.take(b);
    // b loses its connection after offset 2; a goes on publishing.
    sim.disconnect(b);
    let mut delivered = Vec::new();
    for n in 3..=5 {
        bcast(&mut sim, a, "c", json!({ "n": n, "s": "é\"" }));
    }
    sim.send(a, json!({ "history": { "channel": "c" } }));
    delivered.extend(sim.take(a)[0]["history"]["events"].as_array().unwrap()[2..].to_vec());
    let b = admin(&mut sim);
    let reply = sub_since(&mut sim, b, "c", 2, &epoch);
    assert_eq!(
        reply,
        json!({ "subscribed": "c", "offset": 5, "epoch": epoch, "recovered": true,
                "events": delivered })
    );
    let offsets: Vec<_> = reply["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, [3, 4, 5]);
    // Live deliveries follow with the next offset.
    bcast(&mut sim, a, "c", json!(6));
    assert_eq!(sim.one(b)["offset"], 6);
    // Nothing missed: recovered, no events.
    let c = admin(&mut sim);
    assert_eq!(
        sub_since(&mut sim, c, "c", 6, &epoch),
        json!({ "subscribed": "c", "offset": 6, "epoch": epoch, "recovered": true, "events": [] })
    );
    // Another epoch, or an offset the channel never reached: not recovered, no events.
    for (offset, e) in [(3, "other"), (7, epoch.as_str()), (0, "")] {
        let d = admin(&mut sim);
        assert_eq!(
            sub_since(&mut sim, d, "c", offset, e),
            json!({ "subscribed": "c", "offset": 6, "epoch": epoch, "recovered": false }),
            "{offset} {e}"
        );
    }
}

#[test]
fn the_replayed_text_is_byte_for_byte_the_delivered_text() {
    let (mut sim, _) = history_sim(100);
    let (a, b) = (admin(&mut sim), admin(&mut sim));
    let epoch = epoch_of(&sub(&mut sim, a, "c"));
    sim.send_text(
        b,
        r#"{"broadcast":{"event":"e","channel":"c","data":{ "spaced" : [1, 2.50] }}}"#,
    );
    let live = sim.take_text(a);
    let b2 = admin(&mut sim);
    sim.send(
        b2,
        json!({ "subscribe": { "channel": "c", "since": { "offset": 0, "epoch": epoch } } }),
    );
    let reply = sim.take_text(b2).pop().unwrap();
    assert!(
        reply.contains(&format!("\"events\":[{}]", live[0])),
        "{reply}"
    );
}

#[test]
fn size_overflow_drops_the_oldest_and_recovery_from_too_far_back_fails() {
    let (mut sim, _) = history_sim(3);
    let a = admin(&mut sim);
    let epoch = epoch_of(&sub(&mut sim, a, "c"));
    for n in 1..=5 {
        bcast(&mut sim, a, "c", json!(n));
    }
    let h = sim.request(a, json!({ "history": { "channel": "c" } }));
    let kept: Vec<_> = h["history"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["data"].as_u64().unwrap())
        .collect();
    assert_eq!(kept, [3, 4, 5], "at most Size events, the newest");
    let b = admin(&mut sim);
    assert_eq!(sub_since(&mut sim, b, "c", 1, &epoch)["recovered"], false);
    assert!(
        sub_since(&mut sim, b, "c", 1, &epoch)
            .get("events")
            .is_none()
    );
    let r = sub_since(&mut sim, b, "c", 2, &epoch);
    assert_eq!(r["recovered"], true);
    assert_eq!(r["events"].as_array().unwrap().len(), 3);
}

#[test]
fn history_request_needs_read_and_honours_limit() {
    let (mut sim, _) = history_sim(10);
    let a = admin(&mut sim);
    let epoch = epoch_of(&sub(&mut sim, a, "c"));
    for n in 1..=4 {
        bcast(&mut sim, a, "c", json!(n));
    }
    let datas = |v: &Value| -> Vec<u64> {
        v["history"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["data"].as_u64().unwrap())
            .collect()
    };
    let h = sim.request(a, json!({ "history": { "channel": "c", "limit": 2 } }));
    assert_eq!(h["history"]["channel"], "c");
    assert_eq!(h["history"]["offset"], 4);
    assert_eq!(h["history"]["epoch"], epoch.as_str());
    assert_eq!(datas(&h), [3, 4]);
    for all in [
        json!({ "history": { "channel": "c" } }),
        json!({ "history": { "channel": "c", "limit": 0 } }),
        json!({ "history": { "channel": "c", "limit": 99 } }),
    ] {
        assert_eq!(datas(&sim.request(a, all)), [1, 2, 3, 4]);
    }
    // A reader needs no subscription; a writer and an anonymous client lack READ.
    let r = sim.connect();
    sim.auth(r, "reader", "r");
    assert_eq!(
        datas(&sim.request(r, json!({ "history": { "channel": "c", "limit": 1 } }))),
        [4]
    );
    let w = sim.connect();
    for c in [w, sim.connect()] {
        if c == w {
            sim.auth(w, "writer", "w");
        }
        assert_eq!(
            sim.request(c, json!({ "history": { "channel": "c" } })),
            json!({ "err": "ACCESS_DENIED" })
        );
    }
    // Shape first: a bad limit is INVALID_PAYLOAD even without READ.
    assert_eq!(
        sim.request(w, json!({ "history": { "channel": "c", "limit": -1 } })),
        json!({ "err": "INVALID_PAYLOAD" })
    );
    // A channel with no history: offset 0, empty epoch, no events.
    assert_eq!(
        sim.request(a, json!({ "history": { "channel": "none" } })),
        json!({ "history": { "channel": "none", "offset": 0, "epoch": "", "events": [] } })
    );
    // A malformed `since` on a History hub is a mistyped field.
    for since in [
        json!(5),
        json!({ "offset": 1 }),
        json!({ "offset": -1, "epoch": "" }),
    ] {
        assert_eq!(
            sim.request(
                a,
                json!({ "subscribe": { "channel": "c", "since": since } })
            ),
            json!({ "err": "INVALID_PAYLOAD" })
        );
    }
    assert_eq!(
        sim.request(a, json!({ "presence": { "channel": "c" } })),
        json!({ "err": "INVALID_PAYLOAD" }),
        "no Presence on this hub"
    );
}

#[test]
fn history_outlives_the_last_subscriber_for_ttl_after_the_last_broadcast_then_expires() {
    let (mut sim, t0) = history_sim(10);
    let a = admin(&mut sim);
    let epoch = epoch_of(&sub(&mut sim, a, "c"));
    assert_eq!(sim.engine().poll_timeout(), None, "nothing to expire yet");
    bcast(&mut sim, a, "c", json!(1));
    // The broadcast asks to be stamped soon after the last known time.
    let stamp_at = sim.engine().poll_timeout().expect("a stamp is due");
    assert!(stamp_at > t0 && stamp_at <= t0 + Duration::from_millis(10));
    let t1 = t0 + Duration::from_millis(5);
    sim.time(t1);
    assert_eq!(sim.engine().poll_timeout(), Some(t1 + TTL));
    // Another broadcast later pushes the expiry back.
    let t2 = t1 + Duration::from_millis(500);
    sim.time(t2);
    bcast(&mut sim, a, "c", json!(2));
    sim.time(t2);
    assert_eq!(sim.engine().poll_timeout(), Some(t2 + TTL));
    // The last subscriber leaves: the channel is gone, its history is kept.
    sim.request(a, json!({ "unsubscribe": { "channel": "c" } }));
    assert_eq!(sim.engine().channel_count(), 0);
    assert_eq!(sim.engine().history_count(), 1);
    assert_eq!(
        bcast(&mut sim, a, "c", json!(3)),
        vec![json!({ "err": "INVALID_CHANNEL" })],
        "nothing is stored for a channel without subscribers"
    );
    sim.time(t1 + TTL); // t1's expiry no longer applies
    assert_eq!(sim.engine().history_count(), 1);
    sim.time(t2 + TTL - Duration::from_millis(1));
    let b = admin(&mut sim);
    sim.disconnect(a);
    let r = sub_since(&mut sim, b, "c", 0, &epoch);
    assert_eq!(
        r["recovered"], true,
        "kept until TtlMs after the last broadcast"
    );
    assert_eq!(r["events"].as_array().unwrap().len(), 2);
    sim.disconnect(b);
    sim.time(t2 + TTL);
    assert_eq!(sim.engine().history_count(), 0, "expired");
    assert!(sim.engine().is_idle());
    assert_eq!(sim.engine().poll_timeout(), None);
    // The channel starts over with a new epoch: the old position is not recovered.
    let c = admin(&mut sim);
    let r = sub_since(&mut sim, c, "c", 2, &epoch);
    assert_eq!(r["offset"], 0);
    assert_ne!(epoch_of(&r), epoch);
    assert_eq!(r["recovered"], false);
}

#[test]
fn expiry_while_subscribed_keeps_offset_and_epoch_but_drops_the_events() {
    let (mut sim, t0) = history_sim(10);
    let a = admin(&mut sim);
    let epoch = epoch_of(&sub(&mut sim, a, "c"));
    bcast(&mut sim, a, "c", json!(1));
    bcast(&mut sim, a, "c", json!(2));
    sim.time(t0);
    sim.time(t0 + TTL);
    assert_eq!(
        sim.engine().history_count(),
        1,
        "the channel still has a subscriber"
    );
    let b = admin(&mut sim);
    assert_eq!(
        sub_since(&mut sim, b, "c", 2, &epoch),
        json!({ "subscribed": "c", "offset": 2, "epoch": epoch, "recovered": true, "events": [] })
    );
    assert_eq!(sub_since(&mut sim, b, "c", 1, &epoch)["recovered"], false);
    bcast(&mut sim, a, "c", json!(3));
    assert_eq!(sim.one(b)["offset"], 3, "offsets go on without a gap");
    // An expired stream with subscribers is dropped when the last one leaves.
    let t3 = t0 + TTL * 2;
    sim.time(t3);
    sim.time(t3 + TTL);
    assert_eq!(sim.engine().history_count(), 1);
    sim.disconnect(a);
    sim.disconnect(b);
    assert!(sim.engine().is_idle());
}

#[test]
fn until_the_engine_is_given_the_time_nothing_expires() {
    let mut sim = Sim::new(&hub_json(10, false, false));
    let a = admin(&mut sim);
    sub(&mut sim, a, "c");
    bcast(&mut sim, a, "c", json!(1));
    assert_eq!(sim.engine().poll_timeout(), None);
    let t = Instant::now();
    sim.time(t);
    assert_eq!(sim.engine().poll_timeout(), Some(t + TTL));
    // Time never goes backwards for the engine.
    sim.time(t - Duration::from_millis(500));
    bcast(&mut sim, a, "c", json!(2));
    sim.time(t - Duration::from_millis(400));
    assert_eq!(sim.engine().poll_timeout(), Some(t + TTL));
}

#[test]
fn subscribing_again_with_since_answers_like_a_first_subscribe_without_duplicates() {
    let (mut sim, _) = history_sim(10);
    let a = admin(&mut sim);
    let epoch = epoch_of(&sub(&mut sim, a, "c"));
    bcast(&mut sim, a, "c", json!(1));
    let r = sub_since(&mut sim, a, "c", 0, &epoch);
    assert_eq!(r["recovered"], true);
    assert_eq!(r["events"].as_array().unwrap().len(), 1);
    assert_eq!(sim.engine().subscriber_count("c"), 1);
    let got = bcast(&mut sim, a, "c", json!(2));
    assert_eq!(got.len(), 2, "one copy and the reply: {got:?}");
}

/// Clients drop and recover at random points while a publisher runs: every client sees
/// every offset exactly once, in order.
#[test]
fn recovery_is_exact_under_interleaved_publishing() {
    let (mut sim, _) = history_sim(1000);
    let publisher = admin(&mut sim);
    let mut epoch = String::new();
    let mut seen: Vec<(ClientId, Vec<u64>)> = Vec::new();
    for _ in 0..4 {
        let c = admin(&mut sim);
        epoch = epoch_of(&sub(&mut sim, c, "c"));
        seen.push((c, Vec::new()));
    }
    let mut rng = 7u64;
    for n in 1..=500u64 {
        bcast(&mut sim, publisher, "c", json!(n));
        for (c, offsets) in &mut seen {
            for m in sim.take(*c) {
                offsets.push(m["offset"].as_u64().unwrap());
            }
        }
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        if rng >> 60 == 0 {
            let i = (rng >> 32) as usize % seen.len();
            let (old, offsets) = &mut seen[i];
            sim.disconnect(*old);
            // The publisher goes on while the client is away.
            bcast(&mut sim, publisher, "c", json!("gap"));
            let c = admin(&mut sim);
            let last = *offsets.last().unwrap_or(&0);
            let r = sub_since(&mut sim, c, "c", last, &epoch);
            assert_eq!(r["recovered"], true);
            for e in r["events"].as_array().unwrap() {
                offsets.push(e["offset"].as_u64().unwrap());
            }
            *old = c;
        }
    }
    let last = sim.request(
        publisher,
        json!({ "history": { "channel": "c", "limit": 1 } }),
    )["history"]["offset"]
        .as_u64()
        .unwrap();
    assert!(last > 500);
    for (_, offsets) in &seen {
        assert_eq!(*offsets, (1..=last).collect::<Vec<_>>());
    }
}

#[test]
fn presence_lists_the_subscribers_with_their_users() {
    let mut sim = Sim::new(&hub_json(10, true, false));
    let a = admin(&mut sim);
    let r = sim.connect();
    sim.auth(r, "reader", "r");
    let presence = |sim: &mut Sim, c| sim.request(c, json!({ "presence": { "channel": "c" } }));
    assert_eq!(
        presence(&mut sim, r),
        json!({ "presence": { "channel": "c", "clients": {} } })
    );
    sub(&mut sim, a, "c");
    sub(&mut sim, r, "c");
    assert_eq!(
        presence(&mut sim, a),
        json!({ "presence": { "channel": "c", "clients": {
            sim.token(a): { "user": "admin" }, sim.token(r): { "user": "reader" } } } })
    );
    sim.send(r, json!({ "logout": true }));
    sim.take(r);
    assert_eq!(
        presence(&mut sim, a),
        json!({ "presence": { "channel": "c", "clients": { sim.token(a): { "user": "admin" } } } })
    );
    assert_eq!(presence(&mut sim, r), json!({ "err": "ACCESS_DENIED" }));
    let w = sim.connect();
    sim.auth(w, "writer", "w");
    assert_eq!(presence(&mut sim, w), json!({ "err": "ACCESS_DENIED" }));
    sim.assert_silent(); // no join/leave without JoinLeave
}

fn join(sim: &Sim, who: ClientId, user: &str) -> Value {
    json!({ "join": { "channel": "c", "client": sim.token(who), "user": user } })
}

fn leave(sim: &Sim, who: ClientId, user: &str) -> Value {
    json!({ "leave": { "channel": "c", "client": sim.token(who), "user": user } })
}

#[test]
fn join_goes_to_the_others_after_their_own_subscribe_and_never_to_oneself() {
    let mut sim = Sim::new(&hub_json(10, false, true));
    let (a, b, c) = (admin(&mut sim), admin(&mut sim), admin(&mut sim));
    sub(&mut sim, a, "c");
    sim.assert_silent();
    let reply = sub(&mut sim, b, "c");
    assert_eq!(reply["subscribed"], "c", "b gets its reply only");
    assert_eq!(sim.take(a), vec![join(&sim, b, "admin")]);
    sim.send(c, json!({ "subscribe": { "channel": "c" } }));
    assert_eq!(sim.take(c).len(), 1, "no join for itself");
    assert_eq!(sim.take(a), vec![join(&sim, c, "admin")]);
    assert_eq!(sim.take(b), vec![join(&sim, c, "admin")]);
    // Subscribing again changes nothing.
    sub(&mut sim, c, "c");
    sim.assert_silent();
    // Unsubscribing from a channel one is not in tells nobody.
    let d = admin(&mut sim);
    sim.request(d, json!({ "unsubscribe": { "channel": "c" } }));
    sim.assert_silent();
}

#[test]
fn leave_is_told_on_every_path_out_of_a_channel() {
    let mut sim = Sim::new(&hub_json(10, false, true));
    let watcher = admin(&mut sim);
    sub(&mut sim, watcher, "c");
    type Path = fn(&mut Sim, ClientId);
    let paths: [(&str, Path); 6] = [
        ("unsubscribe", |sim, c| {
            sim.send(c, json!({ "unsubscribe": { "channel": "c" } }))
        }),
        ("logout", |sim, c| sim.send(c, json!({ "logout": true }))),
        ("re-authenticate", |sim, c| {
            sim.send(
                c,
                json!({ "authenticate": { "user": "reader", "secret": "r" } }),
            )
        }),
        ("failed re-authentication", |sim, c| {
            sim.send(
                c,
                json!({ "authenticate": { "user": "admin", "secret": "x" } }),
            )
        }),
        ("disconnect request", |sim, c| {
            sim.send(c, json!({ "disconnect": true }))
        }),
        // The socket closed: the client left, was idle or a slow consumer.
        ("connection lost", |sim, c| sim.disconnect(c)),
    ];
    for (what, path) in paths {
        let c = admin(&mut sim);
        sub(&mut sim, c, "c");
        assert_eq!(sim.take(watcher), vec![join(&sim, c, "admin")], "{what}");
        path(&mut sim, c);
        assert_eq!(sim.take(watcher), vec![leave(&sim, c, "admin")], "{what}");
        sim.take_raw(c);
        if !sim.is_gone(c) {
            sim.disconnect(c);
        }
        assert_eq!(sim.engine().subscriber_count("c"), 1, "{what}");
        sim.assert_silent();
    }
    // The last one out tells nobody (nobody is left).
    sim.disconnect(watcher);
    assert!(sim.engine().is_idle());
}
