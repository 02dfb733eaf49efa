//! The console's reads and actions: one function each, called by both its pages and its
//! `/api/v1/` handlers (so a page and the API cannot disagree), built on the same store
//! queries and delivery actions as the CLI ([`crate::ops`], [`Reader`]).
//!
//! Everything here is blocking (SQLite): handlers run it on the blocking pool. It must not
//! render HTML or know HTTP beyond the status a failure maps to; audit events are written
//! by [`super::audit`] and by the shared actions.

use std::time::{Duration, SystemTime};

use serde::Deserialize;
use serde_json::json;

use super::{Context, Principal};
use crate::config::{RouteConfig, StoreConfig};
use crate::listener::{ListenerView, ReloadReport};
use crate::ops::{self, Actor};
use crate::store::deliveries::{Changed, Delivery, Queued, Release, RouteStatus};
use crate::store::{
    Filter, ListenerTraffic, SenderSeen, Status, StoreAt, StoreError, StoreReader, StoredMessage,
};

/// Messages on a page when the request does not say.
pub const PAGE_SIZE: u64 = 50;
/// Most messages on one page.
pub const MAX_PAGE_SIZE: u64 = 500;
/// The dashboard's window for traffic and senders.
pub const DASHBOARD_WINDOW: Duration = Duration::from_secs(3600);
/// Most senders the dashboard lists.
pub const DASHBOARD_SENDERS: u64 = 50;

/// Why a read or an action did not happen, and the HTTP status that says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// 503: the server has not finished starting.
    NotStarted,
    /// 400: a parameter that does not parse.
    BadRequest(String),
    /// 403: the caller's role does not allow it.
    Forbidden,
    /// 404: no such message or route.
    NotFound(String),
    /// 409: the action applied to nothing (e.g. a retry of a message with no parked
    /// delivery); says what the message's deliveries are instead.
    Conflict(String),
    /// 500: the store could not be read or written.
    Store(String),
}

impl Failure {
    /// The HTTP status code.
    pub fn status(&self) -> u16 {
        match self {
            Failure::NotStarted => 503,
            Failure::BadRequest(_) => 400,
            Failure::Forbidden => 403,
            Failure::NotFound(_) => 404,
            Failure::Conflict(_) => 409,
            Failure::Store(_) => 500,
        }
    }

    /// What to tell the caller.
    pub fn text(&self) -> String {
        match self {
            Failure::NotStarted => "the server is starting; try again in a moment".into(),
            Failure::Forbidden => "your role does not allow this (operator only)".into(),
            Failure::BadRequest(why)
            | Failure::NotFound(why)
            | Failure::Conflict(why)
            | Failure::Store(why) => why.clone(),
        }
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Failure {
        Failure::Store(e.to_string())
    }
}

/// The message search's parameters, from a query string (the page's form and the API
/// alike). Empty values are absent (a form sends every field).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct SearchParams {
    /// PID-3 CX.1 (first repetition).
    pub patient: Option<String>,
    /// PV1-19.
    pub visit: Option<String>,
    /// Placer or filler order number.
    pub order: Option<String>,
    /// MSH-10.
    pub control_id: Option<String>,
    /// MSH-9 `TYPE^TRIGGER`, a glob with `*?[`.
    #[serde(rename = "type")]
    pub message_type: Option<String>,
    /// `APP^FAC` (MSH-3, MSH-4) or `APP`.
    pub sender: Option<String>,
    /// The listener's name.
    pub listener: Option<String>,
    /// accepted, rejected or error.
    pub status: Option<String>,
    /// RFC 3339, a date, or an age (`2h`).
    pub since: Option<String>,
    /// Same forms as `since`.
    pub until: Option<String>,
    /// Keyset paging: the messages listed after this message id (the last of the previous
    /// page).
    pub before: Option<String>,
    /// Messages per page (at most [`MAX_PAGE_SIZE`]).
    pub limit: Option<String>,
}

/// A parsed search: the store filter (no limit), where the page starts, its size.
#[derive(Debug, Clone)]
pub struct Search {
    /// The conditions.
    pub filter: Filter,
    /// Start after this message id.
    pub before: Option<i64>,
    /// Page size.
    pub limit: u64,
}

