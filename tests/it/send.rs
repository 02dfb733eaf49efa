//! `hl7d send` and the library client: ACK matching, retries, timeouts, exit codes.

use std::process::Command;
use std::time::Duration;

use hl7_proto::ack::AckCode;
use hl7d::sender::tls::{client_config, server_name, ClientTlsOptions, TlsFailure};
use hl7d::sender::{Client, ClientOptions, SendError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::*;

fn quick(to: String) -> ClientOptions {
    ClientOptions {
        ack_timeout: Duration::from_millis(500),
        error_wait: Duration::from_millis(200),
        retries: 2,
        retry_delay: Duration::from_millis(20),
        ..ClientOptions::plain(to)
    }
}

const MSG: &[u8] = b"MSH|^~\\&|A|B|C|D|20261128||ADT^A01|SEND-1|P|2.5\rPID|1\r";

/// A scripted MLLP peer: for each accepted connection, `script(conn_index, frame)` returns
/// what to write back (None = close the connection without answering).
async fn fake_listener<F>(script: F) -> std::net::SocketAddr
where
    F: Fn(usize, &[u8]) -> Option<Vec<u8>> + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let script = std::sync::Arc::new(script);
    tokio::spawn(async move {
        for index in 0.. {
            let Ok((mut conn, _)) = listener.accept().await else { return };
            let script = script.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = conn.read(&mut chunk).await else { return };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(2).position(|w| w == [0x1C, 0x0D]) {
                        let frame = buf[1..end].to_vec();
                        buf.drain(..end + 2);
                        match script(index, &frame) {
                            Some(reply) => {
                                if conn.write_all(&reply).await.is_err() {
                                    return;
                                }
                            }
                            None => return,
                        }
                    }
                }
            });
        }
    });
    addr
}

fn ack_for(code: &str, control_id: &str) -> Vec<u8> {
    frame(
        format!("MSH|^~\\&|C|D|A|B|1||ACK^A01^ACK|X|P|2.5\rMSA|{code}|{control_id}|text from peer\r")
            .as_bytes(),
    )
}

#[tokio::test]
async fn client_against_hl7d() {
    let server = TestServer::start(vec![plain("lab")]).await;
    let mut client = Client::new(quick(server.addr("lab").to_string()));
    for file in ["adt_a01_v25.hl7", "adt_a04_v231_original_mode.hl7", "windows1252_adt_a08.hl7"] {
        let delivery = client.send(&fixture(file)).await.unwrap();
        assert!(delivery.ack.unwrap().code.is_accept(), "{file}");
        assert_eq!(delivery.attempts, 1);
    }
    // MSH-15 = NE: nothing to wait for.
    let delivery = client.send(&fixture("enhanced_ne_ne.hl7")).await.unwrap();
    assert!(delivery.ack.is_none());
    // An invalid message is still sent, and its AR (empty MSA-2) is matched to it.
    let delivery = client.send(&fixture("invalid_missing_control_id.hl7")).await.unwrap();
    let ack = delivery.ack.unwrap();
    assert_eq!(ack.code, AckCode::ApplicationReject);
    assert!(ack.text.contains("MSH-10"), "{}", ack.text);
}

#[tokio::test]
async fn dropped_connection_before_the_ack_is_retried() {
    // First connection: read the message, close without an ACK. Later ones answer.
    let addr = fake_listener(|conn, frame| {
        if conn == 0 {
            return None;
        }
        let msh = hl7_proto::msh::Msh::parse(frame).unwrap();
        Some(ack_for("AA", std::str::from_utf8(msh.control_id).unwrap()))
    })
    .await;
    let mut client = Client::new(quick(addr.to_string()));
    let delivery = client.send(MSG).await.expect("delivered on the resend");
    assert_eq!(delivery.attempts, 2);
    assert_eq!(delivery.ack.unwrap().code, AckCode::ApplicationAccept);
}

