//! The fuzz targets of `fuzz/` that need the hl7d crate (`fuzz/src/app.rs`: the config
//! parser, the ACK parser of `hl7d send` and the PROXY header reader) on every `cargo
//! test`: each seed once, then 512 mutated seeds. See `fuzz/src/in_test.rs` for the knobs and docs/testing.md for
//! cargo-fuzz runs.

use std::path::PathBuf;

#[path = "../../fuzz/src/app.rs"]
mod app;
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
    b"proxy_protocol = true\n",
    b"proxy_from = [\"10.0.0.5\", \"::/0\"]\n",
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

/// Pieces of ACKs and headers (as `fuzz/dict/hl7.dict`).
const ACK_TOKENS: &[&[u8]] = &[
    b"MSH|^~\\&|",
    b"\rMSA|AA|",
    b"\rMSA|CE|",
    b"\rERR||MSH^1^10|207^Application internal error^HL70357|E||||",
    b"|",
    b"^",
    b"\\",
    b"\r",
    b"\x06",
    b"\x15",
    b"UNICODE UTF-8",
    b"8859/1",
    b"ISO IR87",
    b"\\X0D\\",
];

/// Pieces of PROXY protocol headers (as `fuzz/dict/proxy.dict`).
const PROXY_TOKENS: &[&[u8]] = &[
    b"PROXY ",
    b"TCP4 ",
    b"TCP6 ",
    b"UNKNOWN",
    b"192.0.2.7 ",
    b"2001:db8::7 ",
    b"::ffff:10.0.0.5 ",
    b"51234 ",
    b"2575",
    b"\r\n",
    b"\r\n\r\n\x00\r\nQUIT\n",
    b"\x21\x11\x00\x0c",
    b"\x21\x21\x00\x24",
    b"\x20\x00\x00\x00",
    b"\x21\x31\x00\xd8",
    b"\x01\xd8",
    b"\xff\xff",
    b"\x16\x03\x01",
    b"\x0b",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn fuzz_config() {
    in_test::run(&root(), "config", app::config, CONFIG_TOKENS);
}

#[test]
fn fuzz_sender_ack() {
    in_test::run(&root(), "sender_ack", app::sender_ack, ACK_TOKENS);
}

#[test]
fn fuzz_proxy_header() {
    in_test::run(&root(), "proxy_header", app::proxy_header, PROXY_TOKENS);
}
