//! `cargo fuzz run fulfillment_request`: see `messenger_handover::fuzzing::fulfillment_request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| messenger_handover::fuzzing::fulfillment_request(data));
