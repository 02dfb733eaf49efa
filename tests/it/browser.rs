//! Issue 17: the console in a real headless Chromium, driven over WebDriver
//! ([`crate::webdriver`]). Screenshots of the dashboard, a search and a message's detail
//! are saved under `target/console-screenshots/` (the ones in docs/ are copies).
//!
//! Without chromium and chromedriver these tests skip loudly; under `CI=true` they fail.

use std::io::{BufRead, BufReader, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use hl7d::console::Role;

use crate::console::{principal, Setup};
use crate::support::{connect_nodelay, logged_addr, msa, read_frame, send, tempdir, TestDir, WAIT};
use crate::webdriver::{Driver, Session};

/// Where the screenshots go.
fn screenshots() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots")
}

/// The pages with a stand-in caller (an operator): search by patient, open a message, see
/// its parked delivery, retry it through the confirmation page; every page fits a narrow
/// screen; screenshots of each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_finds_a_patient_and_retries_a_parked_delivery_in_a_browser() {
    let test = "an_operator_finds_a_patient_and_retries_a_parked_delivery_in_a_browser";
    let Some(driver) = Driver::start(test) else { return };
    let setup = Setup::start("browser-pages").await;
    let addr = setup.serve_as(principal("olga", Role::Operator)).await;
    let profile = tempdir("browser-profile");
    let browser = driver.session(profile.path()).await;
    let base = format!("http://{addr}");

    browser.goto(&format!("{base}/")).await;
    let listeners = browser.text(&browser.find("#listeners").await).await;
    assert!(listeners.contains("lab") && listeners.contains("plaintext"), "{listeners}");
    assert!(browser.text(&browser.find("#routes").await).await.contains("engine"));
    assert!(browser.text(&browser.find("#signed-in").await).await.contains("olga (operator)"));
    browser.screenshot(&screenshots().join("dashboard.png")).await;

    // Search by patient from the form.
    browser.goto(&format!("{base}/messages")).await;
    browser.type_into(&browser.find("input[name=patient]").await, "P1").await;
    browser.click(&browser.find("#search button[type=submit]").await).await;
    browser.find("#results").await;
    assert!(browser.url().await.contains("patient=P1"), "{}", browser.url().await);
    let rows = browser.find_all("#results tbody tr").await;
    assert_eq!(rows.len(), 3);
    browser.screenshot(&screenshots().join("search.png")).await;

    // Open the oldest (message 1): its parked delivery, by word.
    browser.click(&browser.find("#results a[href='/messages/1']").await).await;
    let deliveries = browser.text(&browser.find("#deliveries").await).await;
    assert!(deliveries.contains("PARKED") || deliveries.contains("parked"), "{deliveries}");
    assert!(deliveries.contains("downstream refused: AR"));
    // The whole detail (header, ACK, deliveries, segments) in one picture.
    browser.resize(1280, 2000).await;
    browser.screenshot(&screenshots().join("detail.png")).await;
    browser.resize(1280, 800).await;

    // Retry: a confirmation first, then the outcome; the queue changed.
    browser.click(&browser.find("#deliveries button[data-action=retry]").await).await;
    let confirm = browser.text(&browser.find("#confirm-text").await).await;
    assert!(confirm.contains("send message 1 again on route engine"), "{confirm}");
    assert_eq!(setup.delivery_state(1, "engine"), "parked");
    browser.click(&browser.find("#confirm").await).await;
    let outcome = browser.text(&browser.find("#outcome").await).await;
    assert!(outcome.contains("released 1 parked delivery(ies) on route engine"), "{outcome}");
    assert_eq!(setup.delivery_state(1, "engine"), "pending");

    // A phone's width: nothing wider than the screen but the tables' own scroll boxes.
    browser.resize(390, 844).await;
    for path in ["/", "/messages?patient=P1", "/messages/1"] {
        browser.goto(&format!("{base}{path}")).await;
        let overflow = browser
            .execute("return document.documentElement.scrollWidth - document.documentElement.clientWidth;")
            .await;
        assert_eq!(overflow.as_i64(), Some(0), "{path} is wider than a narrow screen");
    }
    browser.screenshot(&screenshots().join("detail-narrow.png")).await;
    browser.quit().await;
}

