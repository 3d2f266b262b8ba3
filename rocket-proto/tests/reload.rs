//! `Engine::handle_reload`: new users, secrets, permissions and limits while clients stay
//! connected (`docs/PROTOCOL.md`, "Reload (SIGHUP)").

mod support;

use rocket_proto::Reloaded;
use serde_json::{Value, json};
use support::{Sim, config};

const PHC: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG";
const OTHER_PHC: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$b3RoZXJzYWx0$AAAAcudvJCsgt3ub+b+dWRWJTmaaJObG";

fn err(code: &str) -> Value {
    json!({ "err": code })
}

fn authenticate(user: &str, secret: &str) -> Value {
    json!({ "authenticate": { "user": user, "secret": secret } })
}

fn subscribe(channel: &str) -> Value {
    json!({ "subscribe": { "channel": channel } })
}

fn broadcast(channel: &str, data: Value) -> Value {
    json!({ "broadcast": { "event": "e", "channel": channel, "data": data } })
}

fn users() -> Value {
    json!({
        "admin": { "Secret": "s3cret", "Permission": 7 },
        "reader": { "Secret": "r", "Permission": 1 },
        "writer": { "Secret": "w", "Permission": 3 },
    })
}

/// `users()` with `change` applied (a `null` value removes the user).
fn users_with(change: Value) -> String {
    let mut users = users();
    for (name, user) in change.as_object().unwrap() {
        if user.is_null() {
            users.as_object_mut().unwrap().remove(name);
        } else {
            users[name] = user.clone();
        }
    }
    config(users, json!({}))
}

fn sim() -> Sim {
    Sim::new(&config(users(), json!({})))
}

#[test]
fn reloading_the_same_config_changes_nothing() {
    let mut sim = sim();
    let c = sim.connect();
    sim.auth(c, "reader", "r");
    sim.subscribe(c, "news");
    let reloaded = sim.reload(&config(users(), json!({})));
    assert!(reloaded.is_empty(), "{reloaded:?}");
    sim.assert_silent();
    assert_eq!(sim.engine().subscriber_count("news"), 1);
}

#[test]
fn a_new_secret_is_needed_for_new_authentications_and_sessions_keep_their_user() {
    let mut sim = sim();
    let old = sim.connect();
    sim.auth(old, "writer", "w");
    sim.subscribe(old, "news");
    let reloaded = sim.reload(&users_with(json!({
        "writer": { "Secret": "w2", "Permission": 3 },
        "carol": { "Secret": "c", "Permission": 1 },
    })));
    assert_eq!(reloaded.secret_changed, ["writer"]);
    assert_eq!(reloaded.added, ["carol"]);
    assert!(reloaded.removed.is_empty() && reloaded.permission_changed.is_empty());
    assert_eq!(reloaded.sessions_ended, 0);
    sim.assert_silent();
    // The session authenticated with the old secret goes on.
    sim.send(old, broadcast("news", json!(1)));
    assert_eq!(
        sim.take(old),
        [
            json!({ "event": "e", "channel": "news", "data": 1 }),
            json!({ "broadcasted": "news" })
        ]
    );
    let new = sim.connect();
    assert_eq!(
        sim.request(new, authenticate("writer", "w")),
        err("INVALID_CREDENTIALS")
    );
    sim.auth(new, "writer", "w2");
    sim.auth(new, "carol", "c");
}

#[test]
fn a_removed_users_session_becomes_anonymous_silently_and_loses_its_subscriptions() {
    let mut sim = sim();
    let (gone, stays) = (sim.connect(), sim.connect());
    sim.auth(gone, "reader", "r");
    sim.subscribe(gone, "news");
    sim.subscribe(gone, "solo");
    sim.auth(stays, "writer", "w");
    sim.subscribe(stays, "news");
    let reloaded = sim.reload(&users_with(json!({ "reader": null })));
    assert_eq!(reloaded.removed, ["reader"]);
    assert_eq!(reloaded.sessions_ended, 1);
    sim.assert_silent();
    assert_eq!(sim.engine().subscriber_count("news"), 1);
    assert_eq!(sim.engine().channel_count(), 1, "\"solo\" had no one else");
    // Broadcasts no longer reach it, and it is anonymous.
    sim.send(stays, broadcast("news", json!(2)));
    assert_eq!(sim.take(stays).len(), 2);
    assert!(sim.take(gone).is_empty());
    assert_eq!(sim.request(gone, subscribe("news")), err("ACCESS_DENIED"));
    assert_eq!(
        sim.request(gone, broadcast("news", json!(3))),
        err("ACCESS_DENIED")
    );
    assert_eq!(
        sim.request(gone, authenticate("reader", "r")),
        err("INVALID_USER")
    );
    sim.disconnect(gone);
    sim.disconnect(stays);
    assert!(sim.engine().is_idle());
}

