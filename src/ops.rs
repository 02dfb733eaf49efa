//! The reads and delivery actions that the command line (`hl7d messages`, `hl7d routes`)
//! and the console (its pages and `/api/v1/`) share: the JSON objects of a stored message,
//! a delivery and a route's status; the routes to show; and retry, skip and resend with the
//! one audit line each writes. Both front ends call these, so a field or an audit line
//! cannot differ between them.
//!
//! It must not print, parse arguments or know HTTP: each caller renders the values for its
//! own medium. The audit lines carry who acted ([`Actor`]), the route, how the rows were
//! selected and message ids — never message contents or lane keys (a lane key holds a
//! patient identifier under `per_patient`).

use std::net::IpAddr;
use std::time::SystemTime;

use serde_json::json;

use crate::config::RouteConfig;
use crate::store::deliveries::{
    ActionError, Changed, Delivery, ParkedDelivery, Queued, Release, RouteRule, RouteStatus,
};
use crate::store::queue::DeliveryState;
use crate::store::{KeyFields, Reader, StoreActions, StoreAt, StoreError, StoreReader, StoredMessage};

/// Most message ids an audit line lists (then `… (N in all)`).
const AUDIT_IDS: usize = 50;

/// Who asked for an action, as its audit line names them.
#[derive(Debug, Clone, Default)]
pub struct Actor {
    /// The OS account (command line) or the console user or token name.
    pub user: String,
    /// The OS user id (command line only).
    pub uid: Option<u32>,
    /// `SUDO_USER` (command line only).
    pub sudo_user: Option<String>,
    /// The client's address (console only).
    pub addr: Option<IpAddr>,
    /// How the console caller proved who it is: `session` or `token` (console only).
    pub via: Option<&'static str>,
}

impl Actor {
    fn addr_text(&self) -> Option<String> {
        self.addr.map(|addr| addr.to_string())
    }
}

/// The object `list --json` prints for one message (and `show --json` with its deliveries),
/// with the key fields read at ingest in `key_fields`.
pub fn message_json(m: &StoredMessage) -> serde_json::Value {
    let time = |t: SystemTime| humantime::format_rfc3339_micros(t).to_string();
    json!({
        "id": m.id,
        "listener": m.listener,
        "control_id": m.control_id,
        "message_type": m.message_type,
        "received_at": time(m.received_at),
        "peer": m.peer,
        "client_thumbprint": m.client_thumbprint,
        "encoding": m.encoding,
        "size": m.size,
        "ack_code": m.ack_code,
        "duplicate_count": m.duplicate_count,
        "last_duplicate_at": m.last_duplicate_at.map(time),
        "sending_application": m.sending_application,
        "sending_facility": m.sending_facility,
        "processing_id": m.processing_id,
        "version": m.version,
        "status": m.status.as_str(),
        "reason": m.reason,
        "error_code": m.error_code,
        "key_fields": key_fields_json(&m.fields),
    })
}

/// The key fields a message has, by column name, for `show` (times in RFC 3339: MSH-7
/// with its offset as UTC, or as written when it had none).
pub fn key_field_values(fields: &KeyFields) -> Vec<(&'static str, String)> {
    let mut values = Vec::new();
    let mut text = |name: &'static str, value: &Option<String>| {
        if let Some(value) = value {
            values.push((name, value.clone()));
        }
    };
    text("patient_id", &fields.patient_id);
    text("patient_authority", &fields.patient_authority);
    text("visit_number", &fields.visit_number);
    text("placer_order", &fields.placer_order);
    text("filler_order", &fields.filler_order);
    text("trigger_event", &fields.trigger_event);
    match (fields.message_time_utc, fields.message_time_wall) {
        (Some(utc), _) => values.push(("message_time", micros_rfc3339(utc))),
        (None, Some(wall)) => {
            let written = micros_rfc3339(wall);
            values.push(("message_time", format!("{} (no offset)", written.trim_end_matches('Z'))));
        }
        (None, None) => {}
    }
    let mut text = |name: &'static str, value: &Option<String>| {
        if let Some(value) = value {
            values.push((name, value.clone()));
        }
    };
    text("lane_sender", &fields.lane_sender);
    text("lane_patient", &fields.lane_patient);
    values
}

/// Microseconds since the Unix epoch as RFC 3339 (UTC).
pub fn micros_rfc3339(micros: i64) -> String {
    let time = if micros >= 0 {
        SystemTime::UNIX_EPOCH + std::time::Duration::from_micros(micros as u64)
    } else {
        SystemTime::UNIX_EPOCH - std::time::Duration::from_micros(micros.unsigned_abs())
    };
    humantime::format_rfc3339_micros(time).to_string()
}

