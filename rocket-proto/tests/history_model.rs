//! Model-based test of history, recovery, presence and join/leave (proptest): random
//! sequences of steps, checked against the model in `fuzz/drivers/history.rs` (which the
//! fuzz target `history` runs on fuzzer-chosen sequences).

#[path = "../../fuzz/drivers/corpus.rs"]
mod corpus;
#[path = "../../fuzz/drivers/history.rs"]
mod history;
mod support;

use history::{CHANNELS, Op, SLOTS};
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;

fn op() -> impl Strategy<Value = Op> {
    let slot = 0..SLOTS;
    let ch = 0..CHANNELS.len();
    prop_oneof![
        2 => slot.clone().prop_map(Op::Connect),
        1 => slot.clone().prop_map(Op::Disconnect),
        1 => slot.clone().prop_map(Op::Logout),
        3 => (slot.clone(), ch.clone(), any::<bool>())
            .prop_map(|(slot, channel, since)| Op::Subscribe { slot, channel, since }),
        1 => (slot.clone(), ch.clone()).prop_map(|(s, c)| Op::Unsubscribe(s, c)),
        8 => (slot.clone(), ch.clone()).prop_map(|(s, c)| Op::Broadcast(s, c)),
        1 => (slot.clone(), ch.clone(), 0..5u64)
            .prop_map(|(slot, channel, limit)| Op::History { slot, channel, limit }),
        1 => (slot, ch).prop_map(|(s, c)| Op::Presence(s, c)),
        2 => (0..1500u64).prop_map(Op::Tick),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 300,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn history_matches_the_model(ops in proptest::collection::vec(op(), 1..150)) {
        history::run(ops).map_err(TestCaseError::fail)?;
    }
}

#[test]
fn every_byte_string_decodes_into_steps() {
    assert!(Op::decode_all(&[]).is_empty());
    let ops = Op::decode_all(&[0, 1, 3, 1, 0, 1, 5, 1, 0, 8, 200, 3]);
    assert_eq!(ops.len(), 5, "{ops:?}");
    assert!(matches!(
        ops[1],
        Op::Subscribe {
            slot: 1,
            channel: 0,
            since: true
        }
    ));
    assert!(matches!(ops[3], Op::Tick(1200)));
    // The last step's missing fields read as 0.
    assert!(matches!(
        ops[4],
        Op::Subscribe {
            slot: 0,
            channel: 0,
            since: false
        }
    ));
    history::run(ops).unwrap();
}

/// The committed seeds of the fuzz target (and what the fuzzer found and was folded in)
/// replay through the model in every test run.
#[test]
fn history_corpus_keeps_the_model() {
    corpus::replay("history", |data| {
        if let Err(difference) = history::run(Op::decode_all(data)) {
            panic!("{difference}");
        }
    });
}