#[test]
fn a_changed_permission_applies_from_the_next_request() {
    let mut sim = sim();
    let (w, r) = (sim.connect(), sim.connect());
    sim.auth(w, "writer", "w");
    sim.subscribe(w, "news");
    sim.auth(r, "reader", "r");
    sim.subscribe(r, "news");
    assert_eq!(
        sim.request(r, broadcast("news", json!(0))),
        err("ACCESS_DENIED")
    );
    // writer keeps READ only; reader gains WRITE.
    let reloaded = sim.reload(&users_with(json!({
        "writer": { "Secret": "w", "Permission": 1 },
        "reader": { "Secret": "r", "Permission": 3 },
    })));
    assert_eq!(reloaded.permission_changed, ["reader", "writer"]);
    assert_eq!(reloaded.sessions_unsubscribed, 0);
    sim.assert_silent();
    assert_eq!(
        sim.request(w, broadcast("news", json!(1))),
        err("ACCESS_DENIED")
    );
    sim.send(r, broadcast("news", json!(2)));
    let delivery = json!({ "event": "e", "channel": "news", "data": 2 });
    assert_eq!(
        sim.take(r),
        [delivery.clone(), json!({ "broadcasted": "news" })]
    );
    assert_eq!(sim.take(w), [delivery], "still subscribed");
}

#[test]
fn a_session_that_loses_read_is_unsubscribed_and_stays_authenticated() {
    let mut sim = sim();
    let (w, a) = (sim.connect(), sim.connect());
    sim.auth(w, "writer", "w");
    sim.subscribe(w, "news");
    sim.auth(a, "admin", "s3cret");
    sim.subscribe(a, "news");
    let reloaded = sim.reload(&users_with(json!({
        "writer": { "Secret": "w", "Permission": 2 },
    })));
    assert_eq!(reloaded.sessions_unsubscribed, 1);
    assert_eq!(reloaded.sessions_ended, 0);
    sim.assert_silent();
    assert_eq!(sim.engine().subscriber_count("news"), 1);
    assert_eq!(sim.request(w, subscribe("news")), err("ACCESS_DENIED"));
    // It may still write: its broadcast reaches the admin, not itself.
    sim.send(w, broadcast("news", json!(1)));
    assert_eq!(sim.take(w), [json!({ "broadcasted": "news" })]);
    assert_eq!(
        sim.take(a),
        [json!({ "event": "e", "channel": "news", "data": 1 })]
    );
}

fn phc_config(secret: &str, permission: u8) -> String {
    config(
        json!({ "hashed": { "Secret": secret, "Permission": permission } }),
        json!({ "MaxFailedAuth": 0 }),
    )
}

#[test]
fn a_verification_running_across_a_reload_cannot_grant_a_replaced_secret() {
    let mut sim = Sim::new(&phc_config(PHC, 3));
    let c = sim.connect();
    sim.send(c, authenticate("hashed", "old secret"));
    let reloaded = sim.reload(&phc_config(OTHER_PHC, 3));
    assert_eq!(reloaded.secret_changed, ["hashed"]);
    // The frontend checked the old hash and found the secret right: refused all the same.
    sim.verified(c, true);
    assert_eq!(sim.take(c), [err("INVALID_CREDENTIALS")]);
    assert_eq!(
        sim.auth_failures,
        [(c, "hashed".to_owned(), "INVALID_CREDENTIALS")]
    );
    assert_eq!(sim.request(c, subscribe("news")), err("ACCESS_DENIED"));
    // The next attempt is checked against the new hash.
    sim.send(c, authenticate("hashed", "new secret"));
    assert_eq!(sim.verifications.last().unwrap().1, OTHER_PHC);
    sim.verified(c, true);
    assert_eq!(sim.take(c), [json!({ "authenticated": "hashed" })]);
}

