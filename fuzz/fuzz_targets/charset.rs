#![no_main]
//! `cargo fuzz run -s none charset`: see `hl7d_fuzz::proto::charset`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| hl7d_fuzz::proto::charset(data));
