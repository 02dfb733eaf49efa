//! Honest start-up (#13 items 5, 9, 13, 14): `check-config` makes every check `serve`
//! makes short of binding (and binds with `--bind`), `serve` creates nothing for a
//! configuration that cannot start and exits 78 for it, `serve --listen` moves the embedded
//! default, the README's "Try it" block runs as written, fatal errors are printed once, and
//! the machine-readable `--json` outputs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{tempdir, WAIT};

const BIN: &str = env!("CARGO_BIN_EXE_hl7d");
const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");

/// Runs hl7d in `dir`; (exit code, stdout, stderr).
fn hl7d_in(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).current_dir(dir).output().expect("run hl7d");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// deploy/hl7d.example.toml with its paths moved into `dir` (`data/`, `logs/`, `tls/`) and
/// its addresses on 127.0.0.1:0, written as `dir/hl7d.toml`. Nothing else changes, so what
/// the example gets wrong this copy gets wrong too.
fn example_config(dir: &Path) -> PathBuf {
    let example = std::fs::read_to_string(Path::new(MANIFEST_DIR).join("deploy/hl7d.example.toml")).unwrap();
    let text = example
        .replace("\"/var/lib/hl7d\"", "\"data\"")
        .replace("\"/var/log/hl7d/audit.jsonl\"", "\"logs/audit.jsonl\"")
        .replace("\"/etc/hl7d/tls/", "\"tls/")
        .replace("listen = \"0.0.0.0:2575\"", "listen = \"127.0.0.1:0\"")
        .replace("listen = \"127.0.0.1:9275\"", "listen = \"127.0.0.1:0\"");
    for original in ["/var/lib/hl7d\"", "/var/log/hl7d/", "\"/etc/hl7d/tls/", "0.0.0.0:2575\"", "9275\""] {
        let live = text.lines().filter(|line| !line.trim_start().starts_with('#'));
        assert!(!live.clone().any(|line| line.contains(original)), "the example changed: {original}");
    }
    let path = dir.join("hl7d.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A development PKI (CA, server, client) in `dir`.
fn dev_pki(dir: &Path) -> hl7d::tls::pki::DevPki {
    hl7d::tls::pki::dev_pki(dir, &[], false).expect("dev pki")
}

/// Every entry of `dir`, names only, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn check_config_refuses_the_example_config_until_its_files_exist() {
    let dir = tempdir("startup-example");
    let config = example_config(&dir);
    let config = config.to_str().unwrap();

    // As shipped: no certificate, no audit directory. It used to say "ok".
    let (code, out, err) = hl7d_in(&dir, &["check-config", "--config", config]);
    assert_eq!(code, 78, "{out}{err}");
    assert!(err.contains("listener \"lab\": cannot read") && err.contains("tls/server.pem"), "{err}");
    assert!(err.contains("audit file") && err.contains("logs") && err.contains("does not exist"), "{err}");
    assert!(!out.contains("ok"), "{out}");

    // With the files in place it passes, and the check left nothing behind.
    dev_pki(&dir.join("tls"));
    std::fs::create_dir(dir.join("logs")).unwrap();
    let (code, out, err) = hl7d_in(&dir, &["check-config", "--config", config]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ok (1 listener(s))"), "{out}");
    assert_eq!(entries(&dir), ["hl7d.toml", "logs", "tls"]);
    assert!(entries(&dir.join("logs")).is_empty());

    // A misspelt certificate path.
    let text = std::fs::read_to_string(config).unwrap().replace("tls/server.pem", "tls/sever.pem");
    std::fs::write(config, text).unwrap();
    let (code, out, err) = hl7d_in(&dir, &["check-config", "--config", config]);
    assert_eq!(code, 78, "{out}{err}");
    assert!(err.contains("sever.pem") && err.contains("No such file"), "{err}");
}

#[test]
fn check_config_reads_and_matches_certificates_keys_and_cas() {
    let dir = tempdir("startup-tls");
    let pki = dir.join("pki");
    let other = dir.join("other");
    dev_pki(&pki);
    dev_pki(&other);
    let check = |cert: &Path, key: &Path, client_ca: Option<&Path>| {
        let tls = match client_ca {
            None => format!("cert = {cert:?}\nkey = {key:?}\n"),
            Some(ca) => format!(
                "cert = {cert:?}\nkey = {key:?}\nclient_auth = \"required\"\n\
                 client_thumbprints = [\"sha256:{}\"]\nclient_ca = {ca:?}\n",
                "ab".repeat(32)
            ),
        };
        let text = format!(
            "[store]\npath = \"data\"\n[[listener]]\nname = \"lab\"\nlisten = \"127.0.0.1:0\"\n[listener.tls]\n{tls}"
        );
        std::fs::write(dir.join("hl7d.toml"), text).unwrap();
        hl7d_in(&dir, &["check-config", "--config", "hl7d.toml"])
    };

    let (code, out, err) = check(&pki.join("server.pem"), &pki.join("server.key"), Some(&pki.join("ca.pem")));
    assert_eq!(code, 0, "{out}{err}");

    // The key of another certificate.
    let (code, _, err) = check(&pki.join("server.pem"), &other.join("server.key"), None);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("does not match certificate"), "{err}");

    // A key file that is a certificate (private, so that the permission check passes); a
    // certificate file that is a key.
    crate::support::write_key(
        &pki.join("cert-as-key.pem"),
        &std::fs::read_to_string(pki.join("ca.pem")).unwrap(),
    );
    let (code, _, err) = check(&pki.join("server.pem"), &pki.join("cert-as-key.pem"), None);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("no private key found"), "{err}");
    let (code, _, err) = check(&pki.join("server.key"), &pki.join("server.key"), None);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("no certificate found") || err.contains("bad PEM"), "{err}");

    // A client CA that is not one.
    let (code, _, err) =
        check(&pki.join("server.pem"), &pki.join("server.key"), Some(&pki.join("client.key")));
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("client.key: no certificate found"), "{err}");

    // A key that other users can read, as serve refuses it.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(pki.join("server.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
        let (code, _, err) = check(&pki.join("server.pem"), &pki.join("server.key"), None);
        assert_eq!(code, 78, "{err}");
        assert!(err.contains("chmod 600"), "{err}");
    }
    assert!(!dir.join("data").exists(), "check-config created the store");
}

