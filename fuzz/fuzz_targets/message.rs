#![no_main]
//! `cargo fuzz run -s none message`: see `hl7d_fuzz::proto::message`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| hl7d_fuzz::proto::message(data));
