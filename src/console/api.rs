//! `/api/v1/`: the console's reads and actions as JSON, for scripts (`Authorization: Bearer
//! TOKEN`) and the pages' own data. Each handler calls the same [`super::data`] function as
//! the page that shows the same thing. A viewer's action is answered 403; every view of a
//! message's content and every search naming patient data writes an audit event.
//!
//! - `GET /api/v1/dashboard`
//! - `GET /api/v1/messages?patient=…&visit=…&order=…&control_id=…&type=…&sender=…&listener=…&status=…&since=…&until=…&before=ID&limit=N`
//! - `GET /api/v1/messages/{id}`
//! - `GET /api/v1/routes`, `GET /api/v1/routes/{route}/parked`
//! - `POST /api/v1/routes/{route}/retry` `{"message": ID}` | `{"lane": KEY}` | `{"all_parked": true}`
//! - `POST /api/v1/routes/{route}/skip` `{"message": ID}`
//! - `POST /api/v1/routes/{route}/resend` `{"messages": [ID, …]}` (or `{"message": ID}`)
//! - `POST /api/v1/routes/{route}/release` `{"lane": KEY}`
//! - `POST /api/v1/reload`

use std::time::Instant;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};

use super::data::{self, ActionKind, Failure, SearchParams, Target};
use super::respond::{blocking, json_failure, json_ok};
use super::{audit, Action, Principal, Slot};

/// The `/api/v1/` routes.
pub(super) fn router() -> Router<Slot> {
    Router::new()
        .route("/api/v1/dashboard", get(dashboard))
        .route("/api/v1/messages", get(messages))
        .route("/api/v1/messages/{id}", get(message))
        .route("/api/v1/routes", get(routes))
        .route("/api/v1/routes/{route}/parked", get(parked))
        .route("/api/v1/routes/{route}/{action}", post(act))
        .route("/api/v1/reload", post(reload))
}

async fn dashboard(State(slot): State<Slot>, Extension(_principal): Extension<Principal>) -> Response {
    match blocking(&slot, |context| data::dashboard(context).map(|d| data::dashboard_json(&d))).await {
        Ok(json) => json_ok(json),
        Err(failure) => json_failure(&failure),
    }
}

async fn messages(
    State(slot): State<Slot>,
    Extension(principal): Extension<Principal>,
    Query(params): Query<SearchParams>,
) -> Response {
    let started = Instant::now();
    let search = match params.parse() {
        Ok(search) => search,
        Err(failure) => return json_failure(&failure),
    };
    let found = blocking(&slot, move |context| {
        let page = data::search(&context.store, &search)?;
        if search.names_patient() {
            audit::messages_searched(&principal, &search, &page, "api");
        }
        Ok(page)
    })
    .await;
    match found {
        Ok(page) => with_server_timing(json_ok(data::page_json(&page)), started),
        Err(failure) => json_failure(&failure),
    }
}

async fn message(
    State(slot): State<Slot>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<i64>,
) -> Response {
    let found = blocking(&slot, move |context| {
        let detail = data::detail(&context.store, id)?;
        audit::message_viewed(&principal, id, "api");
        Ok(detail)
    })
    .await;
    match found {
        Ok(detail) => json_ok(data::detail_json(&detail)),
        Err(failure) => json_failure(&failure),
    }
}

async fn routes(State(slot): State<Slot>, Extension(_principal): Extension<Principal>) -> Response {
    match blocking(&slot, data::routes_json).await {
        Ok(json) => json_ok(json),
        Err(failure) => json_failure(&failure),
    }
}

async fn parked(
    State(slot): State<Slot>,
    Extension(_principal): Extension<Principal>,
    Path(route): Path<String>,
) -> Response {
    let found = blocking(&slot, move |context| data::parked(context, &route)).await;
    match found {
        Ok(parked) => json_ok(parked.iter().map(crate::ops::parked_json).collect()),
        Err(failure) => json_failure(&failure),
    }
}

async fn act(
    State(slot): State<Slot>,
    Extension(principal): Extension<Principal>,
    Path((route, action)): Path<(String, String)>,
    body: Option<Json<Target>>,
) -> Response {
    let Some(kind) = ActionKind::from_name(&action) else {
        return json_failure(&Failure::NotFound(format!(
            "no action {action}: retry, skip, resend or release"
        )));
    };
    if !principal.may(Action::Deliver) {
        return json_failure(&Failure::Forbidden);
    }
    let target = body.map(|Json(target)| target).unwrap_or_default();
    let done = blocking(&slot, move |context| {
        data::act(context, &principal, &route, kind, &target).map(|outcome| outcome.json(kind, &route))
    })
    .await;
    match done {
        Ok(json) => json_ok(json),
        Err(failure) => json_failure(&failure),
    }
}

async fn reload(State(slot): State<Slot>, Extension(principal): Extension<Principal>) -> Response {
    if !principal.may(Action::Reload) {
        return json_failure(&Failure::Forbidden);
    }
    let Some(context) = slot.get() else { return json_failure(&Failure::NotStarted) };
    let report = data::reload(context, &principal).await;
    let status = if report.is_ok() { StatusCode::OK } else { StatusCode::INTERNAL_SERVER_ERROR };
    (status, Json(crate::admin::report_json(&report))).into_response()
}

/// `Server-Timing: app;dur=…`: the time from the request's parsing to the body, for the
/// benchmark of the messages page (BENCHMARKS.md).
pub(super) fn with_server_timing(mut response: Response, started: Instant) -> Response {
    let millis = started.elapsed().as_secs_f64() * 1000.0;
    if let Ok(value) = HeaderValue::from_str(&format!("app;dur={millis:.2}")) {
        response.headers_mut().insert(header::HeaderName::from_static("server-timing"), value);
    }
    response
}
