//! Prometheus metrics: every metric name and label set, the recorder, and the text that
//! `GET /metrics` serves.
//!
//! The code that counts uses the `metrics` facade (`counter!`, `histogram!`), so the listener,
//! TLS and store modules need no handle passed to them; without an installed recorder (no
//! `[admin]` table) every call is a no-op. Hot paths (one call per message) use the
//! pre-registered handles of [`ListenerMetrics`], which are plain atomic adds; rare paths
//! (refusals, closes) name the metric at the call site with one of the constants below.
//!
//! Label sets are small and fixed: `listener` (a configured name), `code` (an ACK code),
//! `reason` (one of a fixed list per metric), `version` (TLS version), and for certificate
//! expiry `thumbprint` of an *approved* client certificate (bounded by the configuration).
//! Never a control id, a peer address or anything else a sender chooses.
//!
//! State that is read rather than counted (certificate expiry dates, build info) is
//! rendered at scrape time by [`render`], so it is never stale after a reload.

use std::fmt::Write as _;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hl7_proto::ack::AckCode;
use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// TCP connections that passed the allowlist and the connection limit. `{listener}`
pub const CONNECTIONS_ACCEPTED: &str = "hl7d_connections_accepted_total";
/// Connections refused at accept. `{listener, reason}`: `ip_not_allowed`, `max_connections`,
/// `max_connections_per_ip`.
pub const CONNECTIONS_REFUSED: &str = "hl7d_connections_refused_total";
/// Connections open now (TLS handshakes in progress included). `{listener}`
pub const CONNECTIONS_OPEN: &str = "hl7d_connections_open";
/// Connections open now that have not finished their TLS handshake or (plaintext) sent
/// their first MLLP byte. `{listener}`
pub const CONNECTIONS_PENDING: &str = "hl7d_connections_pending";
/// Pending connections dropped to make room for a newer one (`max_pending`, or a full
/// `max_connections`). `{listener}`
pub const CONNECTIONS_PENDING_DROPPED: &str = "hl7d_connections_pending_dropped_total";
/// Refusal log lines (and audit events) left out by the per-address rate limit; each
/// address's are told in one summary line a minute. `{listener}`
pub const REFUSAL_LINES_SUPPRESSED: &str = "hl7d_refusal_lines_suppressed_total";
/// Connections closed after accept, by why. `{listener, reason}`: the connection's
/// `CloseReason::label`, `client_cert_revoked` or `closed_before_data`.
pub const CONNECTIONS_CLOSED: &str = "hl7d_connections_closed_total";
/// Successful TLS handshakes. `{listener, version}`: `TLSv1.2`, `TLSv1.3`.
pub const TLS_HANDSHAKES: &str = "hl7d_tls_handshakes_total";
/// Failed TLS handshakes. `{listener, reason}`: the `RefusalReason` names (`not_tls`,
/// `client_cert_unapproved`, … and `closed_before_handshake` for health checks).
pub const TLS_HANDSHAKE_FAILURES: &str = "hl7d_tls_handshake_failures_total";
/// Complete MLLP frames received (accepted or not). `{listener}`
pub const MESSAGES_RECEIVED: &str = "hl7d_messages_received_total";
/// ACKs written. `{listener, code}`: `AA` `AE` `AR` `CA` `CE` `CR`.
pub const ACKS_SENT: &str = "hl7d_acks_sent_total";
/// Messages recognised as duplicates (acknowledged again, not stored twice). `{listener}`
pub const DUPLICATES: &str = "hl7d_messages_duplicate_total";
/// Bytes read from senders (after TLS decryption). `{listener}`
pub const BYTES_RECEIVED: &str = "hl7d_received_bytes_total";
/// Bytes written to senders (ACK frames, before TLS encryption). `{listener}`
pub const BYTES_SENT: &str = "hl7d_sent_bytes_total";
/// Frames refused by the MLLP decoder. `{listener, reason}`: `too_large`, `bad_end`,
/// `abandoned`.
pub const FRAME_ERRORS: &str = "hl7d_frame_errors_total";
/// Time from a frame's last byte to its ACK written, seconds. `{listener}`
pub const ACK_LATENCY: &str = "hl7d_ack_latency_seconds";
/// Duration of one store transaction (write + commit + fsync), seconds.
pub const STORE_COMMIT_SECONDS: &str = "hl7d_store_commit_seconds";
/// Messages in one store transaction (group commit).
pub const STORE_COMMIT_MESSAGES: &str = "hl7d_store_commit_messages";
/// Store transactions that failed (every message in them got an error ACK).
pub const STORE_FAILED_COMMITS: &str = "hl7d_store_failed_commits_total";
/// Lines the audit trail could not deliver to syslog (queue full or collector down).
pub const AUDIT_DROPPED: &str = "hl7d_audit_syslog_dropped_total";
/// Deliveries waiting (pending), as last counted (every few seconds). `{route}`
pub const ROUTE_PENDING: &str = "hl7d_route_pending";
/// Age of the oldest delivery pending or in flight, seconds (0 when none), as last counted.
/// `{route}`
pub const ROUTE_OLDEST_PENDING: &str = "hl7d_route_oldest_pending_seconds";
/// Messages delivered. `{route}`
pub const ROUTE_DELIVERED: &str = "hl7d_route_delivered_total";
/// Failed attempts that will be retried after a backoff. `{route, reason}`: the
/// `RetryReason` labels (`connect`, `tls`, `timeout`, `connection_lost`, `bad_ack`,
/// `application_error`, `http_status`, `io`).
pub const ROUTE_RETRIES: &str = "hl7d_route_retries_total";
/// Deliveries parked (waiting for an operator), as last counted. `{route}`
pub const ROUTE_PARKED: &str = "hl7d_route_parked";
/// Lanes held behind a parked message. `{route}`
pub const ROUTE_HELD_LANES: &str = "hl7d_route_held_lanes";
/// From a delivery queued (its message stored) to delivered, seconds. `{route}`
pub const ROUTE_DELIVERY_SECONDS: &str = "hl7d_route_delivery_seconds";
/// Lanes this node took under a lease (shared store only; each node counts its own).
/// `{route}`
pub const ROUTE_LANES_TAKEN: &str = "hl7d_route_lanes_taken_total";
/// Lanes this node stopped working because its lease ran out or another node held it
/// (shared store only). `{route}`
pub const ROUTE_LEASES_LOST: &str = "hl7d_route_leases_lost_total";
/// Lanes this node works now. `{route}`
pub const ROUTE_LANES_ACTIVE: &str = "hl7d_route_lanes_active";

