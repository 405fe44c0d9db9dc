//! `cargo fuzz run admin_inputs`: see `messenger_handover::fuzzing::admin_inputs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| messenger_handover::fuzzing::admin_inputs(data));
