//! The `etcd` watcher: the route spec is the value of one etcd key, followed with a watch.
//!
//! `vpcrouter -m etcd --etcd_endpoints http://10.0.0.1:2379,http://10.0.0.2:2379
//! [--etcd_key /vpcrouter/route_spec]` reads the key at start, watches it from the revision
//! read, and sends the FULL spec after each change (only when it differs from the last one
//! sent). The value is the same JSON as the `configfile` plugin's, checked with the shared
//! [`spec`](vpcrouter_plugin_api::spec) validation.
//!
//! TLS and authentication: the `--etcd-*` options (`--etcd-cacert`, `--etcd-cert`,
//! `--etcd-key`, `--etcd-user`, `--etcd-password-file`, or the password in
//! `VPCROUTER_ETCD_PASSWORD`), declared from the table cluster mode's options are built from
//! ([`vpcrouter_etcd_conn::OPTIONS`]): the host adds them once and hands their values to the
//! plugin. The files are read at each connection.
//!
//! Nothing that happens to etcd removes routes: an invalid value is logged (key, revision,
//! reason) and ignored; a deleted or absent key is logged as a warning and the last spec
//! stays in force; a lost connection is logged once per outage and retried with capped,
//! jittered exponential backoff, after which the key is re-read and watched again.
//!
//! The plugin runs its own single-threaded tokio runtime on its thread (started with
//! `WatcherRun::spawn`). Every etcd call has a deadline, and `stop` cancels whatever is
//! pending, so it returns at once even while etcd is unreachable.

#![deny(unsafe_code)]

mod session;
#[cfg(test)]
mod test_etcd;
mod track;

use std::sync::{Arc, Mutex};

use vpcrouter_plugin_api::prelude::*;
use vpcrouter_plugin_api::sync::lock;

use session::{Session, Status};
use vpcrouter_etcd_conn::{EtcdConn, EtcdSecurity};

/// The key read when `--etcd_key` is not given.
pub const DEFAULT_KEY: &str = "/vpcrouter/route_spec";

/// `--etcd_key` is empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--etcd_key is empty; pass the key that holds the route spec, e.g. --etcd_key {DEFAULT_KEY}")]
pub struct EmptyKey;

/// The checked options: etcd (endpoints, TLS, user) and the key. The endpoints go through
/// the parser cluster mode uses too ([`vpcrouter_etcd_conn::parse_endpoints`]).
fn options(args: &PluginArgs) -> Result<(EtcdConn, String), String> {
    let security = EtcdSecurity::from_values(|name| args.get(name).map(String::from)).map_err(|e| e.to_string())?;
    let conn =
        EtcdConn::new(args.require("etcd_endpoints")?, security).map_err(|e| format!("--etcd_endpoints: {e}"))?;
    let key = args.get("etcd_key").unwrap_or(DEFAULT_KEY);
    if key.is_empty() {
        return Err(EmptyKey.to_string());
    }
    Ok((conn, key.to_string()))
}

/// The watcher plugin.
pub struct Etcd {
    endpoints: Vec<String>,
    status: Arc<Mutex<Status>>,
}

impl PluginDescription for Etcd {
    const NAME: &'static str = "etcd";
    const DESCRIPTION: &'static str = "Reads the route spec from an etcd key and follows its changes";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn arguments() -> Vec<ArgSpec> {
        let mut args = vec![
            ArgSpec::value(
                "etcd_endpoints",
                "URL[,URL...]",
                "etcd client URLs, comma-separated: http(s)://host[:port] or host:port (https with the --etcd-* \
                 TLS files), e.g. https://10.0.0.1:2379 (only in etcd mode)",
            )
            .required(),
            ArgSpec::value("etcd_key", "KEY", "etcd key holding the route spec JSON (only in etcd mode)")
                .default(DEFAULT_KEY),
        ];
        // TLS and login: the options cluster mode uses too.
        args.extend(vpcrouter_etcd_conn::arg_specs());
        args
    }

    fn validate_config(args: &PluginArgs) -> Result<(), String> {
        // The files are read once now, so that a missing or invalid one stops the start.
        let (conn, _) = options(args)?;
        conn.check().map(drop).map_err(|e| e.to_string())
    }
}

