//! The endpoints plugins add to the status server.
//!
//! Plugins register `(method, path) -> handler` through [`PluginContext::http`]; the status
//! server routes matching requests to them. Endpoints whose method is not GET or HEAD count
//! as state-changing: they need the token when one is set.
//!
//! [`PluginContext::http`]: vpcrouter_plugin_api::PluginContext

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use abi_stable::std_types::{RResult, RStr, RString};
use vpcrouter_plugin_api::{HttpHandlerBox, HttpRegistry, HttpRegistryBox, HttpRequest, HttpResponse};

use vpcrouter_plugin_api::sync::{read, write};

/// Paths the host serves itself; plugins cannot take them (nor any under
/// [`RESERVED_PREFIXES`]).
pub const RESERVED_PATHS: &[&str] = &["/", "/ips", "/plugins", "/route_info", "/vpc", "/status", "/metrics", "/drain"];

/// Path prefixes the host serves itself: `/drain/IP`, and `/_ui/` (the status page's files).
pub const RESERVED_PREFIXES: &[&str] = &["/drain/", "/_ui/"];

/// `(method, path)` → `(plugin, handler)`.
type Routes = BTreeMap<(String, String), (String, Arc<HttpHandlerBox>)>;

/// The registered plugin endpoints.
#[derive(Clone, Default)]
pub struct Endpoints {
    /// Shared by the plugins' registry handles (writers) and the server (reader).
    routes: Arc<RwLock<Routes>>,
}

impl Endpoints {
    /// A registry handle for plugin `plugin`, to hand over in its context.
    pub fn registry_for(&self, plugin: &str) -> HttpRegistryBox {
        HttpRegistryBox::from_ptr(
            abi_stable::std_types::RArc::new(PluginRegistry { plugin: plugin.into(), endpoints: self.clone() }),
            abi_stable::sabi_trait::TD_Opaque,
        )
    }

    /// Answers a request if a plugin registered its method and path.
    pub fn dispatch(&self, request: HttpRequest) -> Option<HttpResponse> {
        let key = (request.method.to_string(), request.path.to_string());
        let handler = read(&self.routes).get(&key).map(|(_, h)| h.clone())?;
        Some(handler.handle(request))
    }

    /// True when some plugin serves `path` (with any method).
    pub fn has_path(&self, path: &str) -> bool {
        read(&self.routes).keys().any(|(_, p)| p == path)
    }

    /// `(method, path, plugin)` of every registration.
    pub fn list(&self) -> Vec<(String, String, String)> {
        let routes = read(&self.routes);
        routes.iter().map(|((m, p), (plugin, _))| (m.clone(), p.clone(), plugin.clone())).collect()
    }
}

#[derive(Clone)]
struct PluginRegistry {
    /// The plugin that registers through this handle, named in refusals.
    plugin: String,
    /// The registry it adds to.
    endpoints: Endpoints,
}

impl HttpRegistry for PluginRegistry {
    fn register(&self, method: RStr<'_>, path: RStr<'_>, handler: HttpHandlerBox) -> RResult<(), RString> {
        let (method, path) = (method.as_str().to_ascii_uppercase(), path.as_str().to_string());
        let reserved = RESERVED_PATHS.contains(&path.as_str()) || RESERVED_PREFIXES.iter().any(|p| path.starts_with(p));
        if !path.starts_with('/') || reserved {
            return RResult::RErr(
                format!("plugin '{}' cannot register {method} {path}: the path is reserved or invalid", self.plugin)
                    .into(),
            );
        }
        let mut routes = write(&self.endpoints.routes);
        if let Some((owner, _)) = routes.get(&(method.clone(), path.clone())) {
            return RResult::RErr(format!("{method} {path} is already served by plugin '{owner}'").into());
        }
        routes.insert((method, path), (self.plugin.clone(), Arc::new(handler)));
        RResult::ROk(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vpcrouter_plugin_api::HttpHandler;

    struct Echo;
    impl HttpHandler for Echo {
        fn handle(&self, request: HttpRequest) -> HttpResponse {
            HttpResponse::text(200, request.path.to_string())
        }
    }

    #[test]
    fn register_and_dispatch() {
        let e = Endpoints::default();
        let reg = e.registry_for("http");
        let h = || HttpHandlerBox::from_value(Echo, abi_stable::sabi_trait::TD_Opaque);
        assert!(reg.register("get".into(), "/route_spec".into(), h()).is_ok());
        assert!(reg.register("GET".into(), "/route_spec".into(), h()).is_err());
        assert!(reg.register("GET".into(), "/status".into(), h()).is_err());
        for reserved in ["/drain/10.0.0.1", "/_ui/page.js", "/_ui/x"] {
            assert!(reg.register("GET".into(), reserved.into(), h()).is_err(), "{reserved}");
        }
        assert!(reg.register("GET".into(), "/_uix".into(), h()).is_ok(), "only the prefix is the host's");
        let req = HttpRequest { method: "GET".into(), path: "/route_spec".into(), ..Default::default() };
        assert_eq!(e.dispatch(req).map(|r| r.body.into_vec()), Some(b"/route_spec".to_vec()));
        assert!(e.has_path("/route_spec"));
        let req = HttpRequest { method: "POST".into(), path: "/route_spec".into(), ..Default::default() };
        assert!(e.dispatch(req).is_none());
    }
}
