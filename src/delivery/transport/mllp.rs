//! `mllp://` and `mllps://` routes: each message goes out through the library's MLLP client
//! ([`crate::sender::Client`]), so framing, TLS, pinning and mutual TLS behave exactly as in
//! `hl7d send`, and its answer becomes an [`Outcome`] by the outcome table's MLLP rows.
//!
//! The connection stays open between messages. Before each message a connection that the
//! receiver closed while it sat idle (its idle timeout) is noticed and replaced, so that an
//! idle close does not cost a retry; after any failed attempt (no ACK in time, a lost
//! connection, a TLS failure, an answer that is not this message's ACK) the client drops
//! the connection and the next attempt opens a new one. The client is asked for one attempt
//! (`retries: 0`): resending is the engine's decision.
//!
//! Texts carry no message content: ACK codes, ERR-3 codes and the ACK's MSA-3/ERR text
//! capped by [`crate::peer_text::cap`], control ids of ACKs for other messages, error kinds.

use std::time::Duration;

use hl7_proto::ack::{self, AckCode};
use hl7_proto::charset::Charset;
use hl7_proto::mllp::Framing;

use super::{no_tls_settings, tls_client, tls_failure_text, BuildError};
use crate::config::{OnApplicationError, RouteConfig, RouteTarget};
use crate::delivery::{BoxFuture, Outbound, Outcome, RetryReason, Transport};
use crate::peer_text;
use crate::sender::{Client, ClientOptions, Delivery, DeliveryFailed, ReceivedAck, SendError};

/// How long a message that asks for no ACK on success (MSH-15 NE, or ER) is listened on
/// before it counts as delivered: an ER receiver answers only when it refuses, and a
/// receiver that closes the connection at once did not take it. `hl7d send`'s default
/// `--error-wait`; never longer than the route's `ack_timeout`.
pub const NO_ACK_GRACE: Duration = Duration::from_secs(1);

/// Longest wait for the TCP connection and the TLS handshake (`hl7d send`'s); never longer
/// than the route's `ack_timeout`.
pub const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One MLLP(S) downstream and its open connection.
pub struct MllpTransport {
    client: Client,
    on_application_error: OnApplicationError,
    ack_timeout: Duration,
}

impl MllpTransport {
    /// The transport of an `mllp://` or `mllps://` route. Reads `[route.tls]`'s files now;
    /// connects on the first message.
    pub fn new(route: &RouteConfig) -> Result<MllpTransport, BuildError> {
        let RouteTarget::Mllp { address, host, tls } = &route.to else {
            return Err(BuildError::Target {
                route: route.name.clone(),
                reason: "not an mllp:// or mllps:// address".into(),
            });
        };
        let tls = if *tls {
            Some(tls_client(route, host, &[])?)
        } else {
            no_tls_settings(route)?;
            None
        };
        let options = ClientOptions {
            to: address.clone(),
            framing: Framing::DEFAULT,
            ack_timeout: route.ack_timeout,
            error_wait: NO_ACK_GRACE.min(route.ack_timeout),
            connect_timeout: MAX_CONNECT_TIMEOUT.min(route.ack_timeout),
            retries: 0,
            retry_delay: Duration::ZERO,
            reconnect_each: false,
            tls,
            // Only for ACK texts without MSH-18; `outcome` reads them again in the
            // message's own character set.
            charset: Charset::Utf8,
        };
        Ok(MllpTransport {
            client: Client::new(options),
            on_application_error: route.on_application_error,
            ack_timeout: route.ack_timeout,
        })
    }
}

impl Transport for MllpTransport {
    fn deliver<'a>(&'a mut self, message: &'a Outbound) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            self.client.drop_if_closed().await;
            let result = self.client.send(&message.raw).await;
            outcome(result, self.on_application_error, message.charset, self.ack_timeout)
        })
    }

    fn close(&mut self) {
        self.client.disconnect();
    }
}

/// The outcome table's MLLP rows for one attempt. `charset` reads ACK texts that name no
/// MSH-18 (the message's own character set, which its ACK is normally written in).
fn outcome(
    result: Result<Delivery, DeliveryFailed>,
    on_application_error: OnApplicationError,
    charset: Charset,
    ack_timeout: Duration,
) -> Outcome {
    match result {
        // Asked for no ACK on success, and the connection stayed up through the grace.
        Ok(Delivery { ack: None, .. }) => Outcome::Delivered { response: None },
        Ok(Delivery { ack: Some(ack), .. }) => answered(&ack, on_application_error, charset),
        Err(failed) => failed_attempt(failed.last, ack_timeout),
    }
}