// Paused clock: the client's ACK timeouts cost no real time.
#[tokio::test(start_paused = true)]
async fn a_mismatched_ack_is_never_taken() {
    let addr = fake_listener(|_, _| Some(ack_for("AA", "SOMEONE-ELSE"))).await;
    let mut client = Client::new(ClientOptions { retries: 1, ..quick(addr.to_string()) });
    let failed = client.send(MSG).await.expect_err("a wrong MSA-2 is not an ACK for this message");
    assert_eq!(failed.attempts, 2);
    match &failed.last {
        SendError::Timeout { mismatched, .. } => assert_eq!(mismatched, &["SOMEONE-ELSE".to_string()]),
        other => panic!("expected a timeout naming the mismatched ACK, got {other}"),
    }
    assert!(failed.to_string().contains("SOMEONE-ELSE"));
}

#[tokio::test]
async fn late_ack_of_a_previous_message_is_skipped() {
    // The peer first answers for an old control id, then for this one.
    let addr = fake_listener(|_, frame| {
        let msh = hl7_proto::msh::Msh::parse(frame).unwrap();
        let mut reply = ack_for("AA", "OLD-1");
        reply.extend(ack_for("AA", std::str::from_utf8(msh.control_id).unwrap()));
        Some(reply)
    })
    .await;
    let mut client = Client::new(quick(addr.to_string()));
    let delivery = client.send(MSG).await.unwrap();
    assert_eq!(delivery.attempts, 1);
    assert_eq!(delivery.ack.unwrap().code, AckCode::ApplicationAccept);
}

#[tokio::test]
async fn mllp_release_2_commit_bytes_are_understood() {
    let addr = fake_listener(|_, _| Some(frame(&[0x06]))).await;
    let mut client = Client::new(quick(addr.to_string()));
    assert_eq!(client.send(MSG).await.unwrap().ack.unwrap().code, AckCode::CommitAccept);
}

fn hl7d_send(args: &[&str]) -> (i32, String, String) {
    let out =
        Command::new(env!("CARGO_BIN_EXE_hl7d")).arg("send").args(args).output().expect("run hl7d send");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn fixture_path(name: &str) -> String {
    format!("{}/crates/hl7-proto/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test]
async fn exit_codes() {
    let server = TestServer::start(vec![plain("lab")]).await;
    let to = server.addr("lab").to_string();

    // 0: all accepted (a directory is sent in name order; LF files are converted).
    let dir = tempdir("send-ok");
    std::fs::write(dir.join("1.hl7"), fixture("lf_segment_terminators.hl7")).unwrap();
    std::fs::write(dir.join("2.hl7"), fixture("orm_o01_v23.hl7")).unwrap();
    let (code, stdout, _) =
        tokio::task::spawn_blocking(move || hl7d_send(&["--to", &to, "--json", dir.to_str().unwrap()]))
            .await
            .unwrap();
    assert_eq!(code, 0, "{stdout}");
    let lines: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["control_id"], "LF-0001");
    assert_eq!(lines[1]["result"], "AA");

    // 1: a negative ACK.
    let to = server.addr("lab").to_string();
    let path = fixture_path("invalid_missing_control_id.hl7");
    let (code, stdout, _) =
        tokio::task::spawn_blocking(move || hl7d_send(&["--to", &to, &path])).await.unwrap();
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("AR"), "{stdout}");

    // 1: an application error (AE) from the peer, its text reported.
    let erring = fake_listener(|_, frame| {
        let msh = hl7_proto::msh::Msh::parse(frame).unwrap();
        Some(ack_for("AE", std::str::from_utf8(msh.control_id).unwrap()))
    })
    .await
    .to_string();
    let path = fixture_path("adt_a01_v25.hl7");
    let (code, stdout, _) =
        tokio::task::spawn_blocking(move || hl7d_send(&["--to", &erring, &path])).await.unwrap();
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("AE") && stdout.contains("text from peer"), "{stdout}");

    // 2: nobody answers.
    let silent = fake_listener(|_, _| Some(Vec::new())).await.to_string();
    let path = fixture_path("adt_a01_v25.hl7");
    let (code, _, stderr) = tokio::task::spawn_blocking(move || {
        hl7d_send(&[
            "--to",
            &silent,
            "--ack-timeout",
            "200ms",
            "--retries",
            "1",
            "--retry-delay",
            "10ms",
            &path,
        ])
    })
    .await
    .unwrap();
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("no ACK within"), "{stderr}");

    // 64: usage.
    let (code, _, stderr) = hl7d_send(&["--to", "127.0.0.1:1", "/nonexistent/file.hl7"]);
    assert_eq!(code, 64, "{stderr}");
    let (code, _, stderr) = hl7d_send(&["--to", "127.0.0.1:1", &fixture_path("batch_fhs_bhs_3msgs.hl7")]);
    assert_eq!(code, 64, "{stderr}");
    assert!(stderr.contains("--batch"), "{stderr}");
}

