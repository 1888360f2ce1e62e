//! The HTTP/JSON API (axum): routes, Server-Sent Events, JSON errors, the OpenAPI document.

pub(crate) mod errors;
pub mod json;
pub(crate) mod openapi;
pub(crate) mod routes;
pub(crate) mod sse;

use axum::Router;
use axum::routing::get;
use http::header;

use crate::state::AppState;

/// The HTTP routes.
pub(crate) fn router(state: AppState) -> Router {
    let openapi = openapi::document();
    Router::new()
        .route(
            "/streams/{stream}",
            get(routes::read)
                .post(routes::append)
                .delete(routes::delete),
        )
        .route(
            "/streams/{stream}/metadata",
            get(routes::get_metadata).put(routes::set_metadata),
        )
        .route("/streams/{stream}/subscribe", get(sse::subscribe))
        .route("/health", get(routes::health))
        .route("/metrics", get(routes::metrics))
        .route(
            "/openapi.json",
            get(move || {
                let body = openapi.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], body) }
            }),
        )
        .with_state(state)
}
