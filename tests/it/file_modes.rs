//! Files that hold patient data or keys are private whatever the umask: the data directory
//! 0700, the database and its `-wal`/`-shm` 0600, exports 0600, `dev-pki` keys 0600 in a 0700
//! directory. The real binary runs under `umask 000` (through `sh`, so the test process's own
//! umask stays as it is), and an existing directory open to others is tightened or refused.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;

use hl7d::store::{SqliteOptions, SqliteStore, StoreError};

use crate::support::{logged_addr, tempdir, WAIT};

#[test]
fn patient_data_is_private_under_umask_000() {
    let dir = tempdir("modes-umask");
    let data = dir.join("data");
    let config = write_config(&dir, &data);
    let serve = Serve::start(&config);
    assert_eq!(mode(&data), 0o700, "data directory");
    let sent = permissive(&["send", "--to", &serve.addr, &fixture_path("adt_a01_v25.hl7")]);
    assert!(sent.status.success(), "{}", String::from_utf8_lossy(&sent.stderr));
    for file in ["messages.db", "messages.db-wal", "messages.db-shm"] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }

    // Exported while the server runs (readers never block the writer).
    let out = dir.join("export");
    let config_arg = config.display().to_string();
    let exported =
        permissive(&["messages", "export", "--config", &config_arg, "--out", out.to_str().unwrap()]);
    assert!(exported.status.success(), "{}", String::from_utf8_lossy(&exported.stderr));
    assert_eq!(mode(&out), 0o700, "export directory");
    let files: Vec<PathBuf> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(mode(&files[0]), 0o600, "{}", files[0].display());
    drop(serve);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn dev_pki_keys_are_private_under_umask_000() {
    let dir = tempdir("modes-dev-pki");
    let out = dir.join("pki");
    let made = permissive(&["cert", "dev-pki", "--out", out.to_str().unwrap()]);
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    assert_eq!(mode(&out), 0o700);
    for key in ["ca.key", "server.key", "client.key"] {
        assert_eq!(mode(&out.join(key)), 0o600, "{key}");
    }
    assert_eq!(mode(&out.join("ca.pem")), 0o644);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_open_data_directory_and_database_are_tightened_with_a_warning() {
    let dir = tempdir("modes-tighten");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    SqliteStore::open(&data, SqliteOptions::default()).unwrap().close();
    set_mode(&data, 0o755);
    set_mode(&data.join("messages.db"), 0o644);

    let config = write_config(&dir, &data);
    let serve = Serve::start(&config);
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("messages.db")), 0o600);
    let log = serve.log.join("\n");
    for (path, from) in [(&data, "0755"), (&data.join("messages.db"), "0644")] {
        let line =
            log.lines().find(|line| line.contains(&path.display().to_string()) && line.contains("tightened"));
        let line = line.unwrap_or_else(|| panic!("no warning for {}:\n{log}", path.display()));
        assert!(line.contains("WARN") && line.contains(from), "{line}");
    }
    drop(serve);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_open_data_directory_of_another_user_is_refused() {
    let dir = tempdir("modes-not-ours");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    set_mode(&data, 0o755);
    // As root the test can give the directory away; otherwise it needs root.
    std::os::unix::fs::chown(&data, Some(65534), Some(65534))
        .expect("this test gives a directory to uid 65534 and so runs as root (as CI does)");
    let Err(error) = SqliteStore::open(&data, SqliteOptions::default()) else {
        panic!("a directory of another user, open to others, must be refused");
    };
    assert!(matches!(error, StoreError::Open { .. }), "{error}");
    let text = error.to_string();
    assert!(text.contains("belongs to uid 65534") && text.contains("mode 0755"), "{text}");
    assert_eq!(mode(&data), 0o755, "not changed");
    assert!(!data.join("messages.db").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---------------------------------------------------------------------------------------
// Helpers

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode()
        & 0o7777
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn fixture_path(name: &str) -> String {
    format!("{}/crates/hl7-proto/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn write_config(dir: &Path, data: &Path) -> PathBuf {
    let config = dir.join("hl7d.toml");
    let text = format!(
        "[store]\npath = {data:?}\n\n[[listener]]\nname = \"lab\"\nlisten = \"127.0.0.1:0\"\nplaintext = true\n"
    );
    std::fs::write(&config, text).unwrap();
    config
}

/// `hl7d ARGS` under `umask 000`.
fn umask_000(args: &[&str]) -> Command {
    let mut command = Command::new("sh");
    command.args(["-c", "umask 000 && exec \"$0\" \"$@\"", env!("CARGO_BIN_EXE_hl7d")]).args(args);
    command
}

fn permissive(args: &[&str]) -> Output {
    umask_000(args).stdin(Stdio::null()).output().expect("run hl7d under sh")
}

/// `hl7d serve` under `umask 000`, killed when dropped.
struct Serve {
    child: Child,
    addr: String,
    log: Vec<String>,
}

impl Serve {
    /// Starts it and waits for its "listening" line (port 0: the line has the address).
    fn start(config: &Path) -> Serve {
        let config = config.display().to_string();
        let mut child = umask_000(&["serve", "--config", &config])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn hl7d serve");
        let (sender, lines) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        // Built first, so that its Drop kills the child if no "listening" line comes.
        let mut serve = Serve { child, addr: String::new(), log: Vec::new() };
        while serve.addr.is_empty() {
            let Ok(line) = lines.recv_timeout(WAIT) else {
                panic!("hl7d serve did not report listening:\n{}", serve.log.join("\n"));
            };
            if let Some(addr) = logged_addr(&line, "listening") {
                serve.addr = addr.to_string();
            }
            serve.log.push(line);
        }
        serve
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
