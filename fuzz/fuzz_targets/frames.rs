//! Fuzz target `frames`: bytes become a sequence of connects, disconnects and frames of
//! several clients, fed to one engine whose contract is checked after every event (see
//! `../drivers/frames.rs` for the byte format and the checks).

#![no_main]

// The corpus test uses the rest of the driver (the encoder).
#[allow(dead_code)]
#[path = "../drivers/frames.rs"]
mod frames;

libfuzzer_sys::fuzz_target!(|data: &[u8]| frames::run(data));
