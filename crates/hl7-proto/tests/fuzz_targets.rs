//! The protocol fuzz targets of `fuzz/` run on every `cargo test`: each seed once, then 512
//! mutated seeds (deterministic; see `fuzz/src/in_test.rs` for the knobs). The targets
//! themselves, and the properties they check, are in `fuzz/src/proto.rs`; coverage-guided
//! runs use the same functions through `cargo fuzz` (docs/testing.md).
//!
//! Why proptest and not bolero: proptest is already this crate's dev-dependency, shrinks a
//! failure to a small input, and needs nothing beyond stable Rust; cargo-fuzz covers the
//! coverage-guided side.

use std::path::PathBuf;

#[path = "../../../fuzz/src/in_test.rs"]
mod in_test;
#[path = "../../../fuzz/src/proto.rs"]
mod proto;

/// Byte strings worth splicing into HL7 and MLLP inputs (as `fuzz/dict/hl7.dict`).
const HL7_TOKENS: &[&[u8]] = &[
    b"MSH|^~\\&|",
    b"MSH|^~\\&#|",
    b"MSH",
    b"\x0b",
    b"\x1c",
    b"\x1c\x0d",
    b"\r",
    b"\n",
    b"|",
    b"^",
    b"~",
    b"\\",
    b"&",
    b"FHS|^~\\&|",
    b"BHS|^~\\&|",
    b"BTS|",
    b"FTS|",
    b"\\X0D0A\\",
    b"\\E\\",
    b"|AL|",
    b"|NE|",
    b"|ER|",
    b"|2.3|",
    b"|2.5|",
    b"8859/1",
    b"ISO IR87",
    b"BIG-5",
    b"UNICODE UTF-8",
    b"\x1b$B",
    b"\x1b(B",
    b"\xe2\x82\xac",
    b"\x01\x02",
    b"\rPID|1||",
    b"\rPV1|1|I",
    b"\rORC|NW|",
    b"\rOBR|1|",
    b"^^^",
    b"\"\"",
    b"+0100",
    b".1234",
    b"%/",
];

fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

#[test]
fn fuzz_mllp_decoder() {
    in_test::run(&root(), "mllp_decoder", proto::mllp_decoder, HL7_TOKENS);
}

#[test]
fn fuzz_message() {
    in_test::run(&root(), "message", proto::message, HL7_TOKENS);
}

#[test]
fn fuzz_batch() {
    in_test::run(&root(), "batch", proto::batch, HL7_TOKENS);
}

#[test]
fn fuzz_charset() {
    in_test::run(&root(), "charset", proto::charset, HL7_TOKENS);
}

#[test]
fn fuzz_extract() {
    in_test::run(&root(), "extract", proto::extract, HL7_TOKENS);
}
