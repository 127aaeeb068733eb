//! The plugins' endpoints: everything the host does not serve itself. The request is checked
//! (a registered path and method, the body limit), handed to the plugin's handler on the
//! blocking pool with a deadline, and its answer returned as the plugin wrote it.

use std::sync::Arc;

use abi_stable::std_types::{RString, RVec, Tuple2};
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use vpcrouter_plugin_api::{HttpRequest, HttpResponse};

use super::error;
use crate::context::{ServerContext, PLUGIN_CALL_TIMEOUT};
use crate::protocol::BODY_LIMIT;

/// Everything else: a plugin endpoint, or 404/405.
pub(super) async fn plugin_endpoint(
    State(ctx): State<Arc<ServerContext>>,
    method: Method,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_string();
    if let Err(refused) = check_method(&ctx, &method, &path) {
        return *refused;
    }
    let body = match read_body(&parts.headers, body).await {
        Ok(body) => body,
        Err(refused) => return *refused,
    };
    let request = HttpRequest {
        method: method.as_str().to_ascii_uppercase().into(),
        path: path.into(),
        query: parts.uri.query().unwrap_or("").into(),
        headers: plugin_headers(&parts.headers, ctx.security.token.is_some()),
        body: body.to_vec().into(),
    };
    let endpoints = ctx.endpoints.clone();
    let answer =
        tokio::time::timeout(PLUGIN_CALL_TIMEOUT, tokio::task::spawn_blocking(move || endpoints.dispatch(request)))
            .await;
    match answer {
        Ok(Ok(Some(r))) => plugin_response(r),
        Ok(Ok(None)) => error(StatusCode::NOT_FOUND, format!("no endpoint {method} {}", parts.uri.path())),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("the plugin endpoint failed: {e}")),
        Err(_) => error(
            StatusCode::GATEWAY_TIMEOUT,
            format!("the plugin did not answer within {} s", PLUGIN_CALL_TIMEOUT.as_secs()),
        ),
    }
}

/// 404 for a path no plugin registered, 405 (with `Allow`) for a method it did not.
fn check_method(ctx: &ServerContext, method: &Method, path: &str) -> Result<(), Box<Response>> {
    let registered = ctx.endpoints.list();
    if !registered.iter().any(|(_, p, _)| *p == path) {
        return Err(Box::new(error(
            StatusCode::NOT_FOUND,
            format!("no endpoint {path}; GET / lists the state documents"),
        )));
    }
    let allowed: Vec<&str> = registered.iter().filter(|(_, p, _)| *p == path).map(|(m, _, _)| m.as_str()).collect();
    if !allowed.contains(&method.as_str()) {
        let mut response = error(StatusCode::METHOD_NOT_ALLOWED, format!("{path} accepts {}", allowed.join(", ")));
        if let Ok(v) = HeaderValue::from_str(&allowed.join(", ")) {
            response.headers_mut().insert(header::ALLOW, v);
        }
        return Err(Box::new(response));
    }
    Ok(())
}

/// The whole request body, at most [`BODY_LIMIT`] bytes (else 413, told by
/// `Content-Length` or found while reading).
async fn read_body(headers: &HeaderMap, body: Body) -> Result<Bytes, Box<Response>> {
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let too_large = || {
        Box::new(error(StatusCode::PAYLOAD_TOO_LARGE, format!("the request body is larger than {BODY_LIMIT} bytes")))
    };
    if declared.is_some_and(|n| n > BODY_LIMIT as u64) {
        return Err(too_large());
    }
    match Limited::new(body, BODY_LIMIT).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(e) => Err(Box::new(error(StatusCode::BAD_REQUEST, format!("cannot read the request body: {e}")))),
    }
}

/// The request headers as the plugin gets them: names in lower case, and without
/// `Authorization` when the host checked the token (not the plugin's business, nor its log's).
fn plugin_headers(headers: &HeaderMap, host_checks_token: bool) -> RVec<Tuple2<RString, RString>> {
    headers
        .iter()
        .filter(|(name, _)| !(host_checks_token && *name == header::AUTHORIZATION))
        .map(|(name, value)| {
            Tuple2(
                name.as_str().to_ascii_lowercase().into(),
                String::from_utf8_lossy(value.as_bytes()).into_owned().into(),
            )
        })
        .collect()
}

/// The plugin's answer: its status (500 when invalid), content type (else
/// `application/octet-stream`) and body.
fn plugin_response(r: HttpResponse) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let content_type =
        HeaderValue::from_str(&r.content_type).unwrap_or(HeaderValue::from_static("application/octet-stream"));
    let mut response = Response::new(Body::from(r.body.into_vec()));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, content_type);
    response
}