impl Search {
    /// Whether the search names patient data (patient, visit or order): it is then an audit
    /// event.
    pub fn names_patient(&self) -> bool {
        self.filter.patient_id.is_some() || self.filter.visit_number.is_some() || self.filter.order.is_some()
    }
}

impl SearchParams {
    /// The search these parameters ask for, or which one does not parse.
    pub fn parse(&self) -> Result<Search, Failure> {
        fn given(value: &Option<String>) -> Option<&str> {
            value.as_deref().map(str::trim).filter(|v| !v.is_empty())
        }
        let text = |value: &Option<String>| given(value).map(str::to_owned);
        let bad = |name: &str, why: String| Failure::BadRequest(format!("{name}: {why}"));
        let time = |name: &str, value: &Option<String>| {
            given(value).map(ops::parse_since).transpose().map_err(|why| bad(name, why))
        };
        let (sending_application, sending_facility) = match given(&self.sender) {
            Some(sender) => {
                let sender = ops::parse_sender(sender).map_err(|why| bad("sender", why))?;
                (Some(sender.application), sender.facility)
            }
            None => (None, None),
        };
        let status = given(&self.status)
            .map(|s| s.parse::<Status>())
            .transpose()
            .map_err(|e| bad("status", e.to_string()))?;
        let before = given(&self.before)
            .map(|b| b.parse::<i64>())
            .transpose()
            .map_err(|_| bad("before", "expected a message id".into()))?;
        let limit = given(&self.limit)
            .map(|l| l.parse::<u64>())
            .transpose()
            .map_err(|_| bad("limit", "expected a number".into()))?
            .unwrap_or(PAGE_SIZE)
            .clamp(1, MAX_PAGE_SIZE);
        let filter = Filter {
            listener: text(&self.listener),
            sending_application,
            sending_facility,
            message_type: text(&self.message_type),
            patient_id: text(&self.patient),
            visit_number: text(&self.visit),
            order: text(&self.order),
            since: time("since", &self.since)?,
            until: time("until", &self.until)?,
            control_id: text(&self.control_id),
            status,
            limit: None,
            oldest_first: false,
            before: None,
        };
        Ok(Search { filter, before, limit })
    }
}

/// One page of a search, newest first.
#[derive(Debug, Clone)]
pub struct Page {
    /// The messages (without their bytes).
    pub messages: Vec<StoredMessage>,
    /// The `before` of the next page, when there are more.
    pub next_before: Option<i64>,
}

/// Runs `search` on the store: one indexed query for the page (and one lookup of where the
/// previous page ended).
pub fn search(store: &StoreConfig, search: &Search) -> Result<Page, Failure> {
    let reader = StoreReader::open(store)?;
    let before = match search.before {
        Some(id) => match reader.position(id)? {
            Some(position) => Some(position),
            // Deleted by retention since: nothing sorts after it that we can name.
            None => return Err(Failure::NotFound(format!("no message with id {id} to page from"))),
        },
        None => None,
    };
    // One more than the page: whether there is a next one.
    let filter = Filter { limit: Some(search.limit + 1), before, ..search.filter.clone() };
    let mut messages = reader.list(&filter)?;
    let next_before = if messages.len() as u64 > search.limit {
        messages.truncate(search.limit as usize);
        messages.last().map(|m| m.id)
    } else {
        None
    };
    Ok(Page { messages, next_before })
}

/// `GET /api/v1/messages`: `{"messages": [...], "next_before": ID | null}`, each message as
/// `hl7d messages list --json` prints it.
pub fn page_json(page: &Page) -> serde_json::Value {
    json!({
        "messages": page.messages.iter().map(ops::message_json).collect::<Vec<_>>(),
        "next_before": page.next_before,
    })
}

/// One message with everything its detail shows.
#[derive(Debug, Clone)]
pub struct Detail {
    /// The message, with its bytes.
    pub message: StoredMessage,
    /// Its deliveries, route by route.
    pub deliveries: Vec<Delivery>,
    /// The bytes decoded from the character set the message arrived in.
    pub text: String,
}

