//! `cargo fuzz run messenger_delivery`: see `messenger_handover::fuzzing::messenger_delivery`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| messenger_handover::fuzzing::messenger_delivery(data));
