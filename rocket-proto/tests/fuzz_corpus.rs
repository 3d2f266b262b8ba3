//! Replays the committed `frames` fuzz corpus (`fuzz/corpus/frames`) through the same
//! driver the fuzz target uses, so that every CI run checks the engine's contract on it
//! without a fuzzer or a nightly toolchain. (`rocket-server/tests/fuzz_corpus.rs` replays
//! the `config` corpus.)
//!
//! The `frames` seeds are defined below as readable event lists; the committed files must
//! match them. After changing a seed, rewrite the files with
//! `ROCKET_WRITE_SEEDS=1 cargo test -p rocket-proto --test fuzz_corpus`.
//! Files that the fuzzer found (a crash turned into a regression test) may be added to the
//! corpus directories under any other name.

#[path = "../../fuzz/drivers/corpus.rs"]
mod corpus;
#[path = "../../fuzz/drivers/frames.rs"]
mod frames;

use corpus::{corpus, replay};
use frames::Event;

#[test]
fn frames_corpus_keeps_the_contract() {
    replay("frames", frames::run);
}

#[test]
fn frames_seed_files_match_their_definitions() {
    let write = std::env::var_os("ROCKET_WRITE_SEEDS").is_some();
    for (name, events) in seeds() {
        let bytes = frames::encode(&events);
        assert_eq!(
            Event::decode_all(&bytes),
            events,
            "{name} does not round-trip"
        );
        frames::run_events(&events);
        let path = corpus("frames").join(name);
        if write {
            std::fs::write(&path, &bytes).expect("writable corpus");
        } else {
            let committed = std::fs::read(&path).unwrap_or_else(|e| {
                panic!(
                    "{}: {e} (write it with ROCKET_WRITE_SEEDS=1)",
                    path.display()
                )
            });
            assert!(
                committed == bytes,
                "{name} is stale: rewrite it with ROCKET_WRITE_SEEDS=1"
            );
        }
    }
}

#[test]
fn short_inputs_decode_and_run() {
    // Arguments past the end read as zero; lengths take what is left.
    assert_eq!(
        Event::decode_all(&[0x04]),
        [Event::Authenticate {
            slot: 0,
            user: 0,
            secret: 0
        }]
    );
    assert_eq!(
        Event::decode_all(&[0x12, 9, 0, b'{']),
        [Event::Text {
            slot: 1,
            text: b"{".to_vec()
        }]
    );
    // Every byte string is a valid input.
    for n in 0..=255u8 {
        frames::run(&[n, n.wrapping_mul(7), n.wrapping_add(3)]);
    }
}

// Shorthands for the seeds.
fn connect(slot: u8) -> Event {
    Event::Connect { slot }
}
fn auth(slot: u8, user: u8, secret: u8) -> Event {
    Event::Authenticate { slot, user, secret }
}
fn sub(slot: u8, channel: u8) -> Event {
    Event::Subscribe { slot, channel }
}
fn unsub(slot: u8, channel: u8) -> Event {
    Event::Unsubscribe { slot, channel }
}
fn cast(slot: u8, channel: u8, data: u8) -> Event {
    Event::Broadcast {
        slot,
        channel,
        data,
    }
}
fn text(slot: u8, text: &str) -> Event {
    Event::Text {
        slot,
        text: text.as_bytes().to_vec(),
    }
}
fn direct(slot: u8, target: u8, how: u8, data: u8) -> Event {
    Event::Direct {
        slot,
        target,
        how,
        data,
    }
}

// Users and channels of the templates (indices into frames::USERS and frames::CHANNELS).
const ADMIN: u8 = 0;
const READER: u8 = 1;
const WRITER: u8 = 2;
const HASHED: u8 = 3;
const GHOST: u8 = 4;
const RIGHT: u8 = 0;
const WRONG: u8 = 1;
const EMPTY: u8 = 2;
const NEWS: u8 = 0;
const SPORT: u8 = 1;
const CHAT: u8 = 2;
const ESCAPED: u8 = 3;
const UNICODE: u8 = 4;

