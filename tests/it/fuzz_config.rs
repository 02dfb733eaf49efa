//! The config fuzz target of `fuzz/` (`fuzz/src/config.rs`) on every `cargo test`: each seed
//! once (fuzz/seeds/config and the TOML examples of docs/configuration.md), then 512 mutated
//! seeds. See `fuzz/src/in_test.rs` for the knobs and docs/testing.md for cargo-fuzz runs.

use std::path::PathBuf;

#[path = "../../fuzz/src/config.rs"]
mod target;
#[path = "../../fuzz/src/in_test.rs"]
mod in_test;

/// TOML fragments worth splicing in (as `fuzz/dict/config.dict`).
const CONFIG_TOKENS: &[&[u8]] = &[
    b"[store]\n",
    b"[admin]\n",
    b"[log]\n",
    b"[audit]\n",
    b"[[listener]]\n",
    b"[listener.tls]\n",
    b"[listener.framing]\n",
    b"name = \"lab\"\n",
    b"name = \"lab\"\n",
    b"listen = \"127.0.0.1:2575\"\n",
    b"listen = \"[::1]:0\"\n",
    b"plaintext = true\n",
    b"ack = \"never\"\n",
    b"encoding = \"iso-8859-1\"\n",
    b"idle_timeout = \"1h 30m\"\n",
    b"frame_timeout = \"0s\"\n",
    b"write_timeout = \"99999999999999999d\"\n",
    b"max_message_size = \"1 KB\"\n",
    b"max_message_size = -1\n",
    b"max_connections = 100000\n",
    b"allow_ips = [\"10.0.0.1/8\", \"::1\"]\n",
    b"duplicate_window = \"0\"\n",
    b"retention = \"1m\"\n",
    b"start = \"0B 1C\"\n",
    b"end = \"1C0D0A0B0C\"\n",
    b"client_auth = \"required\"\n",
    b"client_thumbprints = [\"sha1:00\"]\n",
    b"\"",
    b"=",
    b"\n",
    b"\xc3\xa9",
    b"\xe2\x80\x8e",
];

#[test]
fn fuzz_config() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    in_test::run(&root, "config", target::config, CONFIG_TOKENS);
}
