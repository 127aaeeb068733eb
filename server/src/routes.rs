//! The routes (`router`) and the handlers of the host's own paths: vpc-router's state
//! documents, `/status` and `/metrics`; the live page a browser gets at `/` (with its style
//! sheet and script) is in `page`, the drain requests in `drain`, the plugins' endpoints
//! (everything else) in `plugin`. Every error answer is JSON (`error`).

mod drain;
mod page;
mod plugin;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::json;
use vpcrouter_status::document as status;
use vpcrouter_status::metrics;

use crate::context::ServerContext;

/// The host's paths, then the plugins' endpoints as the fallback.
pub(crate) fn router(ctx: Arc<ServerContext>) -> Router {
    let mut app = Router::new();
    for path in status::STATE_PATHS {
        app = app.route(path, get(state_document));
    }
    app.route("/status", get(status_document))
        .route(vpcrouter_status::page::STYLE_PATH, get(page::style))
        .route(vpcrouter_status::page::SCRIPT_PATH, get(page::script))
        .route("/metrics", get(metrics))
        .route("/drain", get(drain::list_drains))
        .route("/drain/{ip}", post(drain::drain).delete(drain::undrain))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(plugin::plugin_endpoint)
        .with_state(ctx)
}

/// 405 for a path the host serves with other methods (axum adds the `Allow` header).
async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} does not accept {method}; the Allow header lists the methods it accepts", uri.path()),
    )
}

/// A JSON error answer: `{"error": "..."}`.
pub(crate) fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    let body = json!({ "error": message.to_string() }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// A JSON answer.
fn json_response(status: StatusCode, value: &serde_json::Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], status::indented(value)).into_response()
}

/// `/`, `/ips`, `/plugins`, `/route_info`, `/vpc`, negotiated on `Accept`; a browser asking
/// for `/` as HTML gets the live page instead of vpc-router's HTML view.
async fn state_document(State(ctx): State<Arc<ServerContext>>, uri: Uri, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let Some(format) = status::negotiate(accept) else {
        return (
            StatusCode::NOT_ACCEPTABLE,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "Cannot render data in acceptable content type\n",
        )
            .into_response();
    };
    if format == status::Format::Html && uri.path() == "/" {
        return page::live_page(&ctx).await;
    }
    let snap = ctx.snapshot(uri.path() == "/plugins").await;
    match status::state_document(uri.path(), &ctx.info, &snap) {
        Some(doc) => {
            let (content_type, body) = status::render(&doc, format);
            ([(header::CONTENT_TYPE, content_type)], body).into_response()
        }
        None => error(StatusCode::NOT_FOUND, "Requested state component not found"),
    }
}

/// `/status`: one JSON document for tools.
async fn status_document(State(ctx): State<Arc<ServerContext>>) -> Response {
    let doc = status::status_document(&ctx.info, &ctx.snapshot(true).await);
    ([(header::CONTENT_TYPE, "application/json")], status::indented(&doc)).into_response()
}

/// `/metrics`: the Prometheus text format 0.0.4, or OpenMetrics when `Accept` asks for it.
async fn metrics(State(ctx): State<Arc<ServerContext>>, headers: HeaderMap) -> Response {
    let format = metrics::Exposition::negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let snap = ctx.snapshot(true).await;
    let process =
        metrics::process::ProcessStats::read().inspect_err(|e| tracing::debug!(error = %e, "no process metrics")).ok();
    let text = metrics::encode(snap, &ctx.metrics, process, format);
    ([(header::CONTENT_TYPE, format.content_type())], text).into_response()
}
