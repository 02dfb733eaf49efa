//! The console's HTML pages, rendered on the server with maud (every interpolation is
//! escaped): Dashboard (`/`), Messages (`/messages`, `/messages/{id}`), Routes (`/routes`,
//! `/routes/{route}`), and the operator's actions as a two-step form (`POST
//! /routes/{route}/{action}` shows what will happen and asks to confirm; the confirmed
//! form does it and shows the outcome; `POST /actions/reload` likewise). No script: the
//! dashboard refreshes itself with a meta refresh.
//!
//! Each page calls the same [`super::data`] function as its `/api/v1/` twin. Action buttons
//! are rendered only for a caller who may use them, and the handlers check again (403).
//! Every form that posts carries the session's CSRF token as the hidden field
//! [`CSRF_FIELD`]; the search form uses GET and carries none (a token in a URL would end up
//! in history and logs, and a search changes nothing).

use std::time::{Duration, Instant, SystemTime};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use maud::{html, Markup, DOCTYPE};
use serde::Deserialize;

use super::assets::STYLESHEET;
use super::data::{self, ActionKind, Failure, Page, SearchParams, Target};
use super::respond::blocking;
use super::{audit, detail, Action, Principal, Slot, CSRF_FIELD};
use crate::ops;
use crate::store::queue::DeliveryState;

/// How often the dashboard reloads itself.
pub const DASHBOARD_REFRESH: Duration = Duration::from_secs(15);

/// The page routes.
pub(super) fn router() -> Router<Slot> {
    Router::new()
        .route("/", get(dashboard))
        .route("/messages", get(messages))
        .route("/messages/{id}", get(message))
        .route("/routes", get(routes))
        .route("/routes/{route}", get(route))
        .route("/routes/{route}/{action}", post(act))
        .route("/actions/reload", post(reload))
}

/// Which navigation entry a page belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Nav {
    Dashboard,
    Messages,
    Routes,
}

