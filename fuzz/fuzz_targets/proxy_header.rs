#![no_main]
//! `cargo fuzz run -s none proxy_header`: see `hl7d_fuzz::app::proxy_header`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| hl7d_fuzz::app::proxy_header(data));
