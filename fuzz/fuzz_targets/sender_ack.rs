#![no_main]
//! `cargo fuzz run -s none sender_ack`: see `hl7d_fuzz::app::sender_ack`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| hl7d_fuzz::app::sender_ack(data));
