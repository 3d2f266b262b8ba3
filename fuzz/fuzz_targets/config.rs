//! Fuzz target `config`: bytes as config text; parsing must never panic, and a config that
//! parses must serve each of its hubs (see `../drivers/config.rs`).

#![no_main]

#[path = "../drivers/config.rs"]
mod config;

libfuzzer_sys::fuzz_target!(|data: &[u8]| config::run(data));