/// Message `id` with its deliveries; `NotFound` when there is none.
pub fn detail(store: &StoreConfig, id: i64) -> Result<Detail, Failure> {
    let reader = StoreReader::open(store)?;
    let Some(message) = reader.message(id)? else {
        return Err(Failure::NotFound(format!("no message with id {id}")));
    };
    let deliveries = reader.deliveries_of(id)?;
    let bytes = message.raw.as_deref().unwrap_or_default();
    let text = match message.charset() {
        Some(charset) => charset.decode(bytes).into_owned(),
        // Written by a newer hl7d with a character set this build does not know.
        None => String::from_utf8_lossy(bytes).into_owned(),
    };
    Ok(Detail { message, deliveries, text })
}

/// `GET /api/v1/messages/{id}`: `hl7d messages show --json`'s object (metadata, key fields,
/// deliveries), the ACK as stored, and the content: `segments` (text, one per segment).
pub fn detail_json(detail: &Detail) -> serde_json::Value {
    let m = &detail.message;
    let mut object = ops::message_json(m);
    object["deliveries"] = detail.deliveries.iter().map(ops::delivery_json).collect();
    object["ack"] = json!({ "code": m.ack_code, "text": m.reason, "error_code": m.error_code });
    object["segments"] =
        detail.text.split(['\r', '\n']).filter(|s| !s.is_empty()).map(serde_json::Value::from).collect();
    object
}

/// The dashboard's figures.
#[derive(Debug, Clone)]
pub struct Dashboard {
    /// Each running listener, with its stored traffic of the last hour.
    pub listeners: Vec<(ListenerView, ListenerTraffic)>,
    /// Senders seen in the last hour, the most recent first.
    pub senders: Vec<SenderSeen>,
    /// Routes of the configuration, then removed ones with rows left.
    pub routes: Vec<(RouteStatus, Option<RouteConfig>)>,
    /// Bytes the store's files take (database and WAL).
    pub store_bytes: u64,
    /// When the figures were read.
    pub at: SystemTime,
}

/// Reads the dashboard's figures.
pub fn dashboard(context: &Context) -> Result<Dashboard, Failure> {
    let reader = StoreReader::open(&context.store)?;
    let at = SystemTime::now();
    let since = at - DASHBOARD_WINDOW;
    let traffic = reader.traffic_since(since)?;
    let listeners = context
        .reloader
        .listener_views()
        .into_iter()
        .map(|view| {
            let seen = traffic.iter().find(|t| t.listener == view.name).cloned();
            let seen =
                seen.unwrap_or_else(|| ListenerTraffic { listener: view.name.clone(), ..Default::default() });
            (view, seen)
        })
        .collect();
    let senders = reader.senders_since(since, DASHBOARD_SENDERS)?;
    let config = context.config.load();
    let routes = ops::route_statuses(&config.routes, &reader)?
        .into_iter()
        .map(|(status, route)| (status, route.cloned()))
        .collect();
    let store_bytes = reader.store_bytes()?;
    Ok(Dashboard { listeners, senders, routes, store_bytes, at })
}