/// An ACK whose MSA-2 is this message's MSH-10 (the client checked), or an MLLP Release 2
/// commit byte, which answers the message just sent.
fn answered(ack: &ReceivedAck, on_application_error: OnApplicationError, charset: Charset) -> Outcome {
    let code = ack.code.as_str();
    let response = Some(code.to_owned());
    let error = || format!("the downstream answered {}", ack_summary(ack, charset));
    match ack.code {
        AckCode::ApplicationAccept | AckCode::CommitAccept => Outcome::Delivered { response },
        AckCode::ApplicationError | AckCode::CommitError => match on_application_error {
            OnApplicationError::Park => Outcome::Park { error: error(), response },
            OnApplicationError::Retry => Outcome::Retry {
                reason: RetryReason::ApplicationError,
                error: error(),
                response,
                retry_after: None,
            },
        },
        AckCode::ApplicationReject | AckCode::CommitReject => Outcome::Park { error: error(), response },
    }
}

/// `AE (ERR-3 207): text` — the code, the ERR-3 codes, and the MSA-3/ERR text capped.
fn ack_summary(ack: &ReceivedAck, charset: Charset) -> String {
    let mut summary = ack.code.as_str().to_owned();
    let Some(read) = ack::ReceivedAck::parse(&ack.raw) else { return summary };
    let codes: Vec<String> = read.error_codes().map(|code| code.to_string()).collect();
    if !codes.is_empty() {
        summary.push_str(&format!(" (ERR-3 {})", codes.join(", ")));
    }
    let text = read.text(charset);
    if !text.is_empty() {
        summary.push_str(": ");
        summary.push_str(&peer_text::cap(&text));
    }
    summary
}

/// A failed attempt; the client has dropped its connection already.
fn failed_attempt(error: SendError, ack_timeout: Duration) -> Outcome {
    let retry = |reason, error: String| Outcome::Retry { reason, error, response: None, retry_after: None };
    match error {
        SendError::Connect { .. } => retry(RetryReason::Connect, error.to_string()),
        SendError::Tls(failure) => {
            retry(RetryReason::Tls, format!("tls: {}", tls_failure_text(&failure, "mllp")))
        }
        SendError::ServerSpeaksTls => {
            retry(RetryReason::Tls, "the server speaks TLS: use mllps:// (and [route.tls])".into())
        }
        SendError::Timeout { mismatched, .. } if mismatched.is_empty() => {
            retry(RetryReason::Timeout, format!("no ACK within {}", humantime::format_duration(ack_timeout)))
        }
        SendError::Timeout { mismatched, .. } => {
            retry(RetryReason::BadAck, bad_ack_text(&mismatched, ack_timeout))
        }
        SendError::Closed => retry(RetryReason::ConnectionLost, error.to_string()),
        SendError::Io(_) => retry(RetryReason::ConnectionLost, format!("connection lost: {error}")),
        // No MSH or no usable header: a resend sends the same bytes.
        SendError::Unsendable(reason) => Outcome::Park {
            error: format!("message not sendable: {}", peer_text::cap(&reason)),
            response: None,
        },
    }
}