/// A child `hl7d serve` with an admin endpoint, a users file (operator `olga`, viewer `val`,
/// a viewer token), listener `lab` and route `engine` to a closed port that parks at the
/// first failure; killed when dropped.
struct Served {
    _tmp: TestDir,
    child: std::process::Child,
    admin: SocketAddr,
    lab: SocketAddr,
    token: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const PASSWORD: &str = "a long browser test password";

fn hl7d(config: &Path, args: &[&str], stdin: &str) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hl7d"))
        .args(args)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run hl7d");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "hl7d {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

impl Served {
    fn start(label: &str, idle: &str) -> Served {
        let tmp = tempdir(label);
        let config = tmp.path().join("hl7d.toml");
        let text = format!(
            "[store]\npath = {:?}\n\n[admin]\nlisten = \"127.0.0.1:0\"\nusers = {:?}\nsession_idle_timeout = \"{idle}\"\n\n\
             [[listener]]\nname = \"lab\"\nlisten = \"127.0.0.1:0\"\nplaintext = true\n\n\
             [[route]]\nname = \"engine\"\nto = \"mllp://127.0.0.1:9\"\npark_after = \"0s\"\n",
            tmp.path().join("data"),
            tmp.path().join("users.toml"),
        );
        std::fs::write(&config, text).unwrap();
        hl7d(&config, &["users", "add", "olga", "--role", "operator"], &format!("{PASSWORD}\n"));
        hl7d(&config, &["users", "add", "val", "--role", "viewer"], &format!("{PASSWORD}\n"));
        let created = hl7d(&config, &["tokens", "create", "--role", "viewer", "--name", "script"], "");
        let token = created.lines().last().unwrap().trim().to_owned();
        let mut child = Command::new(env!("CARGO_BIN_EXE_hl7d"))
            .args(["serve", "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn hl7d serve");
        let (found, addrs) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("hl7d serve: {line}");
                for (what, message) in [("admin", "admin endpoint"), ("lab", "listening")] {
                    if let Some(addr) = logged_addr(&line, message) {
                        let _ = found.send((what, addr));
                    }
                }
            }
        });
        let (mut admin, mut lab) = (None, None);
        while admin.is_none() || lab.is_none() {
            match addrs.recv_timeout(WAIT) {
                Ok(("admin", addr)) => admin = Some(addr),
                Ok((_, addr)) => lab = Some(addr),
                Err(_) => {
                    let _ = child.kill();
                    panic!("hl7d serve did not say where it listens");
                }
            }
        }
        Served { _tmp: tmp, child, admin: admin.unwrap(), lab: lab.unwrap(), token }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// A JSON request with the viewer token.
    async fn api(&self, method: &str, path: &str) -> (u16, serde_json::Value) {
        let (status, _, body) =
            http_with(self.admin, method, path, &[("Authorization", &format!("Bearer {}", self.token))], "")
                .await;
        (status, serde_json::from_str(&body).unwrap_or(serde_json::Value::Null))
    }
}

/// An HTTP/1.1 exchange with extra headers (`Connection: close`).
async fn http_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head += &format!("{name}: {value}\r\n");
    }
    head += "\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut raw)).await.expect("in time").unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.split(' ').nth(1).unwrap().parse().unwrap(), head.to_ascii_lowercase(), body.to_owned())
}

fn message(control_id: &str, patient: &str) -> Vec<u8> {
    format!("MSH|^~\\&|REG|MCM|HL7D|FAC|20261128||ADT^A08^ADT_A01|{control_id}|P|2.5\rPID|1||{patient}^^^HOSP^MR||DOE^JANE\r")
        .into_bytes()
}

/// Logs in through the login form.
async fn log_in(browser: &Session, served: &Served, user: &str) {
    browser.goto(&served.url("/")).await;
    browser.type_into(&browser.find("input[name=user]").await, user).await;
    browser.type_into(&browser.find("input[name=password]").await, PASSWORD).await;
    browser
        .click(
            &browser
                .find("form[action='/login'] button[type=submit], form[action='/login'] input[type=submit]")
                .await,
        )
        .await;
    let who = browser.text(&browser.find("#signed-in").await).await;
    assert!(who.starts_with(user), "{who}");
}

