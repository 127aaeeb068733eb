//! The drain requests: `GET /drain` lists the drains in force, `POST /drain/IP` drains a
//! router (maintenance mode), `DELETE /drain/IP` undrains it.

use std::net::Ipv4Addr;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;
use vpcrouter_drains::Changed;
use vpcrouter_plugin_api::sync::lock;
use vpcrouter_status::document as status;

use super::{error, json_response};
use crate::context::ServerContext;

/// `GET /drain`: the drains in force, a JSON list.
pub(super) async fn list_drains(State(ctx): State<Arc<ServerContext>>) -> Response {
    let spec = lock(&ctx.status).spec.clone();
    let list: Vec<serde_json::Value> =
        ctx.drains.list().iter().map(|d| status::drain_json(d, ctx.drains.scope(), &spec)).collect();
    json_response(StatusCode::OK, &serde_json::Value::Array(list))
}

/// The router of a drain path, or the 400 (or 403) answer.
fn drain_target(ctx: &ServerContext, raw: &str) -> Result<Ipv4Addr, Box<Response>> {
    if let Some(why) = &ctx.drain_refusal {
        return Err(Box::new(error(StatusCode::FORBIDDEN, why)));
    }
    vpcrouter_plugin_api::spec::parse_ipv4(raw).ok_or_else(|| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            format!("'{raw}' is not an IPv4 address: name the router by its IP in the route spec"),
        ))
    })
}

/// `POST /drain/IP`, with an optional JSON body `{"reason": "..."}`: drains the router.
pub(super) async fn drain(
    State(ctx): State<Arc<ServerContext>>,
    Path(raw): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let ip = match drain_target(&ctx, &raw) {
        Ok(ip) => ip,
        Err(r) => return *r,
    };
    let reason = match drain_reason(&body) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    match ctx.drains.drain(ip, &reason).await {
        Ok(changed) => drained(&ctx, ip, changed),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

/// The reason of a drain request: its body, empty or `{"reason": "..."}`, checked; or the
/// 400 answer.
fn drain_reason(body: &[u8]) -> Result<String, Box<Response>> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        /// Why the router is drained, shown with the drain; empty when not given.
        #[serde(default)]
        reason: String,
    }
    let reason = if body.trim_ascii().is_empty() {
        String::new()
    } else {
        match serde_json::from_slice::<Body>(body) {
            Ok(b) => b.reason,
            Err(e) => {
                return Err(Box::new(error(
                    StatusCode::BAD_REQUEST,
                    format!(r#"the body must be JSON {{"reason": "..."}} (or empty): {e}"#),
                )))
            }
        }
    };
    vpcrouter_drains::check_reason(&reason).map_err(|e| Box::new(error(StatusCode::BAD_REQUEST, e)))
}

/// The answer to a drain: the drain as `GET /drain` shows it, whether the request changed
/// anything, and a warning when the router is no candidate of any CIDR.
fn drained(ctx: &ServerContext, ip: Ipv4Addr, changed: Changed) -> Response {
    let spec = lock(&ctx.status).spec.clone();
    let Some(d) = changed.drain else { return error(StatusCode::INTERNAL_SERVER_ERROR, "drain not recorded") };
    let mut doc = status::drain_json(&d, ctx.drains.scope(), &spec);
    doc["drained"] = true.into();
    doc["changed"] = changed.changed.into();
    if doc["cidrs"].as_array().is_some_and(Vec::is_empty) {
        doc["warning"] = format!(
            "{ip} is not a candidate router of any CIDR in the route spec in force: the drain changes no route now"
        )
        .into();
    }
    json_response(StatusCode::OK, &doc)
}

/// `DELETE /drain/IP`: undrains the router (routes are not moved back).
pub(super) async fn undrain(State(ctx): State<Arc<ServerContext>>, Path(raw): Path<String>) -> Response {
    let ip = match drain_target(&ctx, &raw) {
        Ok(ip) => ip,
        Err(r) => return *r,
    };
    match ctx.drains.undrain(ip).await {
        Ok(changed) => json_response(
            StatusCode::OK,
            &json!({"ip": ip.to_string(), "drained": false, "changed": changed.changed, "scope": ctx.drains.scope()}),
        ),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}