/// Buckets of [`ACK_LATENCY`]: 0.5 ms to 10 s.
const ACK_LATENCY_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Buckets of [`STORE_COMMIT_SECONDS`]: 0.1 ms to 5 s (an fsync is typically 0.5–20 ms).
const STORE_COMMIT_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];
/// Buckets of [`STORE_COMMIT_MESSAGES`]: powers of two up to the store's batch limit (1024).
const STORE_BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];
/// Buckets of [`ROUTE_DELIVERY_SECONDS`]: 1 ms to a day (a downstream that was down for
/// hours shows in the upper buckets).
const ROUTE_DELIVERY_BUCKETS: &[f64] =
    &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 3600.0, 86400.0];
/// How often histogram samples are folded into their buckets when nobody scrapes (the
/// exporter keeps raw samples until then; see `PrometheusHandle::run_upkeep`).
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder (once; later calls return the same
/// handle). Call it before [`crate::listener::Server::start`]: handles registered before
/// are no-ops. If some other recorder was installed first, the handle renders only what
/// [`render`] adds itself.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new();
        let builder = [
            (ACK_LATENCY, ACK_LATENCY_BUCKETS),
            (STORE_COMMIT_SECONDS, STORE_COMMIT_BUCKETS),
            (STORE_COMMIT_MESSAGES, STORE_BATCH_BUCKETS),
            (ROUTE_DELIVERY_SECONDS, ROUTE_DELIVERY_BUCKETS),
        ]
        .into_iter()
        .fold(builder, |builder, (name, buckets)| {
            builder
                .set_buckets_for_metric(Matcher::Full(name.to_owned()), buckets)
                // Only fails for an empty bucket list; these are constants.
                .expect("non-empty bucket list")
        });
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!(
                "a metrics recorder was already installed; /metrics shows build and certificate facts only"
            );
        }
        describe();
        handle
    })
}

