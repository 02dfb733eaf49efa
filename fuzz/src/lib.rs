//! hl7d fuzz targets. Each function takes arbitrary bytes and panics when a property of
//! the code under test does not hold; `fuzz_targets/*.rs` hand them to libFuzzer, and the
//! workspace tests include the same files to run them under `cargo test`.

pub mod app;
pub mod proto;
