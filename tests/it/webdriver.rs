//! A small W3C WebDriver client for the console's browser tests: chromedriver (Debian
//! `chromium-driver`) on a port it picks itself (`--port=0`, read from its first line),
//! headless Chromium, and the dozen commands the tests use, as JSON over HTTP/1.1 on
//! loopback. Lighter than a WebDriver crate, and nothing but tokio and serde_json.
//!
//! Without chromium or chromedriver the tests say loudly that they were skipped; under
//! `CI=true` (where `.ci/run` installs both) they fail instead.

use std::io::{BufRead, BufReader, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::{json, Value};

use crate::console::http_within;
use crate::support::{running_in_ci, WAIT};

/// Longest wait for one command (starting a browser on a busy machine takes a while).
const COMMAND_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// The key under which WebDriver returns an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Chromium, by the names Debian and others install it under.
fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"].into_iter().find_map(which)
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(name))
        .find(|path| path.is_file())
}

/// A running chromedriver; killed on drop.
pub struct Driver {
    child: Child,
    addr: SocketAddr,
    browser: PathBuf,
}

impl Driver {
    /// Starts chromedriver, or `None` after a loud "SKIPPED" line when it or chromium is not
    /// installed (a failure under CI).
    pub fn start(test: &str) -> Option<Driver> {
        let (Some(browser), Some(driver)) = (chromium(), which("chromedriver")) else {
            assert!(
                !running_in_ci(),
                "{test}: chromium and chromedriver are required under CI (.ci/run installs the Debian \
                 packages chromium and chromium-driver)"
            );
            let _ = writeln!(
                std::io::stderr(),
                "\n*** SKIPPED {test}: no chromium or chromedriver (Debian packages `chromium`, \
                 `chromium-driver`; under CI=true this is a failure)\n"
            );
            return None;
        };
        let mut child = Command::new(driver)
            // Loopback only (chromedriver's default without --allowed-ips).
            .arg("--port=0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let stdout = child.stdout.take().unwrap();
        let (found, port) = std::sync::mpsc::channel();
        // Reads on until chromedriver ends, so that it never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // "ChromeDriver was started successfully on port 38791."
                // (Its first line says "on port 0": the one asked for.)
                if let Some(rest) = line.split("started successfully on port ").nth(1) {
                    if let Ok(port) = rest.trim_end_matches('.').trim().parse::<u16>() {
                        let _ = found.send(port);
                    }
                }
            }
        });
        let port = port.recv_timeout(WAIT).expect("chromedriver says its port");
        Some(Driver { child, addr: SocketAddr::from(([127, 0, 0, 1], port)), browser })
    }

    /// A new headless browser at 1280×800 with its profile in `profile`.
    pub async fn session(&self, profile: &Path) -> Session {
        let capabilities = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": self.browser,
                    "args": [
                        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                        "--window-size=1280,800", "--no-first-run", "--disable-extensions",
                        format!("--user-data-dir={}", profile.display()),
                    ],
                },
            }}
        });
        let value = command(self.addr, "POST", "/session", Some(capabilities)).await;
        let id = value["sessionId"].as_str().expect("a session id").to_owned();
        Session { addr: self.addr, id }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One WebDriver command: its `value`, or a panic with the driver's error.
async fn command(addr: SocketAddr, method: &str, path: &str, body: Option<Value>) -> Value {
    let body = body.map(|b| b.to_string());
    let content_type = body.as_ref().map(|_| "application/json");
    let body = body.as_deref().unwrap_or("").as_bytes();
    let (status, _, text) = http_within(addr, method, path, content_type, body, COMMAND_WAIT).await;
    let reply: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: {e}: {text}"));
    assert_eq!(status, 200, "{method} {path}: {reply}");
    reply["value"].clone()
}

/// A browser session.
pub struct Session {
    addr: SocketAddr,
    id: String,
}

/// An element of the page.
#[derive(Debug, Clone)]
pub struct Element(String);

impl Session {
    async fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        command(self.addr, method, &format!("/session/{}{path}", self.id), body).await
    }

    /// Opens `url` and waits for the page to load.
    pub async fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url }))).await;
    }

    /// The URL shown.
    pub async fn url(&self) -> String {
        self.cmd("GET", "/url", None).await.as_str().unwrap_or_default().to_owned()
    }

    /// Every element `css` selects.
    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        let found =
            self.cmd("POST", "/elements", Some(json!({ "using": "css selector", "value": css }))).await;
        found
            .as_array()
            .map(|all| {
                all.iter().filter_map(|e| e[ELEMENT].as_str()).map(|e| Element(e.to_owned())).collect()
            })
            .unwrap_or_default()
    }

    /// The first element `css` selects, waiting (bounded) for it to appear: a click on a
    /// submit button may return before the next page is there. Panics with the page when
    /// there is none.
    pub async fn find(&self, css: &str) -> Element {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if let Some(first) = self.find_all(css).await.into_iter().next() {
                return first;
            }
            if std::time::Instant::now() > deadline {
                let (url, source) = (self.url().await, self.cmd("GET", "/source", None).await);
                panic!("no {css} on {url}:\n{}", source.as_str().unwrap_or_default())
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Clicks it (a submit button: the next page has loaded when this returns).
    pub async fn click(&self, element: &Element) {
        self.cmd("POST", &format!("/element/{}/click", element.0), Some(json!({}))).await;
    }

    /// Types `text` into it.
    pub async fn type_into(&self, element: &Element, text: &str) {
        self.cmd("POST", &format!("/element/{}/value", element.0), Some(json!({ "text": text }))).await;
    }

    /// Its visible text.
    pub async fn text(&self, element: &Element) -> String {
        let value = self.cmd("GET", &format!("/element/{}/text", element.0), None).await;
        value.as_str().unwrap_or_default().to_owned()
    }

    /// Sets the window's size (the page's layout width).
    pub async fn resize(&self, width: u32, height: u32) {
        self.cmd("POST", "/window/rect", Some(json!({ "width": width, "height": height }))).await;
    }

    /// The page's cookies as (name, value) (HttpOnly ones too: WebDriver sees them).
    pub async fn cookies(&self) -> Vec<(String, String)> {
        let all = self.cmd("GET", "/cookie", None).await;
        all.as_array()
            .map(|cookies| {
                cookies
                    .iter()
                    .map(|c| {
                        (
                            c["name"].as_str().unwrap_or("").to_owned(),
                            c["value"].as_str().unwrap_or("").to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Runs `script` (a function body) in the page and returns what it returns.
    pub async fn execute(&self, script: &str) -> Value {
        self.cmd("POST", "/execute/sync", Some(json!({ "script": script, "args": [] }))).await
    }

    /// Saves a PNG of the viewport to `path`.
    pub async fn screenshot(&self, path: &Path) {
        use base64::Engine as _;
        let data = self.cmd("GET", "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD.decode(data.as_str().unwrap()).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }

    /// Ends the session (the browser closes).
    pub async fn quit(self) {
        command(self.addr, "DELETE", &format!("/session/{}", self.id), None).await;
    }
}