/// Whether [`install`] has run.
pub fn installed() -> Option<&'static PrometheusHandle> {
    HANDLE.get()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(CONNECTIONS_ACCEPTED, "TCP connections that passed allow_ips and max_connections");
    describe_counter!(CONNECTIONS_REFUSED, "connections refused at accept, by reason");
    describe_gauge!(CONNECTIONS_OPEN, "connections open now");
    describe_gauge!(
        CONNECTIONS_PENDING,
        "connections open now without a finished TLS handshake or first MLLP byte"
    );
    describe_counter!(CONNECTIONS_PENDING_DROPPED, "pending connections dropped to make room for newer ones");
    describe_counter!(REFUSAL_LINES_SUPPRESSED, "refusal log lines left out by the per-address rate limit");
    describe_counter!(CONNECTIONS_CLOSED, "connections closed after accept, by reason");
    describe_counter!(TLS_HANDSHAKES, "successful TLS handshakes by version");
    describe_counter!(TLS_HANDSHAKE_FAILURES, "failed TLS handshakes by reason");
    describe_counter!(MESSAGES_RECEIVED, "complete MLLP frames received");
    describe_counter!(ACKS_SENT, "acknowledgements written, by MSA-1 code");
    describe_counter!(DUPLICATES, "messages recognised as duplicates and acknowledged again");
    describe_counter!(BYTES_RECEIVED, Unit::Bytes, "bytes read from senders");
    describe_counter!(BYTES_SENT, Unit::Bytes, "bytes written to senders");
    describe_counter!(FRAME_ERRORS, "frames refused by the MLLP decoder, by reason");
    describe_histogram!(ACK_LATENCY, Unit::Seconds, "from a frame's last byte to its ACK written");
    describe_histogram!(STORE_COMMIT_SECONDS, Unit::Seconds, "one store transaction including fsync");
    describe_histogram!(STORE_COMMIT_MESSAGES, "messages per store transaction");
    describe_counter!(STORE_FAILED_COMMITS, "store transactions that failed");
    describe_counter!(AUDIT_DROPPED, "audit lines not delivered to syslog");
    describe_gauge!(ROUTE_PENDING, "deliveries waiting, by route");
    describe_gauge!(ROUTE_OLDEST_PENDING, Unit::Seconds, "age of the oldest delivery pending or in flight");
    describe_counter!(ROUTE_DELIVERED, "messages delivered, by route");
    describe_counter!(ROUTE_RETRIES, "failed delivery attempts to be retried, by route and reason");
    describe_gauge!(ROUTE_PARKED, "deliveries parked for an operator, by route");
    describe_gauge!(ROUTE_HELD_LANES, "lanes held behind a parked message, by route");
    describe_histogram!(ROUTE_DELIVERY_SECONDS, Unit::Seconds, "from a delivery queued to delivered");
    describe_counter!(ROUTE_LANES_TAKEN, "lanes this node took under a lease, by route");
    describe_counter!(ROUTE_LEASES_LOST, "lanes this node stopped working: lease lost, by route");
    describe_gauge!(ROUTE_LANES_ACTIVE, "lanes this node works now, by route");
}

/// Folds histogram samples into buckets; the admin endpoint calls it every
/// [`UPKEEP_INTERVAL`] so that memory stays bounded between scrapes.
pub fn run_upkeep() {
    if let Some(handle) = installed() {
        handle.run_upkeep();
    }
}

/// The certificate facts of one TLS listener, read when `/metrics` is scraped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerCertificates {
    /// The listener's name.
    pub listener: String,
    /// notAfter of the server certificate now presented, Unix seconds.
    pub server_not_after: i64,
    /// `(SHA-256 thumbprint, notAfter)` of every approved client certificate that has
    /// completed a handshake since start.
    pub clients_seen: Vec<(String, i64)>,
    /// Approved client thumbprints in force (0 without mutual TLS).
    pub approved: usize,
}