/// The `key_fields` object of `list --json` and `show --json`.
pub fn key_fields_json(fields: &KeyFields) -> serde_json::Value {
    json!({
        "patient_id": fields.patient_id,
        "patient_authority": fields.patient_authority,
        "visit_number": fields.visit_number,
        "placer_order": fields.placer_order,
        "filler_order": fields.filler_order,
        "trigger_event": fields.trigger_event,
        "message_time_utc": fields.message_time_utc.map(micros_rfc3339),
        "message_time_wall": fields.message_time_wall.map(|wall| micros_rfc3339(wall).trim_end_matches('Z').to_owned()),
        "lane_sender": fields.lane_sender,
        "lane_patient": fields.lane_patient,
    })
}

/// One entry of `deliveries` in `show --json`.
pub fn delivery_json(d: &Delivery) -> serde_json::Value {
    let time = |t: SystemTime| humantime::format_rfc3339_micros(t).to_string();
    json!({
        "id": d.id,
        "route": d.route,
        "lane": d.lane,
        "state": d.state_name,
        "attempts": d.attempts,
        "last_error": d.last_error,
        "response": d.response,
        "queued_at": time(d.queued_at),
        "next_attempt_at": time(d.next_attempt_at),
        "first_attempt_at": d.first_attempt_at.map(time),
        "last_attempt_at": d.last_attempt_at.map(time),
        "done_at": d.done_at.map(time),
        "resend_of": d.resend_of,
    })
}

/// One route of `status --json`. The first eight fields are the contract of issue 15.
pub fn route_status_json(
    status: &RouteStatus,
    route: Option<&RouteConfig>,
    now: SystemTime,
) -> serde_json::Value {
    json!({
        "name": status.name,
        "pending": status.pending,
        "in_flight": status.in_flight,
        "delivered": status.delivered,
        "parked": status.parked,
        "held_lanes": status.held_lanes,
        "oldest_pending_seconds": status.oldest_pending_seconds(now),
        "last_error": status.last_error,
        "skipped": status.skipped,
        "removed": route.is_none(),
        "to": route.map(|route| route.to.to_string()),
    })
}

/// Why message `id` had nothing in state `wanted` on `route`, for the error line.
pub fn why_not(
    reader: &dyn DeliveryLookup,
    route: &str,
    id: i64,
    wanted: &str,
) -> Result<String, StoreError> {
    if !reader.has_message(id)? {
        return Ok(format!("no message with id {id}"));
    }
    let states: Vec<String> = reader
        .deliveries_of(id)?
        .into_iter()
        .filter(|delivery| delivery.route == route)
        .map(|delivery| match delivery.state {
            Some(DeliveryState::InFlight) => {
                "in_flight (an attempt is under way; try again when it ends)".to_owned()
            }
            _ => delivery.state_name,
        })
        .collect();
    Ok(if states.is_empty() {
        format!("message {id} has no delivery on route {}", printable(route))
    } else {
        format!("message {id} has no {wanted} delivery on route {}: {}", printable(route), states.join(", "))
    })
}

/// What [`why_not`] reads: a message's existence and its delivery rows, on either store.
pub trait DeliveryLookup {
    /// Whether a message with this id is stored.
    fn has_message(&self, id: i64) -> Result<bool, StoreError>;
    /// Every delivery row of message `id`, by route then queue order.
    fn deliveries_of(&self, id: i64) -> Result<Vec<Delivery>, StoreError>;
}

impl DeliveryLookup for Reader {
    fn has_message(&self, id: i64) -> Result<bool, StoreError> {
        Ok(self.message(id)?.is_some())
    }

    fn deliveries_of(&self, id: i64) -> Result<Vec<Delivery>, StoreError> {
        Reader::deliveries_of(self, id)
    }
}

impl DeliveryLookup for StoreReader {
    fn has_message(&self, id: i64) -> Result<bool, StoreError> {
        Ok(self.message(id)?.is_some())
    }

    fn deliveries_of(&self, id: i64) -> Result<Vec<Delivery>, StoreError> {
        StoreReader::deliveries_of(self, id)
    }
}

/// `1,2,3`, or the first [`AUDIT_IDS`] then `… (N in all)`.
pub fn message_ids(ids: impl Iterator<Item = i64>) -> String {
    let ids: Vec<i64> = ids.collect();
    let mut text: Vec<String> = ids.iter().take(AUDIT_IDS).map(i64::to_string).collect();
    if ids.len() > AUDIT_IDS {
        text.push(format!("… ({} in all)", ids.len()));
    }
    text.join(",")
}