#[test]
fn check_config_finds_store_and_audit_paths_that_cannot_be_made() {
    let dir = tempdir("startup-paths");
    std::fs::write(dir.join("a-file"), b"").unwrap();
    let write = |store: &str, audit: &str| {
        let text = format!(
            "[store]\npath = {store:?}\n[audit]\nfile = {audit:?}\n\
             [[listener]]\nname = \"lab\"\nlisten = \"127.0.0.1:0\"\nplaintext = true\n"
        );
        std::fs::write(dir.join("hl7d.toml"), text).unwrap();
    };
    write("a-file/data", "a-file/audit.jsonl");
    let (code, out, err) = hl7d_in(&dir, &["check-config", "--config", "hl7d.toml"]);
    assert_eq!(code, 78, "{out}{err}");
    assert!(err.contains("cannot open message store") && err.contains("not a directory"), "{err}");
    assert!(err.contains("audit file") && err.contains("a-file is not a directory"), "{err}");

    // A database file that is not one.
    std::fs::create_dir(dir.join("data")).unwrap();
    std::fs::write(dir.join("data/messages.db"), vec![b'x'; 200]).unwrap();
    write("data", "audit.jsonl");
    let (code, _, err) = hl7d_in(&dir, &["check-config", "--config", "hl7d.toml"]);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("not an SQLite database"), "{err}");

    std::fs::remove_file(dir.join("data/messages.db")).unwrap();
    let (code, out, err) = hl7d_in(&dir, &["check-config", "--config", "hl7d.toml"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!dir.join("audit.jsonl").exists(), "check-config created the audit file");
    assert!(entries(&dir.join("data")).is_empty());
}