/// `GET /api/v1/dashboard`.
pub fn dashboard_json(d: &Dashboard) -> serde_json::Value {
    let time = |t: SystemTime| humantime::format_rfc3339_seconds(t).to_string();
    let unix = |secs: i64| time(SystemTime::UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64));
    json!({
        "at": time(d.at),
        "window_seconds": DASHBOARD_WINDOW.as_secs(),
        "listeners": d.listeners.iter().map(|(view, traffic)| json!({
            "name": view.name,
            "listen": view.addr.to_string(),
            "tls": view.tls,
            "mutual_tls": view.mutual_tls,
            "open_connections": view.open_connections,
            "accepted_last_hour": traffic.accepted,
            "refused_last_hour": traffic.refused,
            "last_message_at": traffic.last_at.map(time),
            "server_cert_not_after": view.server_not_after.map(unix),
            "clients_seen": view.clients_seen.iter().map(|(thumbprint, not_after)| json!({
                "sha256": thumbprint, "not_after": unix(*not_after),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "senders": d.senders.iter().map(|s| json!({
            "listener": s.listener,
            "sending_application": s.sending_application,
            "sending_facility": s.sending_facility,
            "client_thumbprint": s.client_thumbprint,
            "messages_last_hour": s.messages,
            "last_message_at": time(s.last_at),
        })).collect::<Vec<_>>(),
        "routes": d.routes.iter().map(|(status, route)| ops::route_status_json(status, route.as_ref(), d.at)).collect::<Vec<_>>(),
        "store_bytes": d.store_bytes,
    })
}

/// `GET /api/v1/routes`: `hl7d routes status --json`'s array.
pub fn routes_json(context: &Context) -> Result<serde_json::Value, Failure> {
    let reader = StoreReader::open(&context.store)?;
    let config = context.config.load();
    let now = SystemTime::now();
    let routes = ops::route_statuses(&config.routes, &reader)?;
    Ok(routes.iter().map(|(status, route)| ops::route_status_json(status, *route, now)).collect())
}

/// The parked deliveries of `route` (`hl7d routes parked`).
pub fn parked(
    context: &Context,
    route: &str,
) -> Result<Vec<crate::store::deliveries::ParkedDelivery>, Failure> {
    let reader = StoreReader::open(&context.store)?;
    known_route(context, &reader, route)?;
    Ok(reader.parked(route)?)
}

/// A delivery action on a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionKind {
    /// Send parked deliveries again (one message, a lane, or all).
    Retry,
    /// Give up on one message on the route.
    Skip,
    /// Queue stored messages again on the route.
    Resend,
    /// Release a held lane: retry every parked delivery in it.
    Release,
}

impl ActionKind {
    /// The name in URLs, forms and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Retry => "retry",
            ActionKind::Skip => "skip",
            ActionKind::Resend => "resend",
            ActionKind::Release => "release",
        }
    }

    /// The action called `name`.
    pub fn from_name(name: &str) -> Option<ActionKind> {
        [ActionKind::Retry, ActionKind::Skip, ActionKind::Resend, ActionKind::Release]
            .into_iter()
            .find(|kind| kind.as_str() == name)
    }
}

/// What an action applies to: JSON of the API, or the fields of a page's form. Like the
/// CLI's `--message`, `--lane`, `--all-parked` (and `resend ID…`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Target {
    /// One message.
    pub message: Option<i64>,
    /// Several messages (resend).
    pub messages: Option<Vec<i64>>,
    /// A lane key (as `routes parked` shows it).
    pub lane: Option<String>,
    /// Every parked delivery of the route (retry).
    pub all_parked: Option<bool>,
}

/// What an action did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Deliveries changed state (retry, skip, release).
    Changed(Vec<Changed>),
    /// New deliveries queued (resend).
    Queued(Vec<Queued>),
}

impl Outcome {
    /// `{"action", "route", "count", "deliveries": [...]}`.
    pub fn json(&self, kind: ActionKind, route: &str) -> serde_json::Value {
        let deliveries: Vec<serde_json::Value> = match self {
            Outcome::Changed(rows) => rows
                .iter()
                .map(|row| json!({ "delivery_id": row.id, "message_id": row.message_id, "was": row.was.as_str() }))
                .collect(),
            Outcome::Queued(rows) => rows
                .iter()
                .map(|row| json!({ "delivery_id": row.id, "message_id": row.message_id, "resend_of": row.resend_of }))
                .collect(),
        };
        json!({ "action": kind.as_str(), "route": route, "count": deliveries.len(), "deliveries": deliveries })
    }

    /// One sentence for the page.
    pub fn text(&self, kind: ActionKind, route: &str) -> String {
        match (self, kind) {
            (Outcome::Changed(rows), ActionKind::Skip) => {
                format!("skipped {} delivery(ies) on route {route}", rows.len())
            }
            (Outcome::Changed(rows), _) if rows.is_empty() => format!("nothing parked on route {route}"),
            (Outcome::Changed(rows), _) => {
                format!(
                    "released {} parked delivery(ies) on route {route}: they are sent again now",
                    rows.len()
                )
            }
            (Outcome::Queued(rows), _) => format!("queued {} resend(s) on route {route}", rows.len()),
        }
    }
}