/// The frame of every page: navigation, the user's name and role, the logout form.
fn layout(principal: &Principal, title: &str, nav: Nav, refresh: Option<Duration>, body: Markup) -> Markup {
    let current = |item: Nav| if item == nav { Some("page") } else { None };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if let Some(every) = refresh { meta http-equiv="refresh" content=(every.as_secs()); }
                title { (title) " · hl7d" }
                link rel="stylesheet" href=(STYLESHEET);
            }
            body {
                header.top {
                    a.brand href="/" { "hl7d" }
                    nav aria-label="main" {
                        a href="/" aria-current=[current(Nav::Dashboard)] { "Dashboard" }
                        a href="/messages" aria-current=[current(Nav::Messages)] { "Messages" }
                        a href="/routes" aria-current=[current(Nav::Routes)] { "Routes" }
                    }
                    div.who {
                        span #signed-in { (principal.user) " (" (principal.role.as_str()) ")" }
                        form.inline method="post" action="/logout" {
                            (csrf(principal))
                            button #logout type="submit" { "Log out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// The hidden CSRF field of a form that posts.
fn csrf(principal: &Principal) -> Markup {
    html! { input type="hidden" name=(CSRF_FIELD) value=(principal.csrf.as_deref().unwrap_or("")); }
}

/// A state as a word (with a class that colours it: colour is never the only sign).
fn state(name: &str) -> Markup {
    html! { span class=(format!("state state-{name}")) { (name.replace('_', " ")) } }
}

fn time(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn age(seconds: u64) -> String {
    humantime::format_duration(Duration::from_secs(seconds)).to_string()
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A failure as a page (inside the frame), with its status.
fn failure_page(principal: &Principal, nav: Nav, failure: &Failure) -> Response {
    let status = StatusCode::from_u16(failure.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = html! {
        h1 { "Not done" }
        div.notice.bad role="alert" { p #failure { (failure.text()) } }
    };
    (status, layout(principal, "Error", nav, None, body)).into_response()
}

async fn dashboard(State(slot): State<Slot>, Extension(principal): Extension<Principal>) -> Response {
    let d = match blocking(&slot, data::dashboard).await {
        Ok(d) => d,
        Err(failure) => return failure_page(&principal, Nav::Dashboard, &failure),
    };
    let unix = |secs: i64| time(SystemTime::UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64));
    let body = html! {
        h1 { "Dashboard" }
        p.muted { "As of " (time(d.at)) " UTC; refreshes every " (DASHBOARD_REFRESH.as_secs()) " s. Store: " (bytes(d.store_bytes)) "." }
        h2 { "Listeners" }
        div.scroll {
            table.stack #listeners {
                thead { tr {
                    th { "Listener" } th { "Address" } th { "Transport" } th.num { "Open connections" }
                    th.num { "Accepted (1 h)" } th.num { "Refused (1 h)" } th { "Last message (UTC)" } th { "Server certificate expires" }
                } }
                tbody {
                    @for (view, traffic) in &d.listeners {
                        tr {
                            td data-label="Listener" { (view.name) }
                            td data-label="Address" .mono { (view.addr) }
                            td data-label="Transport" { @if view.mutual_tls { "TLS, client certificates (mTLS)" } @else if view.tls { "TLS" } @else { "plaintext" } }
                            td.num data-label="Open connections" { (view.open_connections) }
                            td.num data-label="Accepted (1 h)" { (traffic.accepted) }
                            td.num data-label="Refused (1 h)" { (traffic.refused) }
                            td data-label="Last message" { (traffic.last_at.map_or_else(|| "-".to_owned(), time)) }
                            td data-label="Certificate expires" { (view.server_not_after.map_or_else(|| "-".to_owned(), unix)) }
                        }
                    }
                }
            }
        }
        h2 { "Senders in the last hour" }
        @if d.senders.is_empty() { p.muted { "No message in the last hour." } } @else {
            div.scroll {
                table.stack #senders {
                    thead { tr { th { "Listener" } th { "Sender (MSH-3^MSH-4)" } th { "Client certificate (SHA-256)" } th.num { "Messages" } th { "Last message (UTC)" } } }
                    tbody {
                        @for s in &d.senders {
                            tr {
                                td data-label="Listener" { (s.listener) }
                                td data-label="Sender" .mono { (ops::printable(&s.sending_application)) "^" (ops::printable(&s.sending_facility)) }
                                td data-label="Client certificate" .mono { (s.client_thumbprint.as_deref().unwrap_or("-")) }
                                td.num data-label="Messages" { (s.messages) }
                                td data-label="Last message" { (time(s.last_at)) }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Routes" }
        (routes_table(&d.routes, d.at))
    };
    layout(&principal, "Dashboard", Nav::Dashboard, Some(DASHBOARD_REFRESH), body).into_response()
}

fn routes_table(
    routes: &[(crate::store::deliveries::RouteStatus, Option<crate::config::RouteConfig>)],
    now: SystemTime,
) -> Markup {
    html! {
        @if routes.is_empty() { p.muted { "No routes: the configuration has no [[route]] and the store no deliveries." } } @else {
            div.scroll {
                table.stack #routes {
                    thead { tr {
                        th { "Route" } th.num { "Pending" } th.num { "In flight" } th.num { "Parked" } th.num { "Held lanes" }
                        th.num { "Delivered" } th { "Oldest pending" } th { "Last error" }
                    } }
                    tbody {
                        @for (status, route) in routes {
                            tr {
                                td data-label="Route" {
                                    a href=(format!("/routes/{}", encode(&status.name))) { (status.name) }
                                    @if route.is_none() { " " span.muted { "(removed)" } }
                                }
                                td.num data-label="Pending" { (status.pending) }
                                td.num data-label="In flight" { (status.in_flight) }
                                td.num data-label="Parked" { @if status.parked > 0 { (state("parked")) " " } (status.parked) }
                                td.num data-label="Held lanes" { (status.held_lanes) }
                                td.num data-label="Delivered" { (status.delivered) }
                                td data-label="Oldest pending" { @if status.oldest_pending_queued_at.is_some() { (age(status.oldest_pending_seconds(now))) } @else { "-" } }
                                td data-label="Last error" { (status.last_error.as_deref().map_or_else(|| "-".to_owned(), ops::printable)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Percent-encodes a path segment or query value.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn messages(
    State(slot): State<Slot>,
    Extension(principal): Extension<Principal>,
    Query(params): Query<SearchParams>,
) -> Response {
    let started = Instant::now();
    let search = match params.parse() {
        Ok(search) => search,
        Err(failure) => return failure_page(&principal, Nav::Messages, &failure),
    };
    let who = principal.clone();
    let found = blocking(&slot, move |context| {
        let page = data::search(&context.store, &search)?;
        if search.names_patient() {
            audit::messages_searched(&who, &search, &page, "page");
        }
        Ok(page)
    })
    .await;
    let page = match found {
        Ok(page) => page,
        Err(failure) => return failure_page(&principal, Nav::Messages, &failure),
    };
    let body = html! {
        h1 { "Messages" }
        (search_form(&params))
        (results(&page, &params))
    };
    let response = layout(&principal, "Messages", Nav::Messages, None, body).into_response();
    super::api::with_server_timing(response, started)
}

fn search_form(p: &SearchParams) -> Markup {
    let v = |value: &Option<String>| value.clone().unwrap_or_default();
    let field = |name: &str, label: &str, value: String, hint: &str| {
        html! { label { (label) input type="search" name=(name) value=(value) placeholder=(hint); } }
    };
    html! {
        form.search #search method="get" action="/messages" role="search" {
            (field("patient", "Patient ID (PID-3)", v(&p.patient), "123456"))
            (field("visit", "Visit (PV1-19)", v(&p.visit), ""))
            (field("order", "Order number", v(&p.order), "placer or filler"))
            (field("control_id", "Control ID (MSH-10)", v(&p.control_id), ""))
            (field("type", "Type (MSH-9)", v(&p.message_type), "ADT^A0*"))
            (field("sender", "Sender (MSH-3^MSH-4)", v(&p.sender), "APP^FAC"))
            (field("listener", "Listener", v(&p.listener), ""))
            label { "Status"
                select name="status" {
                    @for (value, text) in [("", "any"), ("accepted", "accepted"), ("rejected", "rejected"), ("error", "error")] {
                        option value=(value) selected[p.status.as_deref().unwrap_or("") == value] { (text) }
                    }
                }
            }
            (field("since", "Since", v(&p.since), "2h, 2026-11-28"))
            (field("until", "Until", v(&p.until), "RFC 3339"))
            div.buttons { button type="submit" { "Search" } a href="/messages" { "Clear" } }
        }
    }
}

fn results(page: &Page, params: &SearchParams) -> Markup {
    let next = page.next_before.map(|before| {
        let mut query = String::new();
        let pairs = [
            ("patient", &params.patient),
            ("visit", &params.visit),
            ("order", &params.order),
            ("control_id", &params.control_id),
            ("type", &params.message_type),
            ("sender", &params.sender),
            ("listener", &params.listener),
            ("status", &params.status),
            ("since", &params.since),
            ("until", &params.until),
            ("limit", &params.limit),
        ];
        for (name, value) in pairs {
            if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
                query += &format!("{name}={}&", encode(value));
            }
        }
        format!("/messages?{query}before={before}")
    });
    html! {
        @if page.messages.is_empty() { p #no-results .muted { "No message matches." } } @else {
            div.scroll {
                table.stack #results {
                    thead { tr {
                        th.num { "ID" } th { "Received (UTC)" } th { "Listener" } th { "Type" } th { "Control ID" }
                        th { "Patient" } th { "Sender" } th { "ACK" } th { "Status" } th.num { "Duplicates" }
                    } }
                    tbody {
                        @for m in &page.messages {
                            tr {
                                td.num data-label="ID" { a href=(format!("/messages/{}", m.id)) { (m.id) } }
                                td data-label="Received" { (time(m.received_at)) }
                                td data-label="Listener" { (m.listener) }
                                td data-label="Type" .mono { (ops::printable(&m.message_type)) }
                                td data-label="Control ID" .mono { a href=(format!("/messages/{}", m.id)) { (ops::printable(&m.control_id)) } }
                                td data-label="Patient" .mono { (m.fields.patient_id.as_deref().map_or_else(|| "-".to_owned(), ops::printable)) }
                                td data-label="Sender" .mono { (ops::printable(&m.sending_application)) "^" (ops::printable(&m.sending_facility)) }
                                td data-label="ACK" { (m.ack_code.as_deref().unwrap_or("-")) }
                                td data-label="Status" { (state(m.status.as_str())) }
                                td.num data-label="Duplicates" { (m.duplicate_count) }
                            }
                        }
                    }
                }
            }
        }
        div.pager {
            span.muted { (page.messages.len()) " shown, newest first." }
            @if let Some(next) = next { a #next rel="next" href=(next) { "Older messages →" } }
        }
    }
}

async fn message(
    State(slot): State<Slot>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<i64>,
) -> Response {
    let who = principal.clone();
    let found = blocking(&slot, move |context| {
        let detail = data::detail(&context.store, id)?;
        audit::message_viewed(&who, id, "page");
        let routes: Vec<String> = context.config.load().routes.iter().map(|r| r.name.clone()).collect();
        Ok((detail, routes))
    })
    .await;
    let (d, routes) = match found {
        Ok(found) => found,
        Err(failure) => return failure_page(&principal, Nav::Messages, &failure),
    };
    let m = &d.message;
    let may_deliver = principal.may(Action::Deliver);
    let fact = |name: &str, value: String| html! { dt { (name) } dd { (ops::printable(&value)) } };
    let body = html! {
        h1 { "Message " (m.id) " " (state(m.status.as_str())) }
        div.panel {
            dl.facts #header {
                (fact("Received (UTC)", humantime::format_rfc3339_micros(m.received_at).to_string()))
                (fact("Listener", m.listener.clone()))
                (fact("Peer", m.peer.clone()))
                (fact("Client certificate", m.client_thumbprint.clone().unwrap_or_else(|| "-".into())))
                (fact("Type (MSH-9)", m.message_type.clone()))
                (fact("Control ID (MSH-10)", m.control_id.clone()))
                (fact("Sender (MSH-3^MSH-4)", format!("{}^{}", m.sending_application, m.sending_facility)))
                (fact("Processing ID (MSH-11)", m.processing_id.clone()))
                (fact("Version (MSH-12)", m.version.clone()))
                (fact("Charset", m.encoding.clone()))
                (fact("Size", format!("{} bytes", m.size)))
                (fact("Duplicates received", m.duplicate_count.to_string()))
                @if let Some(at) = m.last_duplicate_at { (fact("Last duplicate", time(at))) }
                @for (name, value) in ops::key_field_values(&m.fields) { (fact(name, value)) }
            }
        }
        h2 { "ACK sent" }
        dl.facts #ack {
            (fact("Code (MSA-1)", m.ack_code.clone().unwrap_or_else(|| "none sent".into())))
            @if let Some(reason) = &m.reason { (fact("Text (MSA-3)", reason.clone())) }
            @if let Some(code) = m.error_code { (fact("Error code (ERR-3)", code.to_string())) }
        }
        h2 { "Deliveries" }
        @if d.deliveries.is_empty() { p.muted { "No route took this message." } } @else {
            div.scroll {
                table.stack #deliveries {
                    thead { tr { th { "Route" } th { "State" } th.num { "Attempts" } th { "Last error" } th { "Downstream's response" } th { "Lane" } @if may_deliver { th { "Actions" } } } }
                    tbody {
                        @for delivery in &d.deliveries {
                            tr {
                                td data-label="Route" { a href=(format!("/routes/{}", encode(&delivery.route))) { (delivery.route) } }
                                td data-label="State" { (state(&delivery.state_name)) }
                                td.num data-label="Attempts" { (delivery.attempts) }
                                td data-label="Last error" { (delivery.last_error.as_deref().map_or_else(|| "-".to_owned(), ops::printable)) }
                                td data-label="Response" .mono { (delivery.response.as_deref().map_or_else(|| "-".to_owned(), ops::printable)) }
                                td data-label="Lane" .mono { (ops::printable(&delivery.lane)) }
                                @if may_deliver {
                                    td data-label="Actions" {
                                        @if delivery.state == Some(DeliveryState::Parked) {
                                            (action_button(&principal, &delivery.route, ActionKind::Retry, &[("message", m.id.to_string())], "Retry"))
                                            " "
                                            (action_button(&principal, &delivery.route, ActionKind::Release, &[("lane", delivery.lane.clone())], "Release lane"))
                                            " "
                                        }
                                        @if matches!(delivery.state, Some(DeliveryState::Parked | DeliveryState::Pending)) {
                                            (action_button(&principal, &delivery.route, ActionKind::Skip, &[("message", m.id.to_string())], "Skip"))
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if may_deliver && !routes.is_empty() && m.status == crate::store::Status::Accepted {
            h2 { "Resend" }
            form.inline #resend method="post" action="/routes/-/resend" {
                (csrf(&principal))
                input type="hidden" name="message" value=(m.id);
                label { "to route " select name="route" { @for r in &routes { option value=(r) { (r) } } } }
                " "
                button type="submit" { "Resend…" }
            }
        }
        h2 { "Segments" }
        (detail::segments_table(&d.text))
        h2 { "Raw" }
        p.muted.legend {
            span { "Delimiters in " b { "bold" } }
            span { "MSH-2 boxed" }
            span { "escape sequences highlighted and not interpreted" }
            span { "segment ends written as \\r" }
        }
        (detail::raw_view(&d.text))
    };
    layout(&principal, &format!("Message {}", m.id), Nav::Messages, None, body).into_response()
}

/// A form with one button that asks for an action (the next page asks to confirm).
fn action_button(
    principal: &Principal,
    route: &str,
    kind: ActionKind,
    fields: &[(&str, String)],
    label: &str,
) -> Markup {
    let danger = matches!(kind, ActionKind::Skip);
    html! {
        form.inline method="post" action=(format!("/routes/{}/{}", encode(route), kind.as_str())) {
            (csrf(principal))
            @for (name, value) in fields { input type="hidden" name=(name) value=(value); }
            button type="submit" class=[danger.then_some("danger")] data-action=(kind.as_str()) { (label) "…" }
        }
    }
}

async fn routes(State(slot): State<Slot>, Extension(principal): Extension<Principal>) -> Response {
    let found = blocking(&slot, |context| {
        let reader = crate::store::StoreReader::open(&context.store)?;
        let config = context.config.load();
        let routes = ops::route_statuses(&config.routes, &reader)?
            .into_iter()
            .map(|(status, route)| (status, route.cloned()))
            .collect::<Vec<_>>();
        Ok(routes)
    })
    .await;
    let routes = match found {
        Ok(routes) => routes,
        Err(failure) => return failure_page(&principal, Nav::Routes, &failure),
    };
    let body = html! {
        h1 { "Routes" }
        (routes_table(&routes, SystemTime::now()))
        @if principal.may(Action::Reload) {
            h2 { "Configuration" }
            form.inline method="post" action="/actions/reload" {
                (csrf(&principal))
                button type="submit" #reload { "Reload the configuration…" }
            }
        }
    };
    layout(&principal, "Routes", Nav::Routes, None, body).into_response()
}

async fn route(
    State(slot): State<Slot>,
    Extension(principal): Extension<Principal>,
    Path(route): Path<String>,
) -> Response {
    let name = route.clone();
    let parked = match blocking(&slot, move |context| data::parked(context, &name)).await {
        Ok(parked) => parked,
        Err(failure) => return failure_page(&principal, Nav::Routes, &failure),
    };
    let may_deliver = principal.may(Action::Deliver);
    let body = html! {
        h1 { "Route " (route) }
        h2 { "Parked deliveries" }
        @if parked.is_empty() { p.muted #no-parked { "Nothing parked: every lane moves." } } @else {
            @if may_deliver {
                p { (action_button(&principal, &route, ActionKind::Retry, &[("all_parked", "true".into())], "Retry every parked delivery")) }
            }
            div.scroll {
                table.stack #parked {
                    thead { tr { th.num { "Message" } th { "Control ID" } th { "Type" } th { "Lane" } th.num { "Attempts" } th { "Parked at (UTC)" } th { "Last error" } th { "Response" } @if may_deliver { th { "Actions" } } } }
                    tbody {
                        @for p in &parked {
                            tr {
                                td.num data-label="Message" { a href=(format!("/messages/{}", p.message_id)) { (p.message_id) } }
                                td data-label="Control ID" .mono { (ops::printable(&p.control_id)) }
                                td data-label="Type" .mono { (ops::printable(&p.message_type)) }
                                td data-label="Lane" .mono { (ops::printable(&p.lane)) }
                                td.num data-label="Attempts" { (p.attempts) }
                                td data-label="Parked at" { (p.parked_at.map_or_else(|| "-".to_owned(), time)) }
                                td data-label="Last error" { (p.last_error.as_deref().map_or_else(|| "-".to_owned(), ops::printable)) }
                                td data-label="Response" .mono { (p.response.as_deref().map_or_else(|| "-".to_owned(), ops::printable)) }
                                @if may_deliver {
                                    td data-label="Actions" {
                                        (action_button(&principal, &route, ActionKind::Retry, &[("message", p.message_id.to_string())], "Retry"))
                                        " "
                                        (action_button(&principal, &route, ActionKind::Release, &[("lane", p.lane.clone())], "Release lane"))
                                        " "
                                        (action_button(&principal, &route, ActionKind::Skip, &[("message", p.message_id.to_string())], "Skip"))
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    layout(&principal, &format!("Route {route}"), Nav::Routes, None, body).into_response()
}

/// The fields of an action's form (the CSRF token is the auth layer's to check).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ActionForm {
    message: Option<String>,
    lane: Option<String>,
    all_parked: Option<String>,
    /// The route chosen in the resend form (its URL names `-`).
    route: Option<String>,
    /// Present on the second step: do it.
    confirmed: Option<String>,
}

impl ActionForm {
    fn target(&self) -> Result<Target, Failure> {
        let message = self
            .message
            .as_deref()
            .filter(|m| !m.is_empty())
            .map(|m| m.parse::<i64>().map_err(|_| Failure::BadRequest("message: expected an id".into())))
            .transpose()?;
        Ok(Target {
            message,
            messages: None,
            lane: self.lane.clone().filter(|l| !l.is_empty()),
            all_parked: self.all_parked.as_deref().map(|v| v == "true"),
        })
    }
}

async fn act(
    State(slot): State<Slot>,
    Extension(principal): Extension<Principal>,
    Path((route, action)): Path<(String, String)>,
    Form(form): Form<ActionForm>,
) -> Response {
    let Some(kind) = ActionKind::from_name(&action) else {
        return failure_page(&principal, Nav::Routes, &Failure::NotFound(format!("no action {action}")));
    };
    if !principal.may(Action::Deliver) {
        return failure_page(&principal, Nav::Routes, &Failure::Forbidden);
    }
    let route = match (route.as_str(), &form.route) {
        ("-", Some(chosen)) => chosen.clone(),
        _ => route,
    };
    let target = match form.target() {
        Ok(target) => target,
        Err(failure) => return failure_page(&principal, Nav::Routes, &failure),
    };
    let what = describe(kind, &route, &target);
    if form.confirmed.as_deref() != Some("yes") {
        let body = html! {
            h1 { "Confirm" }
            div.notice { p #confirm-text { "You are about to " (what) "." } }
            form method="post" action=(format!("/routes/{}/{}", encode(&route), kind.as_str())) {
                (csrf(&principal))
                @if let Some(m) = target.message { input type="hidden" name="message" value=(m); }
                @if let Some(l) = &target.lane { input type="hidden" name="lane" value=(l); }
                @if target.all_parked == Some(true) { input type="hidden" name="all_parked" value="true"; }
                input type="hidden" name="confirmed" value="yes";
                button #confirm type="submit" class=[matches!(kind, ActionKind::Skip).then_some("danger")] { "Yes, " (kind.as_str()) }
                " "
                a #cancel href=(target.message.map_or_else(|| format!("/routes/{}", encode(&route)), |m| format!("/messages/{m}"))) { "Cancel" }
            }
        };
        return layout(&principal, "Confirm", Nav::Routes, None, body).into_response();
    }
    let who = principal.clone();
    let (name, aim) = (route.clone(), target.clone());
    let done = blocking(&slot, move |context| data::act(context, &who, &name, kind, &aim)).await;
    let back =
        target.message.map_or_else(|| format!("/routes/{}", encode(&route)), |m| format!("/messages/{m}"));
    let body = match done {
        Ok(outcome) => html! {
            h1 { "Done" }
            div.notice.good role="status" { p #outcome { (outcome.text(kind, &route)) } }
            p { a #back href=(back) { "Back" } }
        },
        Err(failure) => {
            return failure_page(&principal, Nav::Routes, &failure);
        }
    };
    layout(&principal, "Done", Nav::Routes, None, body).into_response()
}

/// What an action will do, in words, for the confirmation.
fn describe(kind: ActionKind, route: &str, target: &Target) -> String {
    match (kind, target.message, &target.lane, target.all_parked) {
        (ActionKind::Retry, Some(m), _, _) => format!("send message {m} again on route {route} now"),
        (ActionKind::Retry, _, _, Some(true)) => {
            format!("send every parked delivery of route {route} again now")
        }
        (ActionKind::Retry | ActionKind::Release, _, Some(lane), _) => {
            format!(
                "release lane {} on route {route}: its parked deliveries are sent again now",
                ops::printable(lane)
            )
        }
        (ActionKind::Skip, Some(m), _, _) => {
            format!("skip message {m} on route {route}: it will never be sent there, and its lane goes on")
        }
        (ActionKind::Resend, Some(m), _, _) => format!("queue message {m} again on route {route}"),
        _ => format!("{} on route {route}", kind.as_str()),
    }
}

async fn reload(
    State(slot): State<Slot>,
    Extension(principal): Extension<Principal>,
    Form(form): Form<ActionForm>,
) -> Response {
    if !principal.may(Action::Reload) {
        return failure_page(&principal, Nav::Routes, &Failure::Forbidden);
    }
    if form.confirmed.as_deref() != Some("yes") {
        let body = html! {
            h1 { "Confirm" }
            div.notice { p #confirm-text { "You are about to reload the configuration (the same as SIGHUP): listeners, certificates and routes change live, or nothing changes." } }
            form method="post" action="/actions/reload" {
                (csrf(&principal))
                input type="hidden" name="confirmed" value="yes";
                button #confirm type="submit" { "Yes, reload" }
                " "
                a #cancel href="/routes" { "Cancel" }
            }
        };
        return layout(&principal, "Confirm", Nav::Routes, None, body).into_response();
    }
    let Some(context) = slot.get() else {
        return failure_page(&principal, Nav::Routes, &Failure::NotStarted);
    };
    let report = data::reload(context, &principal).await;
    let json = crate::admin::report_json(&report);
    let body = html! {
        h1 { "Reload" }
        @if report.is_ok() {
            div.notice.good role="status" { p #outcome { "The configuration was reloaded." } }
        } @else {
            div.notice.bad role="alert" { p #outcome { "Nothing changed: " (report.error.as_deref().unwrap_or("see the report")) } }
        }
        pre { (serde_json::to_string_pretty(&json).unwrap_or_default()) }
        p { a #back href="/routes" { "Back" } }
    };
    let status = if report.is_ok() { StatusCode::OK } else { StatusCode::INTERNAL_SERVER_ERROR };
    (status, layout(&principal, "Reload", Nav::Routes, None, body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_encoding() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(encode("a b/ü"), "a%20b%2F%C3%BC");
    }
}
