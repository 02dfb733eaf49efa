//! Helpers for the config tests of every file under `config/`.

use super::Config;

pub(super) const SHA256_HEX: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
pub(super) const SHA1_HEX: &str = "a94a8fe5ccb19ba61c4c0873d391e987982fbbd3";

/// One plaintext loopback listener "lab" with `extra` lines added to its table.
pub(super) fn lab(extra: &str) -> String {
    format!("[[listener]]\nname = \"lab\"\nlisten = \"127.0.0.1:2575\"\nplaintext = true\n{extra}\n")
}

pub(super) fn parse_ok(text: &str) -> Config {
    match Config::from_toml_str(text) {
        Ok(config) => config,
        Err(error) => panic!("config should parse, got:\n{error}\n---\n{text}"),
    }
}

pub(super) fn parse_err(text: &str) -> String {
    match Config::from_toml_str(text) {
        Ok(config) => panic!("config should be refused, got {config:#?}\n---\n{text}"),
        Err(error) => error.to_string(),
    }
}

pub(super) fn hex<const N: usize>(digits: &str) -> [u8; N] {
    hl7_proto::hex::decode_array(digits.as_bytes()).expect("test digits")
}
