//! What every console handler shares: the [`Context`] (503 until the server runs), blocking
//! store work off the async workers, the response headers of a page holding patient data,
//! and the JSON form of a [`Failure`].

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::data::Failure;
use super::{Context, Slot};

/// The Content-Security-Policy of every console response: nothing but this origin's own
/// script, style and images (the assets are in the binary), no framing, forms only here.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                       form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Runs `work` with the context on the blocking pool (SQLite reads and writes).
pub async fn blocking<T: Send + 'static>(
    slot: &Slot,
    work: impl FnOnce(&Context) -> Result<T, Failure> + Send + 'static,
) -> Result<T, Failure> {
    let slot = slot.clone();
    if slot.get().is_none() {
        return Err(Failure::NotStarted);
    }
    // The caller's subscriber goes along: audit events written there land where the
    // request's own would (a thread-local default in tests; the global one in the server).
    let dispatch = tracing::dispatcher::get_default(Clone::clone);
    tokio::task::spawn_blocking(move || {
        tracing::dispatcher::with_default(&dispatch, || match slot.get() {
            Some(context) => work(context),
            None => Err(Failure::NotStarted),
        })
    })
    .await
    .unwrap_or_else(|e| Err(Failure::Store(format!("the request failed: {e}"))))
}

/// A failure as the API answers it: its status and `{"error": "…"}`.
pub fn json_failure(failure: &Failure) -> Response {
    let status = StatusCode::from_u16(failure.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(serde_json::json!({ "error": failure.text() }))).into_response()
}

/// A JSON body with 200.
pub fn json_ok(value: serde_json::Value) -> Response {
    axum::Json(value).into_response()
}

/// Adds the headers every console response carries unless the handler (or a layer in
/// front) set them: the CSP, no sniffing, no referrer to other sites, and no caching (pages hold patient
/// data).
pub async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let defaults = [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ];
    for (name, value) in defaults {
        headers.entry(name).or_insert(HeaderValue::from_static(value));
    }
    headers.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    response
}