#[test]
fn serve_refuses_a_config_that_cannot_start_before_creating_anything() {
    let dir = tempdir("startup-serve");
    let config = example_config(&dir);
    let config = config.to_str().unwrap();
    dev_pki(&dir.join("tls"));
    // The audit directory exists; the certificate path is misspelt.
    std::fs::create_dir(dir.join("logs")).unwrap();
    let text = std::fs::read_to_string(config).unwrap().replace("tls/server.pem", "tls/sever.pem");
    std::fs::write(config, text).unwrap();
    let (code, out, err) = hl7d_in(&dir, &["serve", "--config", config]);
    assert_eq!(code, 78, "{out}{err}");
    assert_eq!(err.matches("sever.pem").count(), 1, "printed once: {err}");
    assert!(!dir.join("data").exists(), "serve created the data directory: {err}");
    assert!(!dir.join("logs/audit.jsonl").exists(), "serve created the audit file: {err}");

    // A store that cannot be made: 78 too (a restart would fail the same way).
    let text = std::fs::read_to_string(config)
        .unwrap()
        .replace("tls/sever.pem", "tls/server.pem")
        .replace("path = \"data\"", "path = \"hl7d.toml/data\"");
    std::fs::write(config, text).unwrap();
    let (code, out, err) = hl7d_in(&dir, &["serve", "--config", config]);
    assert_eq!(code, 78, "{out}{err}");
    assert_eq!(err.matches("cannot open message store").count(), 1, "printed once: {err}");
    assert!(!dir.join("logs/audit.jsonl").exists(), "serve created the audit file: {err}");
}

#[test]
fn an_address_in_use_is_found_by_check_config_bind_and_reported_once_by_serve() {
    let dir = tempdir("startup-in-use");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let text = format!(
        "[store]\npath = \"data\"\n[[listener]]\nname = \"lab\"\nlisten = \"{addr}\"\nplaintext = true\n"
    );
    std::fs::write(dir.join("hl7d.toml"), text).unwrap();

    let (code, out, err) = hl7d_in(&dir, &["check-config", "--config", "hl7d.toml"]);
    assert_eq!(code, 0, "without --bind nothing is bound: {out}{err}");
    let (code, out, err) = hl7d_in(&dir, &["check-config", "--config", "hl7d.toml", "--bind"]);
    assert_eq!(code, 78, "{out}{err}");
    assert!(err.contains(&format!("listener \"lab\": cannot listen on {addr}")), "{err}");

    // serve: exit 1 (not 78: the address may be free again soon), the cause said once,
    // nothing created.
    let (code, out, err) = hl7d_in(&dir, &["serve", "--config", "hl7d.toml"]);
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(err.matches("cannot listen on").count(), 1, "{err}");
    assert_eq!(err.to_lowercase().matches("address already in use").count(), 1, "{err}");
    assert!(!err.contains("ERROR"), "one line, not a log line and a copy: {err}");
    assert!(!dir.join("data").exists(), "{err}");
    drop(taken);
}

#[test]
fn a_fatal_error_after_logging_starts_is_one_log_line() {
    // The embedded default's local CA is there but unreadable: found when serve prepares
    // its TLS files, after the checks and after logging is set up.
    let dir = tempdir("startup-once");
    let tls = dir.join("hl7d-data/tls");
    hl7d::private_files::secure_dir(&tls).unwrap();
    std::fs::write(tls.join("ca.pem"), "not a certificate\n").unwrap();
    crate::support::write_key(&tls.join("ca.key"), "not a key\n");
    let (code, out, err) = hl7d_in(&dir, &["serve", "--listen", "127.0.0.1:0"]);
    assert_eq!(code, 78, "{out}{err}");
    let lines: Vec<&str> =
        err.lines().filter(|line| line.contains("cannot prepare the local certificate")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].contains("ERROR"), "{err}");
    assert!(!err.contains("listening"), "{err}");

    // A ready file that cannot be written is a usage error found before anything starts.
    let (code, _, err) =
        hl7d_in(&dir, &["serve", "--listen", "127.0.0.1:0", "--ready-file", "missing/ready"]);
    assert_eq!(code, 64, "{err}");
    assert_eq!(err.matches("--ready-file missing/ready").count(), 1, "{err}");
}

