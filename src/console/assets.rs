//! The console's one stylesheet, embedded in the binary and served under `/assets/` (the
//! CSP allows no other origin and no inline style). Public: it holds nothing but layout.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use super::Slot;

/// The stylesheet's path.
pub const STYLESHEET: &str = "/assets/console.css";

const CSS: &str = include_str!("assets/console.css");

/// The `/assets/…` routes.
pub(super) fn router() -> Router<Slot> {
    Router::new().route(STYLESHEET, get(stylesheet))
}

async fn stylesheet() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "public, max-age=3600")],
        CSS,
    )
}
