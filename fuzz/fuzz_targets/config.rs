#![no_main]
//! `cargo fuzz run -s none config`: see `hl7d_fuzz::config::config`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| hl7d_fuzz::config::config(data));
