#![no_main]
//! `cargo fuzz run -s none mllp_decoder`: see `hl7d_fuzz::proto::mllp_decoder`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| hl7d_fuzz::proto::mllp_decoder(data));
