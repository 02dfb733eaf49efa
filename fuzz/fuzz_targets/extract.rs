#![no_main]
//! `cargo fuzz run -s none extract`: see `hl7d_fuzz::proto::extract`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| hl7d_fuzz::proto::extract(data));