impl WatcherPlugin for Etcd {
    fn start(args: &PluginArgs, run: &WatcherRun) -> Result<Self, String> {
        let (conn, key) = options(args)?;
        let log = run.log().clone();
        for warning in conn.check().map_err(|e| e.to_string())? {
            log.warn(warning);
        }
        let endpoints = conn.urls();
        log.info(format!("Etcd watcher plugin: Starting to watch key '{key}' on {}", endpoints.join(",")));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("etcd watcher: cannot create its async runtime: {e}"))?;
        let status = Arc::<Mutex<Status>>::default();
        let mut session = Session::new(conn, key, log.clone(), run.sink(), status.clone());
        let thread_status = status.clone();
        run.spawn("EtcdWatch", move |stop| {
            // The stop signal, as a future: a blocking task waits for it.
            let stop_rx = stop.receiver().clone();
            runtime.block_on(async {
                let stopped = tokio::task::spawn_blocking(move || {
                    let _ = stop_rx.recv();
                });
                tokio::select! {
                    biased;
                    _ = stopped => {}
                    () = session.run() => {}
                }
            });
            // Connection tasks are dropped, not awaited: nothing may delay the stop.
            runtime.shutdown_background();
            lock(&thread_status).connected = false;
        })?;
        Ok(Etcd { endpoints, status })
    }

    fn details(&self) -> serde_json::Value {
        let status = lock(&self.status);
        let last =
            status.last_update.map_or_else(|| "(no update, yet)".to_string(), vpcrouter_plugin_api::time::rfc3339);
        serde_json::json!({
            "endpoints": self.endpoints,
            "connected": status.connected,
            "key_present": status.key_present,
            "last_revision": status.last_revision,
            "last_route_spec_update": last,
            "outages": status.outages,
            "last_error": status.last_error,
        })
    }
}