/// What route `route` matches and how it lanes, for the delivery actions.
pub fn route_rule(route: &RouteConfig) -> RouteRule {
    RouteRule {
        name: route.name.clone(),
        listeners: route.listeners.clone(),
        message_types: route.message_types.clone(),
        order: route.order,
    }
}

/// Every route to show, with its configuration: those of `configured`, in order, then the
/// routes that only the store's rows still name (removed from the configuration: `None`).
pub fn route_statuses<'c>(
    configured: &'c [RouteConfig],
    reader: &StoreReader,
) -> Result<Vec<(RouteStatus, Option<&'c RouteConfig>)>, StoreError> {
    let mut routes = Vec::new();
    for route in configured {
        routes.push((reader.route_status(&route.name)?, Some(route)));
    }
    for name in reader.delivery_routes()? {
        if !configured.iter().any(|route| route.name == name) {
            routes.push((reader.route_status(&name)?, None));
        }
    }
    Ok(routes)
}

/// One parked delivery (`routes parked --json`, `GET /api/v1/routes/{route}/parked`).
pub fn parked_json(p: &ParkedDelivery) -> serde_json::Value {
    let time = |t: Option<SystemTime>| t.map(|t| humantime::format_rfc3339_seconds(t).to_string());
    json!({
        "delivery_id": p.id,
        "message_id": p.message_id,
        "lane": p.lane,
        "control_id": p.control_id,
        "message_type": p.message_type,
        "attempts": p.attempts,
        "parked_at": time(p.parked_at),
        "last_error": p.last_error,
        "response": p.response,
    })
}

/// How a retry selected its rows, for the audit line (`lane`, not the key: it may name a
/// patient).
pub fn selection(which: &Release) -> &'static str {
    match which {
        Release::Message(_) => "message",
        Release::Lane(_) => "lane",
        Release::AllParked => "all_parked",
    }
}

/// Releases parked deliveries of `route` (`routes retry`, the console's retry and release):
/// they go out again at once. One audit line (event `route_retry`), also when it fails.
pub fn retry(
    store: StoreAt<'_>,
    route: &str,
    which: &Release,
    actor: &Actor,
) -> Result<Vec<Changed>, StoreError> {
    let result =
        StoreActions::open(store).and_then(|mut actions| actions.retry(route, which, SystemTime::now()));
    audit_line("route_retry", "retry", route, selection(which), &result, actor);
    result
}

/// Gives up on message `message` on `route` (`routes skip`, the console's skip): its parked
/// or pending delivery becomes skipped. One audit line (event `route_skip`).
pub fn skip(
    store: StoreAt<'_>,
    route: &str,
    message: i64,
    actor: &Actor,
) -> Result<Vec<Changed>, StoreError> {
    let result =
        StoreActions::open(store).and_then(|mut actions| actions.skip(route, message, SystemTime::now()));
    audit_line("route_skip", "skip", route, "message", &result, actor);
    result
}

/// Queues messages `ids` again on `route` (`messages resend ID…`, the console's resend),
/// each linked to its earlier delivery there. One audit line (event `message_resend`).
pub fn resend(
    store: StoreAt<'_>,
    rule: &RouteRule,
    ids: &[i64],
    actor: &Actor,
) -> Result<Vec<Queued>, ActionError> {
    let result = StoreActions::open(store)
        .map_err(ActionError::from)
        .and_then(|mut actions| actions.resend(rule, ids, false, SystemTime::now()));
    let route = rule.name.as_str();
    let addr = actor.addr_text();
    match &result {
        Ok(queued) => tracing::info!(target: "audit", event = "message_resend", action = "resend", route,
            count = queued.len() as u64, message_ids = %message_ids(queued.iter().map(|q| q.message_id)),
            user = %actor.user, uid = actor.uid, sudo_user = actor.sudo_user.as_deref(),
            addr = addr.as_deref(), via = actor.via, "stored messages queued again"),
        Err(e) => tracing::warn!(target: "audit", event = "message_resend", action = "resend", route,
            count = 0u64, requested = %message_ids(ids.iter().copied()),
            user = %actor.user, uid = actor.uid, sudo_user = actor.sudo_user.as_deref(),
            addr = addr.as_deref(), via = actor.via, error = %e, "resend failed"),
    }
    result
}