#[test]
fn a_bind_error_names_its_cause_once() {
    let error = hl7d::listener::ServeError::Bind {
        listener: "lab".into(),
        addr: "127.0.0.1:2575".parse().unwrap(),
        error: std::io::Error::from(std::io::ErrorKind::AddrInUse),
    };
    assert!(error.is_address_in_use());
    let cause = std::io::Error::from(std::io::ErrorKind::AddrInUse).to_string();
    let text = format!("{:#}", anyhow::Error::from(error).context("starting"));
    assert_eq!(text.matches(&cause).count(), 1, "{text}");
}

#[test]
fn check_config_json() {
    let dir = tempdir("startup-json");
    let pki = dev_pki(&dir.join("tls"));
    let text = "[store]\npath = \"data\"\n\
        [[listener]]\nname = \"lab\"\nlisten = \"127.0.0.1:0\"\n[listener.tls]\ncert = \"tls/server.pem\"\nkey = \"tls/server.key\"\n\
        [[listener]]\nname = \"dev\"\nlisten = \"127.0.0.1:0\"\nplaintext = true\nidle_timeout = \"5s\"\n";
    std::fs::write(dir.join("hl7d.toml"), text).unwrap();
    let (code, out, err) = hl7d_in(&dir, &["check-config", "--config", "hl7d.toml", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("{\"ok\":true,\"listeners\":"), "{out}");
    let value: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(value["errors"], serde_json::json!([]));
    assert!(value["warnings"][0].as_str().unwrap().contains("idle_timeout"), "{value}");
    let lab = &value["listeners"][0];
    assert_eq!((lab["name"].as_str(), lab["transport"].as_str()), (Some("lab"), Some("tls")));
    assert_eq!(lab["listen"], "127.0.0.1:0");
    assert_eq!(lab["server_certificate"]["sha256"], pki.server.sha256().to_string().as_str());
    assert!(lab["server_certificate"]["not_after"].as_str().unwrap().ends_with('Z'), "{lab}");
    assert_eq!(value["listeners"][1]["transport"], "plaintext");
    assert_eq!(value["listeners"][1]["server_certificate"], serde_json::Value::Null);

    // Found at start-up: listed with the listeners.
    std::fs::remove_file(dir.join("tls/server.pem")).unwrap();
    let (code, out, _) = hl7d_in(&dir, &["check-config", "--config", "hl7d.toml", "--json"]);
    assert_eq!(code, 78, "{out}");
    let value: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(value["ok"], false);
    assert_eq!(value["listeners"].as_array().unwrap().len(), 2);
    assert!(value["errors"][0].as_str().unwrap().contains("server.pem"), "{value}");

    // A file that does not validate: one error per value.
    std::fs::write(
        dir.join("hl7d.toml"),
        text.replace("\"5s\"", "\"0s\"").replace("127.0.0.1:0\"\nplaintext", "1.2.3:4\"\nplaintext"),
    )
    .unwrap();
    let (code, out, _) = hl7d_in(&dir, &["check-config", "--config", "hl7d.toml", "--json"]);
    assert_eq!(code, 78, "{out}");
    let value: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(value["ok"], false);
    assert_eq!(value["errors"].as_array().unwrap().len(), 2, "{value}");
    assert_eq!(value["listeners"], serde_json::json!([]));
}

#[test]
fn cert_json_prints_the_inspected_fields() {
    let dir = tempdir("startup-cert-json");
    let pki = dev_pki(&dir);
    let file = dir.join("server.pem");
    let (code, out, err) = hl7d_in(&dir, &["cert", "inspect", "--json", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let value: serde_json::Value = serde_json::from_str(&out).unwrap();
    let cert = &value["certificates"][0];
    assert_eq!(cert["sha256"], pki.server.sha256().to_string().as_str());
    assert_eq!(cert["status"], "valid");
    assert_eq!(cert["is_ca"], false);
    assert!(cert["days_until_expiry"].as_i64().unwrap() > 300, "{cert}");
    for field in
        ["subject", "issuer", "serial", "not_before", "not_after", "sans", "key", "signature_algorithm"]
    {
        assert!(!cert[field].is_null(), "{field} missing: {cert}");
    }
    let (code, out, err) = hl7d_in(&dir, &["cert", "--json", "thumbprint", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let value: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(value["certificates"][0]["sha256"], pki.server.sha256().to_string().as_str());
}

/// A child `hl7d serve`, killed when dropped so a failing test leaves no server behind.
struct Serving(Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits for `serve --ready-file` to write `file`; its `NAME ADDRESS` lines.
fn wait_ready(file: &Path, child: &mut Child) -> Vec<(String, SocketAddr)> {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(text) = std::fs::read_to_string(file) {
            return text
                .lines()
                .map(|line| {
                    let (name, addr) = line.split_once(' ').expect("NAME ADDRESS");
                    (name.to_owned(), addr.parse().expect("an address"))
                })
                .collect();
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("hl7d serve exited before it was ready: {status}");
        }
        assert!(Instant::now() < deadline, "hl7d serve not ready within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill").arg(format!("-{name}")).arg(child.id().to_string()).status().unwrap();
    assert!(status.success());
}

fn send_tls(dir: &Path, addr: SocketAddr) -> (i32, String, String) {
    let fixture = format!("{MANIFEST_DIR}/crates/hl7-proto/tests/fixtures/adt_a01_v25.hl7");
    let to = addr.to_string();
    hl7d_in(dir, &["send", "--to", &to, "--tls", "--ca", "hl7d-data/tls/ca.pem", &fixture])
}

#[test]
fn serve_listen_moves_the_embedded_default_without_a_file() {
    let dir = tempdir("startup-listen");
    let stderr = std::fs::File::create(dir.join("stderr.txt")).unwrap();
    let child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--ready-file", "ready.txt"])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut serving = Serving(child);
    let ready = wait_ready(&dir.join("ready.txt"), &mut serving.0);
    assert_eq!(ready.len(), 1, "{ready:?}");
    let (name, addr) = &ready[0];
    assert_eq!(name, "default");
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");
    let (code, out, err) = send_tls(&dir, *addr);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("CA"), "{out}");

    // A reload reads the embedded default again: the listener stays where --listen put it.
    signal(&serving.0, "HUP");
    let (code, out, err) = send_tls(&dir, *addr);
    assert_eq!(code, 0, "after SIGHUP: {out}{err}");

    signal(&serving.0, "TERM");
    let status = serving.0.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(!dir.join("ready.txt").exists(), "the ready file outlived the server");
    // No configuration file was written: only the embedded default's data and our stderr.
    assert_eq!(entries(&dir), ["hl7d-data", "stderr.txt"]);
    let log = std::fs::read_to_string(dir.join("stderr.txt")).unwrap();
    assert!(log.contains(&format!("listener \"default\" on {addr}")), "{log}");

    // With a file, --listen is refused: the file says where its listeners listen.
    std::fs::write(
        dir.join("hl7d.toml"),
        "[[listener]]\nname = \"x\"\nlisten = \"127.0.0.1:0\"\nplaintext = true\n",
    )
    .unwrap();
    let (code, _, err) = hl7d_in(&dir, &["serve", "--config", "hl7d.toml", "--listen", "127.0.0.1:0"]);
    assert_eq!(code, 64, "a usage error: {err}");
    assert!(err.contains("--listen") && err.contains("--config"), "{err}");
}

/// The fenced block under `## Try it` in README.md, as written.
fn readme_try_it() -> String {
    let readme = std::fs::read_to_string(Path::new(MANIFEST_DIR).join("README.md")).unwrap();
    let section = &readme[readme.find("\n## Try it").expect("a \"Try it\" section")..];
    let start = section.find("```sh\n").expect("a sh block") + "```sh\n".len();
    let end = start + section[start..].find("```").expect("the block ends");
    section[start..end].to_owned()
}

#[test]
fn readme_try_it_block_runs_as_written() {
    let block = readme_try_it();
    // The expected output line, as the README shows it: `# <control id> <code> <time> ms`.
    let shown: Vec<&str> = block
        .lines()
        .find_map(|line| line.strip_prefix("# MSG"))
        .map(|rest| rest.split_whitespace().collect())
        .expect("the block shows send's output line");
    let dir = tempdir("startup-readme");
    // The block runs from a checkout: its fixture path is relative to one.
    #[cfg(unix)]
    std::os::unix::fs::symlink(Path::new(MANIFEST_DIR).join("crates"), dir.join("crates")).unwrap();
    // Only two things differ from a paste: the binary is the one under test (not a fresh
    // `cargo build --release`), and the port is a free one (tests run in parallel).
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    assert!(block.contains("2575"), "{block}");
    let script: String = block
        .lines()
        .filter(|line| !line.starts_with("cargo build"))
        .map(|line| line.replace("./target/release/hl7d", BIN).replace("2575", &port.to_string()) + "\n")
        .collect();
    let stdout = std::fs::File::create(dir.join("stdout.txt")).unwrap();
    let stderr = std::fs::File::create(dir.join("stderr.txt")).unwrap();
    let status = Command::new("bash")
        .args(["-eu", "-c", &script])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .status()
        .unwrap();
    let out = std::fs::read_to_string(dir.join("stdout.txt")).unwrap();
    let err = std::fs::read_to_string(dir.join("stderr.txt")).unwrap();
    // Whatever happened, no server stays behind.
    let pid = err.split("running in the background as pid ").nth(1).and_then(|rest| rest.split(';').next());
    let stop = || {
        if let Some(pid) = pid {
            let _ = Command::new("kill").arg("-KILL").arg(pid).status();
        }
    };
    if !status.success() {
        stop();
        panic!("the README block failed ({status}):\n{script}\nstdout:\n{out}\nstderr:\n{err}");
    }
    let line: Vec<&str> = out
        .lines()
        .find(|line| line.starts_with("MSG"))
        .map(|line| line.split_whitespace().collect())
        .unwrap_or_default();
    assert_eq!(line.len(), shown.len(), "{out}");
    assert_eq!((&line[0][3..], line[1], line[3]), (shown[0], shown[1], shown[3]), "{out}");
    // The block's `kill` stopped the server: the port is released.
    let deadline = Instant::now() + WAIT;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
        if Instant::now() > deadline {
            stop();
            panic!("the server still listens after the block's kill:\n{err}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn send_skips_a_utf8_byte_order_mark() {
    let server = crate::support::TestServer::start(vec![crate::support::plain("lab")]).await;
    let to = server.addr("lab").to_string();
    let dir = tempdir("startup-bom");
    let mut bytes = b"\xEF\xBB\xBF".to_vec();
    bytes.extend_from_slice(&crate::support::fixture("adt_a01_v25.hl7"));
    std::fs::write(dir.join("bom.hl7"), bytes).unwrap();
    let (code, out, err) = tokio::task::spawn_blocking({
        let dir = dir.to_path_buf();
        move || hl7d_in(&dir, &["send", "--to", &to, "bom.hl7"])
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("MSG00001") && out.contains("CA"), "{out}");
}