export_plugin!(watcher: Etcd);

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::time::{Duration, Instant};

    use crate::test_etcd::{free_port, Server};
    use vpcrouter_plugin_api::testkit::{nothing_within, start_watcher, WatcherHarness};
    use vpcrouter_plugin_api::{PluginStats, WatcherStats};

    use super::*;

    const WAIT: Duration = Duration::from_secs(10);
    /// Longer than a watch event takes to arrive on loopback.
    const QUIET: Duration = Duration::from_millis(400);
    const KEY: &str = "/test/route_spec";
    const SPEC_A: &str = r#"{"10.1.0.0/16": ["1.1.1.1", "2.2.2.2"], "10.2.0.0/16": ["3.3.3.3"]}"#;
    const SPEC_B: &str = r#"{"10.1.0.0/16": ["2.2.2.2", "4.4.4.4"]}"#;

    struct Running(WatcherHarness);

    impl std::ops::Deref for Running {
        type Target = WatcherHarness;
        fn deref(&self) -> &WatcherHarness {
            &self.0
        }
    }

    impl Running {
        fn next_json(&self) -> String {
            self.next_spec(WAIT)
                .unwrap_or_else(|| panic!("no route spec within {WAIT:?}; log: {:?}", self.logs))
                .to_json()
        }
        /// Stops the plugin and checks that it took less than a second.
        fn stop_promptly(&self) {
            let started = Instant::now();
            self.stop().unwrap();
            assert!(started.elapsed() < Duration::from_secs(1), "stop took {:?}", started.elapsed());
        }
        /// The status details.
        fn details(&self) -> serde_json::Value {
            serde_json::from_str(&self.watcher.status().details).unwrap()
        }
        /// The sink's counters.
        fn stats(&self) -> WatcherStats {
            match self.watcher.status().stats {
                PluginStats::Watcher(s) => s,
                other => panic!("{other:?}"),
            }
        }
        fn wait_log(&self, level: LogLevel, needle: &str) {
            assert!(self.logs.wait_for(level, needle, WAIT), "no {level:?} '{needle}' in {:?}", self.logs);
        }
    }

    fn start(endpoints: &str, key: &str) -> Running {
        Running(start_watcher::<Etcd>(&[("etcd_endpoints", endpoints), ("etcd_key", key)]).unwrap())
    }

    fn canonical(text: &str) -> String {
        spec::parse_json(text).unwrap().to_json()
    }

    fn check(endpoints: &str, key: Option<&str>) -> Result<(), String> {
        let mut pairs = vec![("etcd_endpoints", endpoints)];
        pairs.extend(key.map(|k| ("etcd_key", k)));
        Etcd::validate_config(&PluginArgs::from_pairs(pairs))
    }

    #[test]
    fn options_are_checked_and_errors_say_what_to_pass() {
        assert_eq!(check("http://127.0.0.1:2379", None), Ok(()));
        assert_eq!(check(" http://10.0.0.1:2379/ , http://etcd-2:2379,http://[::1]:2379,", Some("/k")), Ok(()));
        // https and bare host:port are accepted now (the shared parser).
        assert_eq!(check("https://127.0.0.1:2379", None), Ok(()));
        assert_eq!(check("127.0.0.1:2379,etcd-2:2379", None), Ok(()));
        let urls = |raw: &str| options(&PluginArgs::from_pairs([("etcd_endpoints", raw)])).unwrap().0.urls();
        assert_eq!(urls("http://a:1, http://b"), ["http://a:1", "http://b:2379"]);
        assert_eq!(urls("a:1"), ["http://a:1"]);
        for empty in ["", " ", ",", " , "] {
            assert_eq!(
                check(empty, None).unwrap_err(),
                "--etcd_endpoints: no etcd endpoint given; pass the etcd client URLs, comma-separated, e.g. \
                 https://10.0.0.1:2379,https://10.0.0.2:2379"
            );
        }
        for (bad, why) in [
            ("http://", "'http://' names no usable host"),
            ("http://h:0", "'http://h:0': '0' is not a port"),
            ("http://h:2379/v3", "'http://h:2379/v3' has a path, query or fragment"),
            ("http://u:pw@h:2379", "'http://…@h:2379' holds user info"),
            ("HTTP://h:1", "'HTTP://h:1': unknown scheme"),
            ("etcd", "'etcd' has no port"),
            ("https://h:1", "the endpoints mix http:// and https://"),
        ] {
            let err = check(&format!("http://ok:2379,{bad}"), None).unwrap_err();
            assert!(err.starts_with(&format!("--etcd_endpoints: {why}")), "{bad}: {err}");
        }
        assert_eq!(
            check("http://h:1", Some("")).unwrap_err(),
            "--etcd_key is empty; pass the key that holds the route spec, e.g. --etcd_key /vpcrouter/route_spec"
        );
        assert_eq!(Etcd::validate_config(&PluginArgs::default()).unwrap_err(), "--etcd_endpoints is required");
        assert!(start_watcher::<Etcd>(&[("etcd_endpoints", "x")]).is_err());
        // The shared TLS and login options, with their rules; the files are read at validation.
        let with = |pairs: &[(&str, &str)]| {
            let mut all = vec![("etcd_endpoints", "127.0.0.1:2379")];
            all.extend_from_slice(pairs);
            Etcd::validate_config(&PluginArgs::from_pairs(all))
        };
        assert_eq!(
            with(&[("etcd-cert", "/c.pem")]).unwrap_err(),
            "--etcd-cert is given without --etcd-key; pass both: the client certificate and its private key"
        );
        assert_eq!(
            with(&[("etcd-cacert", "/nonexistent/ca.pem")]).unwrap_err(),
            "--etcd-cacert /nonexistent/ca.pem: cannot read it: No such file or directory (os error 2)"
        );
        assert!(with(&[("etcd-user", "u")]).unwrap_err().starts_with("--etcd-user 'u' is given without a password"));
    }

    #[test]
    fn arguments_declare_the_endpoints_required_and_the_key_defaulted() {
        let args = Etcd::arguments();
        let by = |n: &str| args.iter().find(|a| a.long == n).unwrap().clone();
        assert!(by("etcd_endpoints").required);
        assert_eq!(by("etcd_key").default.into_option().unwrap(), DEFAULT_KEY);
        for shared in vpcrouter_etcd_conn::OPTIONS {
            assert_eq!(by(shared.long).help.as_str(), shared.help, "declared from the shared table");
        }
        // Nothing listens on port 1 of 127.0.0.1.
        let r = Running(
            start_watcher::<Etcd>(&[("etcd_endpoints", "http://127.0.0.1:1"), ("etcd_key", DEFAULT_KEY)]).unwrap(),
        );
        let params: Vec<_> = r.watcher.status().params.iter().map(|t| (t.0.to_string(), t.1.to_string())).collect();
        let expected = [("etcd_endpoints", "http://127.0.0.1:1"), ("etcd_key", DEFAULT_KEY)];
        assert_eq!(params, expected.map(|(k, v)| (k.to_string(), v.to_string())));
        assert_eq!(r.details()["endpoints"], serde_json::json!(["http://127.0.0.1:1"]));
        assert_eq!(r.details()["last_route_spec_update"], "(no update, yet)");
        r.stop_promptly();
    }

    #[test]
    fn follows_the_key_and_keeps_the_last_spec_on_invalid_values_and_deletes() {
        let etcd = Server::start();
        etcd.put(KEY, SPEC_A);
        let r = start(&etcd.endpoint(), KEY);
        assert_eq!(r.next_json(), canonical(SPEC_A));
        r.wait_log(LogLevel::Info, &format!("Connected to etcd; key '{KEY}' read at revision"));

        etcd.put(KEY, SPEC_B);
        assert_eq!(r.next_json(), canonical(SPEC_B));
        // The same spec, written differently (a repeated router): nothing to send.
        etcd.put(KEY, r#"{"10.1.0.0/16": ["2.2.2.2", "4.4.4.4", "2.2.2.2"]}"#);
        assert!(nothing_within(&r.specs, QUIET), "one spec per change");
        // Other keys are not watched.
        etcd.put(&format!("{KEY}2"), SPEC_A);
        assert!(nothing_within(&r.specs, QUIET));

        etcd.put(KEY, r#"{"10.1.0.1/16": ["1.1.1.1"]}"#);
        r.wait_log(LogLevel::Error, &format!("etcd key '{KEY}' (revision "));
        r.wait_log(LogLevel::Error, "ignored: '10.1.0.1/16' is not a valid route CIDR: host bits are set");
        etcd.put(KEY, "{not json");
        r.wait_log(LogLevel::Error, "ignored: the route spec is not valid JSON");
        assert!(nothing_within(&r.specs, QUIET), "an invalid value keeps the last spec");

        etcd.delete(KEY);
        r.wait_log(
            LogLevel::Warn,
            &format!("etcd key '{KEY}' deleted; keeping the last route spec in force; put a new spec"),
        );
        assert!(nothing_within(&r.specs, QUIET), "a deleted key keeps the last spec");
        etcd.put(KEY, SPEC_A);
        assert_eq!(r.next_json(), canonical(SPEC_A));

        let (info, counters) = (r.details(), r.stats());
        let stats = &info;
        assert_eq!((counters.specs_sent, counters.errors), (3, 2), "{counters:?}");
        assert!(counters.last_error.is_empty(), "cleared by the valid value: {counters:?}");
        assert_eq!((stats["connected"].as_bool(), stats["key_present"].as_bool()), (Some(true), Some(true)), "{info}");
        assert!(stats["last_revision"].as_i64().unwrap() >= 8, "{info}");
        assert!(stats["last_error"].as_str().unwrap().contains("not valid JSON"), "{info}");
        assert!(stats["last_route_spec_update"].as_str().unwrap().ends_with('Z'), "{info}");
        r.stop().unwrap();
        r.wait_log(LogLevel::Info, "etcd watcher plugin: Stopped");
        assert_eq!(r.details()["connected"], false);
        assert_eq!(r.logs.count(LogLevel::Error, "etcd"), 2, "{:?}", r.logs);
    }

    #[test]
    fn an_absent_key_is_waited_for() {
        let etcd = Server::start();
        let r = start(&etcd.endpoint(), KEY);
        r.wait_log(LogLevel::Warn, &format!("etcd key '{KEY}' does not exist; waiting for it to be put"));
        assert!(nothing_within(&r.specs, QUIET));
        assert_eq!(r.details()["key_present"], false);
        etcd.put(KEY, "[]");
        r.wait_log(LogLevel::Error, "ignored: the route spec must be a JSON object");
        etcd.delete(KEY);
        r.wait_log(LogLevel::Warn, "deleted before it held a valid route spec");
        etcd.put(KEY, SPEC_B);
        assert_eq!(r.next_json(), canonical(SPEC_B));
        r.stop().unwrap();
        assert_eq!(r.logs.count(LogLevel::Warn, "does not exist"), 1, "{:?}", r.logs);
    }

    #[test]
    fn an_outage_is_logged_once_and_the_key_is_watched_again_after_it() {
        let mut etcd = Server::start();
        etcd.put(KEY, SPEC_A);
        let r = start(&etcd.endpoint(), KEY);
        assert_eq!(r.next_json(), canonical(SPEC_A));
        r.wait_log(LogLevel::Info, "Connected to etcd");

        etcd.stop();
        r.wait_log(LogLevel::Error, "Lost the connection to etcd (");
        // Several attempts fail meanwhile (0.1 s, 0.2 s, 0.4 s, ...), but are logged once.
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(r.logs.count(LogLevel::Error, "Lost the connection"), 1, "{:?}", r.logs);
        assert!(r.logs.contains(LogLevel::Error, "the last route spec stays in force"));
        let info = r.details();
        assert_eq!((info["connected"].as_bool(), info["outages"].as_u64()), (Some(false), Some(1)), "{info}");
        assert!(nothing_within(&r.specs, Duration::ZERO));

        etcd.restart();
        r.wait_log(LogLevel::Info, "Reconnected to etcd after ");
        assert!(nothing_within(&r.specs, QUIET), "the same spec is not sent again");
        etcd.put(KEY, SPEC_B);
        assert_eq!(r.next_json(), canonical(SPEC_B));
        assert_eq!(r.details()["connected"], true);

        // A second outage is logged again.
        etcd.stop();
        let deadline = Instant::now() + WAIT;
        while r.logs.count(LogLevel::Error, "Lost the connection to etcd (") < 2 {
            assert!(Instant::now() < deadline, "no second outage logged: {:?}", r.logs);
            std::thread::sleep(Duration::from_millis(10));
        }
        r.stop_promptly();
        assert_eq!(r.logs.count(LogLevel::Error, "Lost the connection"), 2, "{:?}", r.logs);
    }

    #[test]
    fn stop_is_prompt_while_etcd_is_unreachable() {
        // Nothing listens: connections are refused.
        let refused = format!("http://127.0.0.1:{}", free_port());
        let r = start(&refused, KEY);
        r.wait_log(
            LogLevel::Error,
            &format!("Cannot read key '{KEY}' from etcd ({refused}): read: tcp connect error: Connection refused"),
        );
        r.wait_log(LogLevel::Error, "no route spec is sent until it can be read");
        r.stop_promptly();

        // A listener that never answers: each attempt times out, and stop cancels it.
        let silent = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", silent.local_addr().unwrap());
        let r = start(&endpoint, KEY);
        r.wait_log(LogLevel::Error, &format!("Cannot read key '{KEY}' from etcd ({endpoint}): read: Timeout expired"));
        std::thread::sleep(Duration::from_millis(300));
        r.stop_promptly();
        assert!(nothing_within(&r.specs, Duration::ZERO));
        assert_eq!(r.logs.count(LogLevel::Error, "Cannot read key"), 1, "{:?}", r.logs);
        let info = r.details();
        assert_eq!(info["last_error"], "read: Timeout expired", "{info}");
    }
}
