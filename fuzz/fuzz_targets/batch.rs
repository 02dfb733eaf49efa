#![no_main]
//! `cargo fuzz run -s none batch`: see `hl7d_fuzz::proto::batch`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| hl7d_fuzz::proto::batch(data));
