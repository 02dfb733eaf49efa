//! PostgreSQL for the tests (issue 16): a fresh database per test on the cluster named by
//! `HL7D_TEST_PG_URL` (`.ci/run` and `bench/pg.sh start` set it), and a dedicated cluster
//! for the tests that restart the database under load.
//!
//! Without PostgreSQL a test says loudly that it was skipped; under CI (`CI=true`, where
//! `.ci/run` starts a cluster) that is a failure instead, as for HAProxy.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use super::running_in_ci;

/// The variable naming the shared test cluster (a superuser URL; tests create databases).
pub const URL_VAR: &str = "HL7D_TEST_PG_URL";

/// One test's own database, dropped (with any connection still open to it) when this is.
pub struct TestDb {
    /// `postgresql://…/<this database>`.
    pub url: String,
    admin_url: String,
    name: String,
}

impl TestDb {
    /// A new, empty database for `test` on the shared cluster, or `None` after a loud
    /// "SKIPPED" line when no cluster is configured (a failure under CI).
    pub async fn create(test: &str) -> Option<TestDb> {
        let admin_url = shared_url(test)?;
        Some(TestDb::create_on(&admin_url, test).await)
    }

    /// A new, empty database for `test` on the cluster at `admin_url` (a superuser URL).
    pub async fn create_on(admin_url: &str, test: &str) -> TestDb {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let mut name: String =
            format!("t_{}_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed), test)
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' })
                .collect();
        name.truncate(63);
        let admin = connect(admin_url).await;
        admin.batch_execute(&format!("CREATE DATABASE \"{name}\"")).await.expect("create the test database");
        TestDb { url: with_database(admin_url, &name), admin_url: admin_url.to_owned(), name }
    }

    /// A client on this database.
    pub async fn client(&self) -> tokio_postgres::Client {
        connect(&self.url).await
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Drop may run inside a runtime (which cannot block) or outside one: a thread of
        // its own with its own runtime works in both.
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async move {
                let admin = connect(&admin_url).await;
                admin.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            let _ = writeln!(std::io::stderr(), "warning: test database {} not dropped", self.name);
        }
    }
}

/// A plain (no TLS) connection for the tests' own queries; its connection task runs on the
/// current runtime.
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    tokio::spawn(connection);
    client
}

/// `url` with its database path replaced by `database`.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let base = match base[after_scheme..].find('/') {
        Some(slash) => &base[..after_scheme + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{database}?{query}"),
        None => format!("{base}/{database}"),
    }
}

/// The shared cluster's URL, or `None` after the loud skip (a failure under CI).
fn shared_url(test: &str) -> Option<String> {
    match std::env::var(URL_VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            skip(test, &format!("{URL_VAR} is not set (start a cluster: eval \"$(bench/pg.sh start)\")"));
            None
        }
    }
}

fn skip(test: &str, why: &str) {
    assert!(!running_in_ci(), "{test}: PostgreSQL is required under CI (.ci/run starts a cluster): {why}");
    // Straight to the process's stderr: libtest captures only the print macros.
    let _ = writeln!(std::io::stderr(), "\n*** SKIPPED {test}: {why}; under CI=true this is a failure\n");
}

/// A cluster of the test's own, started by `bench/pg.sh` (for tests that restart the
/// database: the shared cluster serves tests running alongside). Stopped and deleted when
/// dropped.
pub struct Cluster {
    dir: PathBuf,
    /// The superuser URL (`…/postgres`).
    pub url: String,
}

impl Cluster {
    /// Starts a cluster for `test`, or `None` after the loud skip when there are no
    /// PostgreSQL binaries (a failure under CI).
    pub fn start(test: &str) -> Option<Cluster> {
        Cluster::start_with(test, None)
    }

    /// [`Cluster::start`] with TLS on: `server.pem` and `server.key` from `tls_dir`.
    pub fn start_with_tls(test: &str, tls_dir: &Path) -> Option<Cluster> {
        Cluster::start_with(test, Some(tls_dir))
    }

    fn start_with(test: &str, tls_dir: Option<&Path>) -> Option<Cluster> {
        let mut command = script();
        if let Some(dir) = tls_dir {
            command.env("HL7D_PG_TLS_DIR", dir);
        }
        let out = command.arg("start").output().expect("run bench/pg.sh");
        if !out.status.success() {
            skip(test, &format!("bench/pg.sh start failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
            return None;
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let value = |name: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(&format!("export {name}=")))
                .map(str::to_owned)
                .unwrap_or_else(|| panic!("bench/pg.sh start printed no {name}: {text}"))
        };
        Some(Cluster { dir: PathBuf::from(value("HL7D_PG_DIR")), url: value(URL_VAR) })
    }

    /// `pg_ctl restart -m fast`: every connection is cut, the cluster comes back on the
    /// same port.
    pub fn restart(&self) {
        self.run("restart");
    }

    fn run(&self, command: &str) {
        let out = script().arg(command).env("HL7D_PG_DIR", &self.dir).output().expect("run bench/pg.sh");
        assert!(out.status.success(), "bench/pg.sh {command}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = script().arg("stop").env("HL7D_PG_DIR", &self.dir).output();
    }
}

fn script() -> Command {
    Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/pg.sh"))
}

#[test]
fn with_database_replaces_the_path() {
    assert_eq!(with_database("postgresql://u@h:5/postgres", "x"), "postgresql://u@h:5/x");
    assert_eq!(with_database("postgresql://u@h:5", "x"), "postgresql://u@h:5/x");
    assert_eq!(
        with_database("postgresql://u@h/db?sslmode=disable", "x"),
        "postgresql://u@h/x?sslmode=disable"
    );
}