/// The Prometheus text exposition: the recorder's metrics, then build info, start time and
/// the certificate expiry gauges of `certificates` (one entry per TLS listener).
pub fn render(certificates: &[ListenerCertificates], started: SystemTime) -> String {
    let mut out = installed().map(PrometheusHandle::render).unwrap_or_default();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    render_static(&mut out, started);
    render_certificates(&mut out, certificates);
    out
}

fn render_static(out: &mut String, started: SystemTime) {
    // Writing to a String cannot fail (here and below).
    let _ = writeln!(out, "# HELP hl7d_build_info build of this process; the value is always 1");
    let _ = writeln!(out, "# TYPE hl7d_build_info gauge");
    let _ = writeln!(out, "hl7d_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"));
    let _ = writeln!(out, "# HELP hl7d_start_time_seconds when this process started, Unix time");
    let _ = writeln!(out, "# TYPE hl7d_start_time_seconds gauge");
    let _ = writeln!(out, "hl7d_start_time_seconds {}", unix_seconds(started));
}

/// Server certificate of every TLS listener; approved client certificates that have
/// completed a handshake since start (a thumbprint alone carries no date, so a client not
/// seen yet has no series); number of approved thumbprints.
fn render_certificates(out: &mut String, listeners: &[ListenerCertificates]) {
    if listeners.is_empty() {
        return;
    }
    let _ = writeln!(out, "# HELP hl7d_tls_server_cert_expiry_timestamp_seconds notAfter of the server certificate now presented");
    let _ = writeln!(out, "# TYPE hl7d_tls_server_cert_expiry_timestamp_seconds gauge");
    for listener in listeners {
        let _ = writeln!(
            out,
            "hl7d_tls_server_cert_expiry_timestamp_seconds{{listener=\"{}\"}} {}",
            escape(&listener.listener),
            listener.server_not_after
        );
    }
    let _ = writeln!(out, "# HELP hl7d_tls_client_cert_expiry_timestamp_seconds notAfter of an approved client certificate, known once it has connected");
    let _ = writeln!(out, "# TYPE hl7d_tls_client_cert_expiry_timestamp_seconds gauge");
    for listener in listeners {
        for (thumbprint, not_after) in &listener.clients_seen {
            let _ = writeln!(
                out,
                "hl7d_tls_client_cert_expiry_timestamp_seconds{{listener=\"{}\",thumbprint=\"{}\"}} {}",
                escape(&listener.listener),
                escape(thumbprint),
                not_after
            );
        }
    }
    let _ =
        writeln!(out, "# HELP hl7d_tls_approved_clients client_thumbprints in force (0 without mutual TLS)");
    let _ = writeln!(out, "# TYPE hl7d_tls_approved_clients gauge");
    for listener in listeners {
        let _ = writeln!(
            out,
            "hl7d_tls_approved_clients{{listener=\"{}\"}} {}",
            escape(&listener.listener),
            listener.approved
        );
    }
}

/// A label value as the exposition format wants it (listener names are `[A-Za-z0-9_.-]`
/// already; this is defence in depth).
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The per-message metrics of one listener, registered once so that counting is an atomic
/// add. Built by `listener::Profile::new`.
#[derive(Clone)]
pub struct ListenerMetrics {
    /// [`CONNECTIONS_ACCEPTED`]
    pub accepted: Counter,
    /// [`CONNECTIONS_OPEN`]
    pub open: Gauge,
    /// [`CONNECTIONS_PENDING`]
    pub pending: Gauge,
    /// [`CONNECTIONS_PENDING_DROPPED`]
    pub pending_dropped: Counter,
    /// [`REFUSAL_LINES_SUPPRESSED`]
    pub refusal_lines_suppressed: Counter,
    /// [`MESSAGES_RECEIVED`]
    pub messages: Counter,
    /// [`DUPLICATES`]
    pub duplicates: Counter,
    /// [`BYTES_RECEIVED`]
    pub bytes_in: Counter,
    /// [`BYTES_SENT`]
    pub bytes_out: Counter,
    /// [`ACK_LATENCY`]
    pub ack_latency: Histogram,
    /// [`ACKS_SENT`], in the order of [`ACK_CODES`].
    acks: [Counter; 6],
    listener: metrics::SharedString,
}

