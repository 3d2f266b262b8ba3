//! Fuzz target `history`: bytes become a sequence of connects, subscribes (with and
//! without `since`), broadcasts, `history` and `presence` requests, departures and steps of
//! time on a History hub with Presence and JoinLeave, each checked against the model of
//! `../drivers/history.rs` (offsets, epochs, recovery, expiry, membership).

#![no_main]

#[allow(dead_code)]
#[path = "../drivers/history.rs"]
mod history;
#[allow(dead_code)]
#[path = "../../rocket-proto/tests/support/mod.rs"]
mod support;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(difference) = history::run(history::Op::decode_all(data)) {
        panic!("the engine left the model: {difference}");
    }
});
