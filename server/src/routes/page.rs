//! The live page at `/` for browsers (rendered by `vpcrouter_status::page`), its style sheet
//! and its script. The page carries a strict `Content-Security-Policy` and is never cached;
//! the two files are the binary's own, served from paths under `/_ui/` that the host routes
//! before any plugin endpoint.

use axum::http::{header, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use vpcrouter_status::page;

use crate::context::ServerContext;

/// Headers every answer of this module carries: no sniffing of the content type.
const NOSNIFF: (HeaderName, HeaderValue) = (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));

/// `GET /` when `Accept` asks for HTML: the page, rendered from a fresh snapshot (without
/// asking the plugins for their status: the page does not show it, and browsers poll).
pub(super) async fn live_page(ctx: &ServerContext) -> Response {
    let body = page::page(&ctx.info, &ctx.snapshot(false).await);
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8")),
        (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(page::CONTENT_SECURITY_POLICY)),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (header::VARY, HeaderValue::from_static("Accept")),
        (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
        NOSNIFF,
    ];
    (headers, body).into_response()
}

/// The page's style sheet.
pub(super) async fn style() -> Response {
    asset("text/css; charset=utf-8", page::STYLE)
}

/// The page's script.
pub(super) async fn script() -> Response {
    asset("text/javascript; charset=utf-8", page::SCRIPT)
}

/// A file of the binary: revalidated on each use, so a new version is picked up at once.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        NOSNIFF,
    ];
    (headers, body).into_response()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use vpcrouter_plugin_api::{HttpHandler, HttpHandlerBox, HttpRequest, HttpResponse, TD_Opaque};

    use crate::auth::TokenFile;
    use crate::security::Security;
    use crate::testkit::{call, start, start_with};

    fn get(server: &crate::Server, path: &str, headers: &str) -> (u16, String, String) {
        let raw = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}\r\n");
        call(server, raw.as_bytes())
    }

    #[test]
    fn browsers_get_the_live_page_at_the_root_and_scripts_keep_their_documents() {
        let (server, _) = start();
        let (status, head, body) = get(&server, "/", "Accept: text/html,application/xhtml+xml\r\n");
        assert_eq!(status, 200, "{head}{body}");
        for line in [
            "content-type: text/html; charset=utf-8",
            "content-security-policy: default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self';",
            "x-content-type-options: nosniff",
            "cache-control: no-store",
        ] {
            assert!(head.contains(line), "missing {line}: {head}");
        }
        assert!(body.starts_with("<!DOCTYPE html>") && body.contains("<main id=\"main\">"), "{body}");
        let (status, head, body) = get(&server, "/", "Accept: application/json\r\n");
        assert_eq!(status, 200);
        assert!(head.contains("content-type: application/json") && !head.contains("content-security-policy"));
        let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(doc["ips"]["_href"], "/ips", "{doc}");
        let (_, head, body) = get(&server, "/", "");
        assert!(head.contains("text/plain") && body.contains("\n    \"SERVER\": {"), "{head}{body}");
        let (_, _, body) = get(&server, "/ips", "Accept: text/html\r\n");
        assert!(body.contains("<title>VPC-router state</title>"), "the other paths keep their view: {body}");
        server.stop();
    }

    /// A plugin handler that answers with its own text.
    struct Squatter;
    impl HttpHandler for Squatter {
        fn handle(&self, _: HttpRequest) -> HttpResponse {
            HttpResponse::text(200, "the plugin's".to_string())
        }
    }

    #[test]
    fn the_style_sheet_and_script_are_the_hosts_even_if_a_plugin_registers_their_paths() {
        let (server, endpoints) = start();
        for path in [vpcrouter_status::page::STYLE_PATH, vpcrouter_status::page::SCRIPT_PATH] {
            let reg = endpoints.registry_for("squatter");
            let _ = reg.register("GET".into(), path.into(), HttpHandlerBox::from_value(Squatter, TD_Opaque));
        }
        let (status, head, body) = get(&server, "/_ui/page.css", "");
        assert_eq!((status, body.as_str()), (200, vpcrouter_status::page::STYLE), "{head}");
        assert!(head.contains("content-type: text/css") && head.contains("x-content-type-options: nosniff"), "{head}");
        let (status, head, body) = get(&server, "/_ui/page.js", "");
        assert_eq!((status, body.as_str()), (200, vpcrouter_status::page::SCRIPT), "{head}");
        assert!(head.contains("content-type: text/javascript"), "{head}");
        assert_eq!(call(&server, b"HEAD /_ui/page.js HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").0, 200);
        server.stop();
    }

    #[test]
    fn with_auth_all_the_page_and_its_files_need_the_token() {
        let token = Some(Arc::new(TokenFile::from_token("t0k")));
        let (server, _) = start_with(Security { token, auth_all: true, ..Security::default() });
        for path in ["/", "/_ui/page.css", "/_ui/page.js"] {
            assert_eq!(get(&server, path, "Accept: text/html\r\n").0, 401, "{path}");
            let (status, _, body) = get(&server, path, "Accept: text/html\r\nAuthorization: Bearer t0k\r\n");
            assert_eq!(status, 200, "{path}: {body}");
        }
        server.stop();
        let (open, _) =
            start_with(Security { token: Some(Arc::new(TokenFile::from_token("t0k"))), ..Security::default() });
        assert_eq!(get(&open, "/", "Accept: text/html\r\n").0, 200, "read-only without --http-auth-all");
        open.stop();
    }
}
