//! `hl7d bench` against real listeners on loopback: the counts of its JSON report. No timing
//! assertions: this machine is shared and its speed is not what these tests check.

use std::process::Command;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::*;

/// Runs `hl7d bench --json --quiet ARGS` and returns (exit code, parsed report, stderr).
async fn hl7d_bench(args: &[&str]) -> (i32, serde_json::Value, String) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_hl7d"))
            .arg("bench")
            .args(&args)
            .args(["--json", "--quiet"])
            .output()
            .expect("run hl7d bench")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout:?} {stderr}"));
    (out.status.code().unwrap_or(-1), report, stderr)
}

#[tokio::test]
async fn every_message_acknowledged_and_counted() {
    let server = TestServer::start(vec![plain("bench")]).await;
    let to = server.addr("bench").to_string();
    let (code, report, stderr) = hl7d_bench(&["--to", &to, "--connections", "4", "--messages", "300"]).await;
    assert_eq!(code, 0, "{report} {stderr}");
    assert_eq!(report["mode"], "persistent");
    assert_eq!(report["sent"], 300);
    assert_eq!(report["acked"], 300);
    assert_eq!(report["rejected"], 0);
    assert_eq!(report["errors"], 0);
    // Unique MSH-10s: the listener's duplicate detection stored every one.
    assert_eq!(server.store.accepted(), 300);
    let latency = &report["latency_us"];
    let at = |key: &str| latency[key].as_f64().unwrap_or_else(|| panic!("latency_us.{key}: {latency}"));
    assert!(at("p50") <= at("p90") && at("p90") <= at("p99") && at("p99") <= at("max"), "{latency}");
}

/// `--rate`: messages go out when they are due, not as fast as the ACKs come: 40 messages
/// at 100/s over 4 connections cannot finish before the last one is due (0.39 s).
#[tokio::test]
async fn rate_paces_the_messages() {
    let server = TestServer::start(vec![plain("bench")]).await;
    let to = server.addr("bench").to_string();
    let args = ["--to", &to, "--connections", "4", "--messages", "40", "--rate", "100"];
    let (code, report, stderr) = hl7d_bench(&args).await;
    assert_eq!(code, 0, "{report} {stderr}");
    assert_eq!((report["acked"].as_u64(), report["errors"].as_u64()), (Some(40), Some(0)), "{report}");
    assert_eq!(report["rate_per_s"], 100.0);
    let elapsed = report["elapsed_s"].as_f64().unwrap();
    assert!(elapsed >= 0.38, "40 messages at 100/s took {elapsed} s");
}

#[tokio::test]
async fn handshakes_mode_opens_a_connection_per_message() {
    let server = TestServer::start(vec![plain("bench")]).await;
    let to = server.addr("bench").to_string();
    let (code, report, stderr) =
        hl7d_bench(&["--to", &to, "--connections", "2", "--messages", "40", "--handshakes"]).await;
    assert_eq!(code, 0, "{report} {stderr}");
    assert_eq!(report["mode"], "handshakes");
    assert_eq!(report["acked"], 40);
    assert_eq!(report["handshakes"], 40);
    assert_eq!(server.store.accepted(), 40);
}

/// A listener whose ACKs echo the wrong control id: every one is an error, none is counted
/// as acknowledged.
#[tokio::test]
async fn ack_for_another_control_id_is_an_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let to = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let mut pending = Vec::new();
                while let Ok(n) = conn.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    pending.extend_from_slice(&buf[..n]);
                    while let Some(end) = pending.windows(2).position(|w| w == [0x1C, 0x0D]) {
                        pending.drain(..end + 2);
                        let ack = frame(b"MSH|^~\\&|B|B|A|A|2026||ACK|X|P|2.5\rMSA|AA|NOT-YOURS\r");
                        if conn.write_all(&ack).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    let (code, report, stderr) = hl7d_bench(&["--to", &to, "--messages", "5"]).await;
    assert_eq!(code, 2, "{report} {stderr}");
    assert_eq!(report["sent"], 5);
    assert_eq!(report["acked"], 0);
    assert_eq!(report["errors"], 5);
    assert_eq!(report["error_kinds"]["mismatch"], 5);
}