/// Every ACK code, in table 0008 order: the `code` label values of [`ACKS_SENT`].
const ACK_CODES: [AckCode; 6] = [
    AckCode::ApplicationAccept,
    AckCode::ApplicationError,
    AckCode::ApplicationReject,
    AckCode::CommitAccept,
    AckCode::CommitError,
    AckCode::CommitReject,
];

impl ListenerMetrics {
    /// Registers the metrics of listener `name` (all ACK codes start at zero, so a
    /// dashboard sees every series from the start).
    pub fn new(name: &str) -> ListenerMetrics {
        let listener = metrics::SharedString::from(name.to_owned());
        let l = || listener.clone();
        ListenerMetrics {
            accepted: counter!(CONNECTIONS_ACCEPTED, "listener" => l()),
            open: gauge!(CONNECTIONS_OPEN, "listener" => l()),
            pending: gauge!(CONNECTIONS_PENDING, "listener" => l()),
            pending_dropped: counter!(CONNECTIONS_PENDING_DROPPED, "listener" => l()),
            refusal_lines_suppressed: counter!(REFUSAL_LINES_SUPPRESSED, "listener" => l()),
            messages: counter!(MESSAGES_RECEIVED, "listener" => l()),
            duplicates: counter!(DUPLICATES, "listener" => l()),
            bytes_in: counter!(BYTES_RECEIVED, "listener" => l()),
            bytes_out: counter!(BYTES_SENT, "listener" => l()),
            ack_latency: histogram!(ACK_LATENCY, "listener" => l()),
            acks: ACK_CODES.map(|code| counter!(ACKS_SENT, "listener" => l(), "code" => code.as_str())),
            listener,
        }
    }

    /// The counter of ACKs with `code`.
    pub fn ack(&self, code: AckCode) -> &Counter {
        let index = ACK_CODES.iter().position(|c| *c == code).unwrap_or(0);
        &self.acks[index]
    }

    /// Counts a connection refused at accept (`ip_not_allowed`, `max_connections`,
    /// `max_connections_per_ip`).
    pub fn refused(&self, reason: &'static str) {
        counter!(CONNECTIONS_REFUSED, "listener" => self.listener.clone(), "reason" => reason).increment(1);
    }

    /// Counts a connection closed for `reason` (see [`CONNECTIONS_CLOSED`]).
    pub fn closed(&self, reason: &'static str) {
        counter!(CONNECTIONS_CLOSED, "listener" => self.listener.clone(), "reason" => reason).increment(1);
    }

    /// Counts a frame refused by the decoder (`too_large`, `bad_end`, `abandoned`).
    pub fn frame_error(&self, reason: &'static str) {
        counter!(FRAME_ERRORS, "listener" => self.listener.clone(), "reason" => reason).increment(1);
    }
}

