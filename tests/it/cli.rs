//! The command line: usage errors exit 64; `check-config` names the listener and key at
//! fault; `serve` refuses a bad configuration before binding anything.

use std::process::Command;

use crate::support::tempdir;

fn hl7d(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hl7d")).args(args).output().expect("run hl7d");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

fn check(toml: &str) -> (i32, String) {
    let dir = tempdir("cli");
    let path = dir.join("hl7d.toml");
    std::fs::write(&path, toml).unwrap();
    hl7d(&["check-config", "--config", path.to_str().unwrap()])
}

const GOOD: &str = r#"
[store]
path = "data"

[[listener]]
name = "lab"
listen = "127.0.0.1:2575"
plaintext = true

[[listener]]
name = "adt"
listen = "127.0.0.1:2576"
plaintext = true
ack = "always"
encoding = "windows-1252"
allow_ips = ["10.0.0.0/8", "127.0.0.1"]
[listener.framing]
start = "0B"
end = "1C 0D"
"#;

#[test]
fn check_config_accepts_a_good_file() {
    let (code, out) = check(GOOD);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("2 listener(s)"), "{out}");
}

#[test]
fn check_config_names_a_wrong_key() {
    let (code, out) = check(&GOOD.replace("ack = \"always\"", "acks = \"always\""));
    assert_eq!(code, 78, "{out}");
    assert!(out.contains("adt") && out.contains("acks"), "{out}");
}

#[test]
fn check_config_names_a_duplicate_port() {
    let (code, out) = check(&GOOD.replace("127.0.0.1:2576", "127.0.0.1:2575"));
    assert_eq!(code, 78, "{out}");
    assert!(out.contains("adt") && out.contains("listen") && out.contains("lab"), "{out}");
}

#[test]
fn check_config_names_a_bad_cidr() {
    let (code, out) = check(&GOOD.replace("10.0.0.0/8", "10.0.0/8"));
    assert_eq!(code, 78, "{out}");
    assert!(out.contains("adt") && out.contains("allow_ips") && out.contains("10.0.0/8"), "{out}");
}

#[test]
fn serve_refuses_a_bad_config() {
    let dir = tempdir("cli-serve");
    let path = dir.join("hl7d.toml");
    std::fs::write(&path, GOOD.replace("plaintext = true\n\n[[listener]]", "\n[[listener]]")).unwrap();
    let (code, out) = hl7d(&["serve", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 78, "{out}");
    assert!(out.contains("lab") && out.contains("plaintext"), "{out}");
}

/// #13 item 8: clap's usage errors exited 2, the code `send` and `bench` use for "delivery
/// failed"; the README promises 64. `--help` and `--version` are not errors.
#[test]
fn usage_errors_exit_64_and_help_exits_0() {
    for args in [
        &["send"][..],
        &["send", "--to", "127.0.0.1:1"],
        &["send", "--to", "127.0.0.1:1", "--ack-timeout", "soon", "x.hl7"],
        &["bench", "--connections", "0", "--to", "127.0.0.1:1"],
        &["messages", "list", "--limit", "many"],
        &["--no-such-flag"],
        &["no-such-command"],
        &[],
    ] {
        let (code, out) = hl7d(args);
        assert_eq!(code, 64, "hl7d {args:?}: {out}");
        assert!(!out.is_empty(), "hl7d {args:?} says why");
    }
    for args in [&["--help"][..], &["--version"], &["send", "--help"], &["messages", "purge", "--help"]] {
        let (code, out) = hl7d(args);
        assert_eq!(code, 0, "hl7d {args:?}: {out}");
    }
}