#[tokio::test]
async fn batch_file_with_batch_flag() {
    let server = TestServer::start(vec![plain("lab")]).await;
    let to = server.addr("lab").to_string();
    let path = fixture_path("batch_fhs_bhs_3msgs.hl7");
    let (code, stdout, _) =
        tokio::task::spawn_blocking(move || hl7d_send(&["--to", &to, "--batch", &path])).await.unwrap();
    assert_eq!(code, 0);
    assert_eq!(stdout.lines().count(), 3, "{stdout}");
    assert_eq!(server.store.accepted(), 3);
}

/// An enhanced-mode message whose MSH-15 is ER: the receiver answers only when it refuses.
const ER_MESSAGE: &[u8] = b"MSH|^~\\&|A|B|C|D|20261128||ADT^A01|ER-1|P|2.5|||ER|NE\rPID|1\r";

/// #13 item 7: `hl7d send` waited 30 s for an ACK that an ER message never gets, resent it
/// three times (stored three times) and reported failure. Now silence for `--error-wait`
/// on an open connection is acceptance, and the message is stored exactly once.
#[tokio::test]
async fn er_message_is_accepted_after_the_error_wait_and_stored_once() {
    let server = TestServer::start(vec![plain("lab")]).await;
    let to = server.addr("lab").to_string();
    let dir = tempdir("send-er");
    let path = dir.join("er.hl7");
    std::fs::write(&path, ER_MESSAGE).unwrap();
    let started = std::time::Instant::now();
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || {
        hl7d_send(&["--to", &to, "--json", "--error-wait", "300ms", path.to_str().unwrap()])
    })
    .await
    .unwrap();
    let took = started.elapsed();
    assert_eq!(code, 0, "{stdout} {stderr}");
    let line: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(line["control_id"], "ER-1");
    assert_eq!(line["result"], "none");
    assert_eq!(line["attempts"], 1, "{line}");
    assert!(line["text"].as_str().unwrap().contains("MSH-15 = ER"), "{line}");
    assert_eq!(server.store.accepted(), 1, "stored exactly once");
    assert!(took >= Duration::from_millis(300), "listened for the error wait: {took:?}");
    assert!(took < Duration::from_secs(10), "did not wait for the ACK timeout: {took:?}");
}

/// The other half of item 7: an ER message that is refused gets its error ACK, and that
/// ACK is reported (not mistaken for silence). On the paused clock: the 5 s error wait
/// passes at once when nothing comes, and not at all when the ACK does.
#[tokio::test(start_paused = true)]
async fn an_error_ack_to_an_er_message_is_reported() {
    let server = TestServer::start(vec![plain("lab")]).await;
    // No MSH-10: hl7d refuses it with CR (MSA-2 empty, matching the empty control id).
    let refused = b"MSH|^~\\&|A|B|C|D|20261128||ADT^A01||P|2.5|||ER|NE\rPID|1\r";
    let options =
        ClientOptions { error_wait: Duration::from_secs(5), ..quick(server.addr("lab").to_string()) };
    let mut client = Client::new(options);
    let started = tokio::time::Instant::now();
    let delivery = client.send(refused).await.unwrap();
    let ack = delivery.ack.expect("the CR is reported");
    assert_eq!(ack.code, AckCode::CommitReject);
    assert!(started.elapsed() < Duration::from_secs(5), "taken as soon as it came");
    let started = tokio::time::Instant::now();
    assert_eq!(server.store.accepted(), 0);
    // The same connection then sends an ER message that is taken: silence, one attempt.
    let delivery = client.send(ER_MESSAGE).await.unwrap();
    assert!(delivery.ack.is_none());
    assert_eq!(delivery.accept_ack, Some(hl7_proto::msh::AckCondition::ErrorOnly));
    assert_eq!(delivery.attempts, 1);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(5) && waited < Duration::from_secs(6),
        "the error wait: {waited:?}"
    );
    assert_eq!(server.store.accepted(), 1);
}