#[test]
fn a_verification_running_across_a_reload_that_kept_the_hash_concludes_with_the_new_permission() {
    let mut sim = Sim::new(&phc_config(PHC, 3));
    let c = sim.connect();
    sim.send(c, authenticate("hashed", "secret"));
    let reloaded = sim.reload(&phc_config(PHC, 2));
    assert_eq!(reloaded.permission_changed, ["hashed"]);
    assert!(reloaded.secret_changed.is_empty());
    sim.verified(c, true);
    assert_eq!(sim.take(c), [json!({ "authenticated": "hashed" })]);
    assert_eq!(sim.request(c, subscribe("news")), err("ACCESS_DENIED"));
}

#[test]
fn a_verification_for_a_removed_user_fails() {
    let mut sim = Sim::new(&phc_config(PHC, 3));
    let c = sim.connect();
    sim.send(c, authenticate("hashed", "secret"));
    let reloaded = sim.reload(&config(json!({}), json!({ "MaxFailedAuth": 0 })));
    assert_eq!(reloaded.removed, ["hashed"]);
    assert_eq!(reloaded.sessions_ended, 0, "it had no session yet");
    sim.verified(c, true);
    assert_eq!(sim.take(c), [err("INVALID_CREDENTIALS")]);
    sim.disconnect(c);
    assert!(sim.engine().is_idle());
}

#[test]
fn new_limits_apply_from_the_next_request() {
    let mut sim = Sim::new(&config(
        users(),
        json!({ "MaxSubscriptionsPerClient": 3, "MaxFailedAuth": 5 }),
    ));
    let c = sim.connect();
    sim.auth(c, "reader", "r");
    for channel in ["a", "b", "c"] {
        sim.subscribe(c, channel);
    }
    for _ in 0..2 {
        assert_eq!(
            sim.request(c, authenticate("reader", "x")),
            err("INVALID_CREDENTIALS")
        );
    }
    sim.auth(c, "reader", "r");
    for channel in ["a", "b", "c"] {
        sim.subscribe(c, channel);
    }
    let reloaded = sim.reload(&config(
        users(),
        json!({ "MaxSubscriptionsPerClient": 1, "MaxFailedAuth": 3 }),
    ));
    let mut expected = Reloaded::default();
    expected.limits_changed = true;
    assert_eq!(reloaded, expected, "only the limits changed");
    assert_eq!(
        sim.engine().channel_count(),
        3,
        "subscriptions are kept past a lowered limit"
    );
    assert_eq!(sim.request(c, subscribe("d")), err("LIMIT_EXCEEDED"));
    // Two failures so far; the third reaches the new MaxFailedAuth.
    sim.send(c, authenticate("reader", "x"));
    assert_eq!(
        sim.take_raw(c),
        [
            support::Received::Text(r#"{"err":"INVALID_CREDENTIALS"}"#.into()),
            support::Received::Close {
                code: 1008,
                reason: "too many failed authentications".into()
            }
        ]
    );
    assert!(sim.engine().is_idle());
}

/// The publish API's credentials and permission come from the users in force.
#[test]
fn the_publish_api_uses_the_reloaded_users() {
    use rocket_proto::{Publish, PublishKind, PublishStep};
    let mut sim = sim();
    let sub = sim.connect();
    sim.auth(sub, "reader", "r");
    sim.subscribe(sub, "news");
    let body = json!({"hub": "/h", "channel": "news", "event": "e", "data": 1}).to_string();
    let publish = Publish::parse(PublishKind::Broadcast, body.as_bytes()).unwrap();
    let run = |sim: &mut Sim, user: &str, secret: &str| {
        let step = sim.engine_mut().handle_publish(&publish, user, secret);
        sim.drive();
        match step {
            PublishStep::Done(Ok(_)) => "ok",
            PublishStep::Done(Err(e)) => e.name(),
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(run(&mut sim, "writer", "w"), "ok");
    assert_eq!(sim.take(sub).len(), 1);
    sim.reload(&users_with(json!({
        "writer": { "Secret": "w2", "Permission": 3 },
        "admin": { "Secret": "s3cret", "Permission": 1 },
    })));
    assert_eq!(run(&mut sim, "writer", "w"), "INVALID_CREDENTIALS");
    assert_eq!(run(&mut sim, "admin", "s3cret"), "ACCESS_DENIED");
    assert!(sim.take(sub).is_empty());
    assert_eq!(run(&mut sim, "writer", "w2"), "ok");
    assert_eq!(
        sim.take(sub),
        [json!({ "event": "e", "channel": "news", "data": 1 })]
    );
}