/// The metrics of one route, registered once (every retry reason starts at zero).
#[derive(Clone)]
pub struct RouteMetrics {
    /// [`ROUTE_PENDING`]
    pub pending: Gauge,
    /// [`ROUTE_OLDEST_PENDING`]
    pub oldest_pending: Gauge,
    /// [`ROUTE_DELIVERED`]
    pub delivered: Counter,
    /// [`ROUTE_PARKED`]
    pub parked: Gauge,
    /// [`ROUTE_HELD_LANES`]
    pub held_lanes: Gauge,
    /// [`ROUTE_DELIVERY_SECONDS`]
    pub delivery_seconds: Histogram,
    /// [`ROUTE_LANES_TAKEN`]
    pub lanes_taken: Counter,
    /// [`ROUTE_LEASES_LOST`]
    pub leases_lost: Counter,
    /// [`ROUTE_LANES_ACTIVE`]
    pub lanes_active: Gauge,
    /// [`ROUTE_RETRIES`], one per reason label, in the order of `reasons`.
    retries: Vec<(&'static str, Counter)>,
}

impl RouteMetrics {
    /// Registers the metrics of route `name`, with a retry counter for each of `reasons`
    /// (the `RetryReason` labels).
    pub fn new(name: &str, reasons: &[&'static str]) -> RouteMetrics {
        let route = metrics::SharedString::from(name.to_owned());
        let r = || route.clone();
        RouteMetrics {
            pending: gauge!(ROUTE_PENDING, "route" => r()),
            oldest_pending: gauge!(ROUTE_OLDEST_PENDING, "route" => r()),
            delivered: counter!(ROUTE_DELIVERED, "route" => r()),
            parked: gauge!(ROUTE_PARKED, "route" => r()),
            held_lanes: gauge!(ROUTE_HELD_LANES, "route" => r()),
            delivery_seconds: histogram!(ROUTE_DELIVERY_SECONDS, "route" => r()),
            lanes_taken: counter!(ROUTE_LANES_TAKEN, "route" => r()),
            leases_lost: counter!(ROUTE_LEASES_LOST, "route" => r()),
            lanes_active: gauge!(ROUTE_LANES_ACTIVE, "route" => r()),
            retries: reasons
                .iter()
                .map(|&reason| (reason, counter!(ROUTE_RETRIES, "route" => r(), "reason" => reason)))
                .collect(),
        }
    }

    /// Counts a retry for `reason` (one of the labels given to [`RouteMetrics::new`]).
    pub fn retry(&self, reason: &str) {
        if let Some((_, counter)) = self.retries.iter().find(|(label, _)| *label == reason) {
            counter.increment(1);
        }
    }
}

/// Counts a finished TLS handshake on `listener`: `Ok(version)` or `Err(reason)`.
pub fn tls_handshake(listener: &str, result: Result<&'static str, &'static str>) {
    let listener = listener.to_owned();
    match result {
        Ok(version) => counter!(TLS_HANDSHAKES, "listener" => listener, "version" => version).increment(1),
        Err(reason) => {
            counter!(TLS_HANDSHAKE_FAILURES, "listener" => listener, "reason" => reason).increment(1)
        }
    }
}

/// Records one store transaction: how long it took and how many messages it carried.
pub fn store_commit(elapsed: Duration, messages: usize) {
    histogram!(STORE_COMMIT_SECONDS).record(elapsed.as_secs_f64());
    histogram!(STORE_COMMIT_MESSAGES).record(messages as f64);
}

/// Counts a failed store transaction.
pub fn store_failed_commit() {
    counter!(STORE_FAILED_COMMITS).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_part_is_valid_exposition() {
        let mut out = String::new();
        render_static(&mut out, UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        assert!(out.contains("hl7d_build_info{version=\""), "{out}");
        assert!(out.contains("hl7d_start_time_seconds 1700000000\n"), "{out}");
        for line in out.lines().filter(|line| !line.starts_with('#')) {
            let value = line.rsplit_once(' ').map(|(_, v)| v).unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }

    #[test]
    fn certificate_gauges_per_listener() {
        let mut out = String::new();
        render_certificates(&mut out, &[]);
        assert_eq!(out, "", "no TLS listener, no certificate series");
        let listeners = [ListenerCertificates {
            listener: "lab".into(),
            server_not_after: 1_800_000_000,
            clients_seen: vec![("sha256:ab".into(), 1_700_000_000)],
            approved: 2,
        }];
        render_certificates(&mut out, &listeners);
        assert!(
            out.contains("hl7d_tls_server_cert_expiry_timestamp_seconds{listener=\"lab\"} 1800000000\n"),
            "{out}"
        );
        assert!(
            out.contains("hl7d_tls_client_cert_expiry_timestamp_seconds{listener=\"lab\",thumbprint=\"sha256:ab\"} 1700000000\n"),
            "{out}"
        );
        assert!(out.contains("hl7d_tls_approved_clients{listener=\"lab\"} 2\n"), "{out}");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(escape("lab-1.x"), "lab-1.x");
    }

    #[test]
    fn ack_counter_per_code() {
        // Without a recorder the handles are no-ops, but every code has its own slot.
        let metrics = ListenerMetrics::new("t");
        for code in ACK_CODES {
            metrics.ack(code).increment(1);
        }
        assert_eq!(ACK_CODES.map(AckCode::as_str), ["AA", "AE", "AR", "CA", "CE", "CR"]);
    }
}