/// A connection that closes during the error wait is not silence: the message is resent.
#[tokio::test(start_paused = true)]
async fn a_close_during_the_error_wait_is_not_acceptance() {
    let addr = fake_listener(|conn, _| if conn == 0 { None } else { Some(Vec::new()) }).await;
    let mut client = Client::new(quick(addr.to_string()));
    let delivery = client.send(ER_MESSAGE).await.expect("taken on the second connection");
    assert_eq!(delivery.attempts, 2);
    assert!(delivery.ack.is_none());
}

/// `--show-ack` prints every segment of the ACK, one per line (#13 item 11).
#[tokio::test]
async fn show_ack_prints_the_whole_ack() {
    let server = TestServer::start(vec![plain("lab")]).await;
    let to = server.addr("lab").to_string();
    let path = fixture_path("invalid_missing_control_id.hl7");
    let (code, stdout, _) =
        tokio::task::spawn_blocking(move || hl7d_send(&["--to", &to, "--show-ack", &path])).await.unwrap();
    assert_eq!(code, 1, "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].contains("AR"), "{stdout}");
    let segments: Vec<&str> = lines[1..].iter().map(|l| l.trim_start()).collect();
    assert!(segments[0].starts_with("MSH|"), "{stdout}");
    assert!(segments.iter().any(|s| s.starts_with("MSA|AR")), "{stdout}");
    assert!(segments.iter().any(|s| s.starts_with("ERR|")), "{stdout}");

    let to = server.addr("lab").to_string();
    let path = fixture_path("adt_a01_v25.hl7");
    let (code, stdout, _) =
        tokio::task::spawn_blocking(move || hl7d_send(&["--to", &to, "--show-ack", "--json", &path]))
            .await
            .unwrap();
    assert_eq!(code, 0, "{stdout}");
    let line: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let ack: Vec<&str> = line["ack"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    assert_eq!(ack.len(), 2, "{line}");
    assert!(ack[0].starts_with("MSH|") && ack[1].starts_with("MSA|CA|MSG00001"), "{line}");
}

/// A TLS server answering a plaintext MLLP frame with an alert (as rustls-based servers
/// do): the reply itself says "TLS", no probe needed, no resend (#13 item 8).
#[tokio::test]
async fn a_tls_alert_in_reply_to_mllp_says_add_tls() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let mut buf = [0u8; 64];
            let _ = conn.read(&mut buf).await;
            let _ = conn.write_all(&hl7_proto::sniff::PROTOCOL_VERSION_ALERT).await;
        }
    });
    let mut client = Client::new(quick(addr.to_string()));
    let failed = client.send(MSG).await.expect_err("not an MLLP server");
    assert!(matches!(failed.last, SendError::ServerSpeaksTls), "{failed}");
    assert_eq!(failed.attempts, 1);
    assert!(failed.to_string().contains("the server speaks TLS: add --tls"), "{failed}");
}

/// An MLLP server answering a TLS hello with an MLLP frame (a NAK for junk): the bytes say
/// "not TLS" (#13 item 8).
#[tokio::test]
async fn an_mllp_reply_to_a_tls_hello_says_drop_tls() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let mut buf = [0u8; 512];
            let _ = conn.read(&mut buf).await;
            let _ = conn.write_all(&ack_for("AR", "")).await;
        }
    });
    let config = client_config(&ClientTlsOptions { danger_insecure: true, ..Default::default() }).unwrap();
    let to = addr.to_string();
    let tls = Some((std::sync::Arc::new(config), server_name(&to, None).unwrap()));
    let mut client = Client::new(ClientOptions { tls, ..quick(to) });
    let failed = client.send(MSG).await.expect_err("not a TLS server");
    assert!(matches!(failed.last, SendError::Tls(TlsFailure::NotTls)), "{failed}");
    assert_eq!(failed.attempts, 1);
    assert!(failed.to_string().contains("the server does not speak TLS: drop --tls"), "{failed}");
}