/// What came back instead of this message's ACK: frames that are not ACKs (no MSA, or an
/// MSA-1 outside table 0008) and ACKs for other control ids.
fn bad_ack_text(mismatched: &[String], ack_timeout: Duration) -> String {
    // The client's marker for a frame that is not an ACK.
    const NOT_AN_ACK: &str = "<not an ACK>";
    let not_acks = mismatched.iter().filter(|id| *id == NOT_AN_ACK).count();
    let others: Vec<&str> = mismatched.iter().map(String::as_str).filter(|id| *id != NOT_AN_ACK).collect();
    let mut parts = Vec::new();
    if not_acks > 0 {
        parts.push(format!("{not_acks} answer(s) without a readable MSA"));
    }
    if !others.is_empty() {
        let ids = others.iter().map(|id| format!("{id:?}")).collect::<Vec<_>>().join(", ");
        parts.push(format!("{} ACK(s) for other messages (MSA-2 {})", others.len(), peer_text::cap(&ids)));
    }
    format!(
        "no ACK for this message within {}: {}",
        humantime::format_duration(ack_timeout),
        parts.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_millis(200);

    fn ack(code: AckCode, raw: &str) -> ReceivedAck {
        ReceivedAck { code, text: String::new(), raw: raw.as_bytes().to_vec(), charset: Charset::Utf8 }
    }

    fn delivered(ack: Option<ReceivedAck>) -> Result<Delivery, DeliveryFailed> {
        Ok(Delivery {
            control_id: "MSG1".into(),
            ack,
            accept_ack: None,
            attempts: 1,
            latency: Duration::from_millis(3),
        })
    }

    fn failed(last: SendError) -> Result<Delivery, DeliveryFailed> {
        Err(DeliveryFailed { control_id: "MSG1".into(), attempts: 1, last })
    }

    fn park(result: Result<Delivery, DeliveryFailed>) -> Outcome {
        outcome(result, OnApplicationError::Park, Charset::Utf8, TIMEOUT)
    }

    fn retry_reason(outcome: &Outcome) -> Option<RetryReason> {
        match outcome {
            Outcome::Retry { reason, .. } => Some(*reason),
            _ => None,
        }
    }

    #[test]
    fn accept_codes_are_delivered_with_their_code() {
        let aa = ack(AckCode::ApplicationAccept, "MSH|^~\\&|||||||ACK|1|P|2.5\rMSA|AA|MSG1\r");
        assert_eq!(park(delivered(Some(aa))), Outcome::Delivered { response: Some("AA".into()) });
        let ca = ack(AckCode::CommitAccept, "\x06");
        assert_eq!(park(delivered(Some(ca))), Outcome::Delivered { response: Some("CA".into()) });
        assert_eq!(park(delivered(None)), Outcome::Delivered { response: None });
    }

    #[test]
    fn application_errors_follow_the_route_and_rejections_park() {
        let raw = "MSH|^~\\&|||||||ACK|1|P|2.5\rMSA|AE|MSG1|store busy\rERR|||207^Application internal error^HL70357|E\r";
        let ae = ack(AckCode::ApplicationError, raw);
        let parked = park(delivered(Some(ae.clone())));
        let Outcome::Park { error, response } = &parked else { panic!("{parked:?}") };
        assert_eq!(response.as_deref(), Some("AE"));
        assert_eq!(error, "the downstream answered AE (ERR-3 207): store busy; Application internal error");
        let retried = outcome(delivered(Some(ae)), OnApplicationError::Retry, Charset::Utf8, TIMEOUT);
        assert_eq!(retry_reason(&retried), Some(RetryReason::ApplicationError));

        for code in [AckCode::ApplicationReject, AckCode::CommitReject] {
            let rejected = ack(code, &format!("MSH|^~\\&|||||||ACK|1|P|2.5\rMSA|{code}|MSG1\r"));
            let outcome =
                outcome(delivered(Some(rejected)), OnApplicationError::Retry, Charset::Utf8, TIMEOUT);
            assert!(
                matches!(&outcome, Outcome::Park { response: Some(r), .. } if r == code.as_str()),
                "{outcome:?}"
            );
        }
    }

    #[test]
    fn long_ack_texts_are_capped() {
        let raw = format!("MSH|^~\\&|||||||ACK|1|P|2.5\rMSA|AR|MSG1|{}\r", "x".repeat(5000));
        let Outcome::Park { error, .. } = park(delivered(Some(ack(AckCode::ApplicationReject, &raw)))) else {
            panic!()
        };
        assert!(error.len() < 400, "{} bytes", error.len());
        assert!(error.ends_with("…(5000 bytes)"), "{error}");
    }

    #[test]
    fn each_failure_has_its_retry_reason() {
        let cases = [
            (SendError::Connect { to: "a:1".into(), reason: "refused".into() }, RetryReason::Connect),
            (SendError::Tls(crate::sender::TlsFailure::PinMismatch), RetryReason::Tls),
            (SendError::ServerSpeaksTls, RetryReason::Tls),
            (SendError::Timeout { waited: TIMEOUT, mismatched: Vec::new() }, RetryReason::Timeout),
            (SendError::Timeout { waited: TIMEOUT, mismatched: vec!["OTHER".into()] }, RetryReason::BadAck),
            (SendError::Closed, RetryReason::ConnectionLost),
            (SendError::Io(std::io::Error::other("x")), RetryReason::ConnectionLost),
        ];
        for (error, reason) in cases {
            let text = error.to_string();
            assert_eq!(retry_reason(&park(failed(error))), Some(reason), "{text}");
        }
        assert!(matches!(park(failed(SendError::Unsendable("no MSH".into()))), Outcome::Park { .. }));
    }

    #[test]
    fn tls_texts_speak_of_the_route_keys() {
        let Outcome::Retry { error, .. } =
            park(failed(SendError::Tls(crate::sender::TlsFailure::PinMismatch)))
        else {
            panic!()
        };
        assert_eq!(error, "tls: server certificate does not match [route.tls] pin");
    }

    #[test]
    fn bad_ack_texts_count_what_came_instead() {
        let text = bad_ack_text(&["<not an ACK>".into(), "OTHER".into(), "<not an ACK>".into()], TIMEOUT);
        assert_eq!(
            text,
            "no ACK for this message within 200ms: 2 answer(s) without a readable MSA, \
             1 ACK(s) for other messages (MSA-2 \"OTHER\")"
        );
    }
}