/// Issue 17's browser flow against the real server and its real login: log in, search by
/// patient, open a message, see its parked delivery, retry it as operator; as viewer the
/// button is absent and the API answers 403; a POST with the session but without its CSRF
/// token is refused; logout ends the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_in_search_retry_and_be_refused_as_viewer_then_log_out() {
    let test = "log_in_search_retry_and_be_refused_as_viewer_then_log_out";
    let Some(driver) = Driver::start(test) else { return };
    let served = Served::start("browser-login", "30m");
    let mut conn = connect_nodelay(served.lab).await.unwrap();
    for (control_id, patient) in [("B1", "P77"), ("B2", "P88"), ("B3", "P77")] {
        send(&mut conn, &message(control_id, patient)).await;
        assert_eq!(msa(&read_frame(&mut conn).await).0, "AA");
    }
    // The route's downstream refuses connections and park_after is 0s: parked at once.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (status, routes) = served.api("GET", "/api/v1/routes").await;
        assert_eq!(status, 200, "{routes}");
        if routes[0]["parked"].as_u64() >= Some(1) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "nothing parked: {routes}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let profile = tempdir("browser-login-profile");
    let browser = driver.session(profile.path()).await;

    // Without a session: the login page.
    browser.goto(&served.url("/messages")).await;
    browser.find("input[type=password]").await;
    log_in(&browser, &served, "olga").await;
    browser.goto(&served.url("/")).await;
    browser.find("#listeners").await;
    browser.screenshot(&screenshots().join("login-dashboard.png")).await;

    // Search by patient, open the oldest, see the parked delivery, retry it.
    browser.goto(&served.url("/messages")).await;
    browser.type_into(&browser.find("input[name=patient]").await, "P77").await;
    browser.click(&browser.find("#search button[type=submit]").await).await;
    browser.find("#results").await;
    assert_eq!(browser.find_all("#results tbody tr").await.len(), 2);
    browser.click(&browser.find("#results a[href='/messages/1']").await).await;
    let deliveries = browser.text(&browser.find("#deliveries").await).await;
    assert!(deliveries.to_lowercase().contains("parked"), "{deliveries}");
    let (_, before) = served.api("GET", "/api/v1/messages/1").await;
    let attempts_before = before["deliveries"][0]["attempts"].as_u64().unwrap();
    browser.click(&browser.find("#deliveries button[data-action=retry]").await).await;
    browser.click(&browser.find("#confirm").await).await;
    let outcome = browser.text(&browser.find("#outcome").await).await;
    assert!(outcome.contains("released 1 parked delivery(ies) on route engine"), "{outcome}");
    // Sent again (and parked again: the downstream still refuses).
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (_, after) = served.api("GET", "/api/v1/messages/1").await;
        if after["deliveries"][0]["attempts"].as_u64() > Some(attempts_before) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not sent again: {after}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // The browser's session without its CSRF token: refused; with it: served.
    let cookies = browser.cookies().await;
    let session = cookies.iter().find(|(name, _)| name.contains("hl7d_session")).expect("a session cookie");
    let cookie = format!("{}={}", session.0, session.1);
    let (status, _, _) = http_with(
        served.admin,
        "POST",
        "/api/v1/routes/engine/retry",
        &[("Cookie", &cookie), ("Content-Type", "application/json")],
        r#"{"all_parked":true}"#,
    )
    .await;
    assert_eq!(status, 403, "a session POST without its CSRF token");
    let (_, _, whoami) = http_with(served.admin, "GET", "/session", &[("Cookie", &cookie)], "").await;
    let csrf =
        serde_json::from_str::<serde_json::Value>(&whoami).unwrap()["csrf"].as_str().unwrap().to_owned();
    let (status, _, body) = http_with(
        served.admin,
        "POST",
        "/api/v1/routes/engine/retry",
        &[("Cookie", &cookie), ("Content-Type", "application/json"), ("X-CSRF-Token", &csrf)],
        r#"{"all_parked":true}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // Log out: the session ends; the next page is the login page again.
    browser.click(&browser.find("#logout").await).await;
    browser.find("input[type=password]").await;
    browser.goto(&served.url("/messages/1")).await;
    browser.find("input[type=password]").await;
    let (status, _, _) = http_with(served.admin, "GET", "/api/v1/routes", &[("Cookie", &cookie)], "").await;
    assert_eq!(status, 401);

    // A viewer: the same page without any action, and the API's 403.
    log_in(&browser, &served, "val").await;
    browser.goto(&served.url("/messages/1")).await;
    let deliveries = browser.text(&browser.find("#deliveries").await).await;
    assert!(deliveries.to_lowercase().contains("engine"), "{deliveries}");
    assert!(browser.find_all("button[data-action]").await.is_empty());
    let (status, _) = served.api("POST", "/api/v1/routes/engine/retry").await;
    assert_eq!(status, 403);
    browser.quit().await;
}

/// A session unused for longer than `session_idle_timeout` (1 s here, the least the
/// configuration takes) is over: the next page is the login page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_expires_in_the_browser() {
    let test = "an_idle_session_expires_in_the_browser";
    let Some(driver) = Driver::start(test) else { return };
    let served = Served::start("browser-expiry", "1s");
    let profile = tempdir("browser-expiry-profile");
    let browser = driver.session(profile.path()).await;
    log_in(&browser, &served, "olga").await;
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    browser.goto(&served.url("/messages")).await;
    browser.find("input[type=password]").await;
    assert!(browser.find_all("#signed-in").await.is_empty());
    browser.quit().await;
}
