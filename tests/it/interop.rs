//! Interoperability with an independent MLLP implementation: the python `hl7` package
//! (installed by `.ci/run`). Both directions: its client → hl7d, `hl7d send` → its server.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

fn script() -> String {
    format!("{}/tests/interop/hl7_mllp_peer.py", env!("CARGO_MANIFEST_DIR"))
}

fn fixture_path(name: &str) -> String {
    format!("{}/crates/hl7-proto/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn python_has_hl7() {
    let ok = Command::new("python3")
        .args(["-c", "import hl7.mllp"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "python3 with the `hl7` package is required (pip install hl7; .ci/run installs it)");
}

#[tokio::test]
async fn python_hl7_client_sends_to_hl7d() {
    python_has_hl7();
    let server = TestServer::start(vec![plain("lab")]).await;
    let port = server.addr("lab").port().to_string();
    let files = ["adt_a01_v25.hl7", "adt_a04_v231_original_mode.hl7", "utf8_multilingual_adt_a08.hl7"];
    let mut args = vec![script(), "client".into(), port];
    args.extend(files.iter().map(|f| fixture_path(f)));
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3").args(&args).stderr(Stdio::inherit()).output().expect("run python3")
    })
    .await
    .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines, ["CA MSG00001", "AA CTRL-20261105-0001", "CA UTF8-0001"]);
    assert_eq!(server.store.accepted(), 3);
}

#[tokio::test]
async fn hl7d_send_to_the_python_hl7_server() {
    python_has_hl7();
    let dir = tempdir("interop");
    let port_file = dir.join("port");
    let mut peer = Command::new("python3")
        .args([script(), "server".into(), port_file.display().to_string()])
        .spawn()
        .expect("start the python MLLP server");
    let started = Instant::now();
    let port = loop {
        if let Ok(port) = std::fs::read_to_string(&port_file) {
            break port;
        }
        assert!(started.elapsed() < WAIT, "python server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let to = format!("127.0.0.1:{port}");
    let paths = [fixture_path("adt_a01_v25.hl7"), fixture_path("orm_o01_v23.hl7")];
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_hl7d"))
            .args(["send", "--to", &to, "--json", "--ack-timeout", "5s"])
            .args(&paths)
            .output()
            .expect("run hl7d send")
    })
    .await
    .unwrap();
    let _ = peer.kill();
    let _ = peer.wait();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let results: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["control_id"], "MSG00001");
    assert_eq!(results[0]["result"], "AA");
    assert_eq!(results[1]["control_id"], "ORM-55-0001");
}
