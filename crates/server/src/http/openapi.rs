//! The OpenAPI document served at `GET /openapi.json`, generated from the handlers' annotations
//! and the JSON types, so it cannot drift from what the server does.

use utoipa::OpenApi;

use super::{json, routes, sse};

/// The HTTP API of `annals serve`.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Annals HTTP API",
        description = "Append, read, subscribe (Server-Sent Events), stream metadata, health and metrics. \
                       The same port also serves the KurrentDB-compatible gRPC API.",
    ),
    paths(
        routes::append,
        routes::read,
        routes::delete,
        routes::get_metadata,
        routes::set_metadata,
        sse::subscribe,
        routes::health,
        routes::metrics,
    ),
    components(schemas(
        json::EventJson,
        json::LinkJson,
        json::NewEventJson,
        json::AppendJson,
        json::WriteResultJson,
        json::ReadPageJson,
        json::MetadataJson,
        json::SetMetadataJson,
        json::ErrorJson,
        json::ErrorDetailJson,
        json::HealthJson,
    ))
)]
pub(crate) struct ApiDoc;

/// The document as JSON.
pub(crate) fn document() -> String {
    ApiDoc::openapi()
        .to_json()
        .unwrap_or_else(|e| format!("{{\"error\":\"cannot render the OpenAPI document: {e}\"}}"))
}
