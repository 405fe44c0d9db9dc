//! `cargo fuzz run settings`: see `messenger_handover::fuzzing::settings`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| messenger_handover::fuzzing::settings(data));
