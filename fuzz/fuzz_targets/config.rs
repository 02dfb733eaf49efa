#![no_main]
//! `cargo fuzz run -s none config`: see `hl7d_fuzz::app::config`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| hl7d_fuzz::app::config(data));