/// The audit trail's name for the caller.
pub fn actor(principal: &Principal) -> Actor {
    Actor {
        user: principal.user.clone(),
        uid: None,
        sudo_user: None,
        addr: Some(principal.addr),
        via: Some(match principal.credential {
            super::Credential::Session => "session",
            super::Credential::Token { .. } => "token",
        }),
    }
}

/// Runs `kind` on `route` for `target`, as `principal` (who must be allowed to deliver:
/// the caller checked). The shared actions write the audit line.
pub fn act(
    context: &Context,
    principal: &Principal,
    route: &str,
    kind: ActionKind,
    target: &Target,
) -> Result<Outcome, Failure> {
    let store = &context.store;
    let reader = StoreReader::open(store)?;
    known_route(context, &reader, route)?;
    let actor = actor(principal);
    let bad = |why: &str| Failure::BadRequest(format!("{}: {why}", kind.as_str()));
    match kind {
        ActionKind::Retry | ActionKind::Release => {
            let which = match (kind, target.message, &target.lane, target.all_parked.unwrap_or(false)) {
                (ActionKind::Retry, Some(id), None, false) => Release::Message(id),
                (_, None, Some(lane), false) => Release::Lane(lane.clone()),
                (ActionKind::Retry, None, None, true) => Release::AllParked,
                (ActionKind::Release, ..) => return Err(bad("give the lane")),
                _ => return Err(bad("give exactly one of message, lane, all_parked")),
            };
            let released = ops::retry(StoreAt::of(store), route, &which, &actor)?;
            if released.is_empty() {
                return match which {
                    Release::AllParked => Ok(Outcome::Changed(released)),
                    Release::Lane(_) => {
                        Err(Failure::Conflict(format!("no parked delivery in that lane on route {route}")))
                    }
                    Release::Message(id) => {
                        Err(Failure::Conflict(ops::why_not(&reader, route, id, "parked")?))
                    }
                };
            }
            Ok(Outcome::Changed(released))
        }
        ActionKind::Skip => {
            let Some(id) = target.message else { return Err(bad("give the message")) };
            let skipped = ops::skip(StoreAt::of(store), route, id, &actor)?;
            if skipped.is_empty() {
                return Err(Failure::Conflict(ops::why_not(&reader, route, id, "parked or pending")?));
            }
            Ok(Outcome::Changed(skipped))
        }
        ActionKind::Resend => {
            let ids: Vec<i64> = match (&target.messages, target.message) {
                (Some(ids), None) if !ids.is_empty() => ids.clone(),
                (None, Some(id)) => vec![id],
                _ => return Err(bad("give the message (or messages)")),
            };
            let config = context.config.load();
            let Some(route_config) = config.route(route) else {
                return Err(Failure::NotFound(format!(
                    "route {route} is not in the configuration: a resend needs its order"
                )));
            };
            let rule = ops::route_rule(route_config);
            match ops::resend(StoreAt::of(store), &rule, &ids, &actor) {
                Ok(queued) => Ok(Outcome::Queued(queued)),
                Err(crate::store::deliveries::ActionError::Store(e)) => Err(e.into()),
                Err(e) => Err(Failure::Conflict(e.to_string())),
            }
        }
    }
}

/// A route the configuration has or the store's rows name; `NotFound` otherwise.
fn known_route(context: &Context, reader: &StoreReader, route: &str) -> Result<(), Failure> {
    if context.config.load().route(route).is_some() || reader.route_has_deliveries(route)? {
        Ok(())
    } else {
        Err(Failure::NotFound(format!("no route {route}")))
    }
}

/// Runs the reload (the same as SIGHUP) as `principal`; one audit line says who asked.
pub async fn reload(context: &Context, principal: &Principal) -> ReloadReport {
    tracing::info!(target: "audit", event = "reload_requested", source = "console", user = %principal.user,
        addr = %principal.addr, "console: reloading the configuration");
    // Its own task: a client that hangs up does not stop a reload half-way.
    match tokio::spawn((context.reload)()).await {
        Ok(report) => report,
        Err(e) => ReloadReport::refused(format!("the reload failed: {e}")),
    }
}