/// The audit line of a retry or skip (event `route_retry` / `route_skip`): the route, how
/// the rows were selected, the count and message ids changed, who; on failure the error.
fn audit_line(
    event: &str,
    action: &str,
    route: &str,
    selection: &str,
    result: &Result<Vec<Changed>, StoreError>,
    actor: &Actor,
) {
    let changed = result.as_deref().unwrap_or_default();
    let ids = message_ids(changed.iter().map(|row| row.message_id));
    let count = changed.len() as u64;
    let addr = actor.addr_text();
    match result {
        Ok(_) => tracing::info!(target: "audit", event, action, route, selection, count, message_ids = %ids,
            user = %actor.user, uid = actor.uid, sudo_user = actor.sudo_user.as_deref(),
            addr = addr.as_deref(), via = actor.via, "delivery queue changed by an operator"),
        Err(e) => tracing::warn!(target: "audit", event, action, route, selection, count, message_ids = %ids,
            user = %actor.user, uid = actor.uid, sudo_user = actor.sudo_user.as_deref(),
            addr = addr.as_deref(), via = actor.via, error = %e, "delivery queue change failed"),
    }
}

/// Replaces control characters (except tab) with visible stand-ins: C0 controls by their
/// Unicode control pictures (ESC → ␛), DEL by ␡, C1 controls by U+FFFD.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\t' => c,
            '\u{0}'..='\u{1F}' => char::from_u32(0x2400 + c as u32).unwrap_or('\u{FFFD}'),
            '\u{7F}' => '\u{2421}',
            '\u{80}'..='\u{9F}' => '\u{FFFD}',
            c => c,
        })
        .collect()
}

/// `--sender APP^FAC`: MSH-3 and, when given, MSH-4.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sender {
    /// MSH-3, as received.
    pub application: String,
    /// MSH-4, as received; `None` matches any.
    pub facility: Option<String>,
}

/// Splits `APP^FAC` at the first `^`.
pub fn parse_sender(text: &str) -> Result<Sender, String> {
    let (application, facility) = match text.split_once('^') {
        Some((application, facility)) => (application, Some(facility.to_owned())),
        None => (text, None),
    };
    if application.is_empty() {
        return Err("expected APP^FAC (MSH-3^MSH-4) or APP".into());
    }
    Ok(Sender { application: application.to_owned(), facility })
}

/// Parses `--since`: an RFC 3339 time (`2026-11-28T09:00:00Z`, also with a space, without
/// `Z` meaning UTC, or a bare date) or an age before now (`90m`, `2h`, `7d`).
pub fn parse_since(text: &str) -> Result<SystemTime, String> {
    let text = text.trim();
    if let Ok(time) = humantime::parse_rfc3339_weak(text) {
        return Ok(time);
    }
    if let Ok(time) = humantime::parse_rfc3339_weak(&format!("{text}T00:00:00")) {
        return Ok(time);
    }
    match humantime::parse_duration(text) {
        Ok(age) => SystemTime::now().checked_sub(age).ok_or_else(|| format!("{text:?} reaches before 1970")),
        Err(_) => Err(format!(
            "{text:?} is neither a time (2026-11-28T09:00:00Z, 2026-11-28) nor an age (90m, 2h, 7d)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn audit_ids_are_capped() {
        assert_eq!(message_ids([3, 1, 2].into_iter()), "3,1,2");
        let many = message_ids(1..=60);
        assert!(many.starts_with("1,2,3,") && many.ends_with(",50,… (60 in all)"), "{many}");
    }

    #[test]
    fn printable_neutralises_terminal_escapes() {
        assert_eq!(printable("a\u{1b}[31mb\tc\u{7f}\u{9b}"), "a\u{241b}[31mb\tc\u{2421}\u{fffd}");
    }

    #[test]
    fn since_accepts_times_dates_and_ages() {
        let t = parse_since("2026-11-28T09:00:00Z").unwrap();
        assert_eq!(humantime::format_rfc3339_seconds(t).to_string(), "2026-11-28T09:00:00Z");
        let d = parse_since("2026-11-28").unwrap();
        assert_eq!(humantime::format_rfc3339_seconds(d).to_string(), "2026-11-28T00:00:00Z");
        let age = parse_since("2h").unwrap();
        let expected = SystemTime::now() - Duration::from_secs(7200);
        assert!(age <= expected && age > expected - Duration::from_secs(60));
        assert!(parse_since("yesterday-ish").is_err());
    }

    #[test]
    fn sender_splits_at_the_first_caret() {
        let sender = |application: &str, facility: Option<&str>| Sender {
            application: application.into(),
            facility: facility.map(Into::into),
        };
        assert_eq!(parse_sender("APP^FAC"), Ok(sender("APP", Some("FAC"))));
        assert_eq!(parse_sender("APP"), Ok(sender("APP", None)));
        assert_eq!(parse_sender("APP^FAC^X"), Ok(sender("APP", Some("FAC^X"))));
        assert!(parse_sender("^FAC").is_err());
    }
}