/// The hand-made `frames` seeds, by file name.
fn seeds() -> Vec<(&'static str, Vec<Event>)> {
    let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    vec![
        (
            "auth-subscribe-broadcast",
            vec![
                connect(0),
                connect(1),
                auth(0, ADMIN, RIGHT),
                auth(1, READER, RIGHT),
                sub(1, NEWS),
                sub(0, NEWS),
                cast(0, NEWS, 5),
                cast(0, NEWS, 4),
                unsub(1, NEWS),
                cast(0, NEWS, 0),
                unsub(0, NEWS),
                cast(0, NEWS, 1),
            ],
        ),
        (
            "permissions",
            vec![
                connect(0),
                connect(1),
                sub(0, NEWS),
                cast(0, NEWS, 2),
                auth(0, READER, RIGHT),
                sub(0, NEWS),
                cast(0, NEWS, 2),
                auth(1, WRITER, WRONG),
                sub(1, NEWS),
                cast(1, NEWS, 3),
                direct(1, 0, 0, 3),
                direct(0, 1, 0, 3),
            ],
        ),
        (
            "direct",
            vec![
                connect(0),
                connect(1),
                connect(2),
                auth(0, WRITER, EMPTY),
                direct(0, 1, 0, 2),
                direct(0, 0, 0, 4),
                direct(0, 1, 1, 0),
                direct(0, 1, 2, 1),
                direct(0, 1, 3, 5),
                direct(0, 3, 0, 1),
                Event::Disconnect { slot: 1 },
                direct(0, 1, 0, 2),
                connect(1),
                direct(0, 1, 0, 6),
                Event::DirectNamed {
                    slot: 0,
                    client: b"not a token".to_vec(),
                },
                Event::DirectNamed {
                    slot: 0,
                    client: Vec::new(),
                },
            ],
        ),
        (
            "logout",
            vec![
                connect(0),
                connect(1),
                auth(0, ADMIN, RIGHT),
                auth(1, READER, RIGHT),
                sub(0, NEWS),
                sub(0, SPORT),
                sub(1, NEWS),
                Event::Logout {
                    slot: 0,
                    object: false,
                },
                sub(0, NEWS),
                cast(0, NEWS, 2),
                Event::Logout {
                    slot: 1,
                    object: true,
                },
                Event::Logout {
                    slot: 1,
                    object: false,
                },
                cast(0, NEWS, 2),
                auth(0, ADMIN, RIGHT),
                cast(0, NEWS, 2),
            ],
        ),
        (
            "disconnect-request",
            vec![
                connect(0),
                connect(1),
                auth(0, ADMIN, RIGHT),
                auth(1, ADMIN, RIGHT),
                sub(0, CHAT),
                sub(1, CHAT),
                Event::DisconnectRequest {
                    slot: 0,
                    object: false,
                },
                sub(0, CHAT),
                cast(1, CHAT, 2),
                direct(1, 0, 0, 2),
                connect(0),
                Event::DisconnectRequest {
                    slot: 0,
                    object: true,
                },
                Event::DisconnectRequest {
                    slot: 1,
                    object: false,
                },
                Event::Disconnect { slot: 1 },
            ],
        ),
        (
            "disconnect-mid-channel",
            vec![
                connect(0),
                connect(1),
                connect(2),
                auth(0, ADMIN, RIGHT),
                auth(1, READER, RIGHT),
                auth(2, READER, RIGHT),
                sub(1, NEWS),
                sub(2, NEWS),
                sub(0, NEWS),
                Event::Disconnect { slot: 1 },
                cast(0, NEWS, 2),
                Event::Disconnect { slot: 0 },
                text(0, r#"{"broadcast":{"event":"e","channel":"news"}}"#),
                connect(0),
                auth(0, WRITER, WRONG),
                cast(0, NEWS, 2),
            ],
        ),
        (
            "failed-auth",
            vec![
                connect(0),
                auth(0, GHOST, RIGHT),
                auth(0, ADMIN, WRONG),
                auth(0, ADMIN, RIGHT),
                sub(0, NEWS),
                auth(0, READER, EMPTY),
                sub(0, NEWS),
                connect(0),
                auth(0, ADMIN, EMPTY),
                auth(0, WRITER, EMPTY),
            ],
        ),
        (
            "subscription-limit",
            vec![
                connect(0),
                auth(0, ADMIN, RIGHT),
                sub(0, NEWS),
                sub(0, SPORT),
                sub(0, CHAT),
                sub(0, ESCAPED),
                sub(0, NEWS),
                unsub(0, SPORT),
                unsub(0, SPORT),
                sub(0, ESCAPED),
                sub(0, UNICODE),
                cast(0, ESCAPED, 3),
                auth(0, ADMIN, RIGHT),
                sub(0, UNICODE),
            ],
        ),
        (
            "swap-remove",
            vec![
                connect(0),
                connect(1),
                connect(2),
                connect(3),
                auth(0, ADMIN, RIGHT),
                auth(1, ADMIN, RIGHT),
                auth(2, ADMIN, RIGHT),
                auth(3, ADMIN, RIGHT),
                sub(0, NEWS),
                sub(1, NEWS),
                sub(2, NEWS),
                sub(3, NEWS),
                sub(2, SPORT),
                sub(0, SPORT),
                unsub(0, NEWS),
                cast(3, NEWS, 2),
                Event::Logout {
                    slot: 1,
                    object: false,
                },
                cast(3, NEWS, 2),
                Event::Disconnect { slot: 3 },
                cast(2, NEWS, 2),
                cast(2, SPORT, 2),
                unsub(2, NEWS),
                cast(0, NEWS, 2),
            ],
        ),
        (
            "escaped-names",
            vec![
                connect(0),
                auth(0, ADMIN, RIGHT),
                sub(0, ESCAPED),
                sub(0, UNICODE),
                cast(0, ESCAPED, 3),
                cast(0, UNICODE, 4),
                Event::SubscribeNamed {
                    slot: 0,
                    name: "\u{0}\u{1f}\\\"/\u{2028}".as_bytes().to_vec(),
                },
                Event::SubscribeNamed {
                    slot: 0,
                    name: vec![b'n'; 255],
                },
                unsub(0, ESCAPED),
                Event::SubscribeNamed {
                    slot: 0,
                    name: vec![0xff, 0xfe, b'x'],
                },
                Event::SubscribeNamed {
                    slot: 0,
                    name: Vec::new(),
                },
                text(
                    0,
                    r#"{"broadcast":{"event":"\u0000\"","channel":"\u00e9\u20ac\ud83d\ude00"}}"#,
                ),
            ],
        ),
        (
            "phc-verify",
            vec![
                connect(0),
                connect(1),
                auth(0, HASHED, RIGHT),
                sub(0, NEWS),
                direct(1, 0, 0, 1),
                Event::Verified { slot: 0, ok: true },
                sub(0, NEWS),
                cast(0, NEWS, 2),
                Event::Verified { slot: 0, ok: true },
                auth(1, HASHED, WRONG),
                Event::Verified { slot: 1, ok: false },
                auth(1, HASHED, EMPTY),
                Event::Verified { slot: 1, ok: false },
                auth(1, HASHED, RIGHT),
                Event::Verified { slot: 1, ok: false },
                Event::Verified { slot: 1, ok: true },
                auth(0, HASHED, RIGHT),
                Event::Disconnect { slot: 0 },
                Event::Verified { slot: 0, ok: true },
                connect(0),
                auth(0, HASHED, WRONG),
                Event::DisconnectRequest {
                    slot: 0,
                    object: false,
                },
                Event::Verified { slot: 0, ok: true },
                Event::DisconnectRequest {
                    slot: 0,
                    object: false,
                },
            ],
        ),
        (
            "garbage",
            vec![
                connect(0),
                text(0, ""),
                text(0, "null"),
                text(0, "{}"),
                text(0, "[]"),
                text(0, "tru"),
                text(0, r#"{"subscribe":{"channel":"c"},"logout":true}"#),
                text(0, r#"{"logout":true,"logout":true}"#),
                text(0, r#"{"logout":false}"#),
                text(0, r#"{"publish":{"channel":"c"}}"#),
                text(0, r#"{"subscribe":{"channel":5}}"#),
                text(0, r#"{"authenticate":{"user":"admin"}}"#),
                text(0, r#"{"direct":{"event":"e","client":1}}"#),
                Event::Text {
                    slot: 0,
                    text: vec![b'{', 0xc3, 0x28, b'}'],
                },
                Event::Binary {
                    slot: 0,
                    bytes: br#"{"logout":true}"#.to_vec(),
                },
                Event::Binary {
                    slot: 0,
                    bytes: Vec::new(),
                },
                text(0, r#"{"logout":true}"#),
            ],
        ),
        (
            "deep-nesting",
            vec![
                connect(0),
                connect(1),
                auth(0, ADMIN, RIGHT),
                sub(1, NEWS),
                auth(1, READER, RIGHT),
                sub(1, NEWS),
                text(0, &deep(200)),
                text(0, &"{\"a\":".repeat(300)),
                cast(0, NEWS, 7),
                cast(0, NEWS, 8),
                direct(0, 1, 0, 7),
                direct(0, 1, 0, 8),
                Event::BroadcastRaw {
                    slot: 0,
                    channel: NEWS,
                    data: format!("[\"{}\"]", "[".repeat(300)).into_bytes(),
                },
                text(
                    0,
                    &format!(r#"{{"subscribe":{{"channel":"c","x":{}}}}}"#, deep(10_000)),
                ),
            ],
        ),
        (
            "raw-data",
            vec![
                connect(0),
                auth(0, ADMIN, RIGHT),
                sub(0, SPORT),
                Event::BroadcastRaw {
                    slot: 0,
                    channel: SPORT,
                    data: b"1e999999".to_vec(),
                },
                Event::BroadcastRaw {
                    slot: 0,
                    channel: SPORT,
                    data: br#" { "a" : [ 1 , 2 ] } "#.to_vec(),
                },
                Event::BroadcastRaw {
                    slot: 0,
                    channel: SPORT,
                    data: br#""\ud800""#.to_vec(),
                },
                Event::BroadcastRaw {
                    slot: 0,
                    channel: SPORT,
                    data: b"[1,2,".to_vec(),
                },
                Event::BroadcastRaw {
                    slot: 0,
                    channel: SPORT,
                    data: b"\"a\"} ,\"x\":{\"y\":1".to_vec(),
                },
                Event::BroadcastRaw {
                    slot: 0,
                    channel: SPORT,
                    data: Vec::new(),
                },
                Event::BroadcastRaw {
                    slot: 0,
                    channel: SPORT,
                    data: b"-0.0e-7".to_vec(),
                },
            ],
        ),
        (
            "remote-broadcast",
            vec![
                connect(0),
                connect(1),
                auth(0, READER, RIGHT),
                auth(1, ADMIN, RIGHT),
                sub(0, NEWS),
                sub(1, NEWS),
                sub(1, CHAT),
                Event::RemoteBroadcast { channel: NEWS },
                Event::RemoteBroadcast { channel: CHAT },
                Event::RemoteBroadcast { channel: SPORT },
                Event::Logout {
                    slot: 1,
                    object: false,
                },
                Event::RemoteBroadcast { channel: CHAT },
            ],
        ),
        (
            "duplicate-connect",
            vec![
                connect(0),
                connect(0),
                connect(1),
                connect(1),
                Event::Disconnect { slot: 0 },
                Event::Disconnect { slot: 0 },
                connect(0),
                Event::Disconnect { slot: 3 },
                text(3, r#"{"logout":true}"#),
            ],
        ),
        (
            "everything",
            vec![
                connect(0),
                connect(1),
                connect(2),
                connect(3),
                auth(0, ADMIN, RIGHT),
                auth(1, READER, RIGHT),
                auth(2, WRITER, RIGHT),
                auth(3, ADMIN, WRONG),
                sub(0, NEWS),
                sub(1, NEWS),
                sub(1, SPORT),
                sub(2, NEWS),
                cast(2, NEWS, 5),
                cast(2, SPORT, 3),
                cast(2, CHAT, 2),
                direct(2, 1, 0, 5),
                direct(1, 2, 0, 5),
                sub(3, CHAT),
                auth(3, ADMIN, RIGHT),
                sub(3, CHAT),
                cast(0, CHAT, 6),
                Event::RemoteBroadcast { channel: SPORT },
                Event::Logout {
                    slot: 0,
                    object: false,
                },
                Event::DisconnectRequest {
                    slot: 1,
                    object: false,
                },
                cast(3, NEWS, 1),
                Event::Disconnect { slot: 2 },
            ],
        ),
    ]
}
