//! A fault-injecting HTTP/1.1 proxy between vpcrouter's SDK client and moto.
//!
//! Each request's EC2 query `Action=` is read from its form body and counted; a shared,
//! changeable [`Policy`] decides per action whether to forward it or to inject a fault:
//! throttling (`RequestLimitExceeded`), a 5xx answer, a slow answer, a connection reset
//! before forwarding, or an answer lost after forwarding (the call succeeded at EC2).
//! Client connections are kept alive; each forwarded request uses its own connection to
//! moto. Every loop is bounded by the stop flag and socket timeouts.
//!
//! Optionally an EC2 [`Model`] (latency and token-bucket throttling, see [`crate::ec2model`])
//! applies to every call the policy leaves alone: a call whose bucket is empty is answered
//! `RequestLimitExceeded` at once and recorded with `fault: Some(Fault::Throttle)` and
//! `modelled: true`; any other call is forwarded after the modelled latency. Policy faults
//! take precedence and take no token. Without a model the proxy forwards at once, as before.
//! A thread serves each client connection, so many concurrent calls wait out their latency
//! in parallel (moto itself then serialises them).
//!
//! # Lagging reads
//!
//! EC2 is eventually consistent: a route write that EC2 acknowledged may not show in a
//! `DescribeRouteTables` answer for a while. [`FaultProxy::set_read_lag`] models that with a
//! lag L. While the mode is on, the proxy remembers the last successful answer it forwarded
//! for each distinct request body of the lagged reads ([`LAGGED_READS`]: route tables and
//! managed prefix lists; the SDK's form body carries no request id or time, those are in
//! headers, so equal bodies are equal questions). When a write is forwarded to moto at
//! time t and no lag is in force, those remembered answers are frozen; until the last
//! forwarded write + L, a lagged read whose body matches a frozen one is answered with the
//! frozen answer, without reaching moto (recorded with `lagged: true`; it took its token and
//! latency from the model like any read). When the lag runs out the frozen set is dropped
//! and reads see moto again.
//!
//! The approximation: the whole answer is frozen, not each route, and a write during the
//! lag extends it without refreezing, so a burst of writes is invisible as a whole until L
//! after its last write (real EC2 shows each write after its own delay). A read whose body
//! was not seen before the first write is forwarded and sees every write at once.
//!
//! Each call records the route-write parameters of its form body (`RouteTableId`,
//! destination, `InstanceId`, `NetworkInterfaceId`, `GatewayId`), so a test can tell where a
//! route was pointed ([`Call::target`], [`Call::route`]).

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vpcrouter_plugin_api::sync::lock;

use crate::ec2model::{classify, Admission, Class, Limiter, Model};

/// Largest request or response the proxy handles (moto answers at bench scale are large).
const MAX_BODY: usize = 256 << 20;

/// What to do instead of (or on top of) forwarding a call.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// HTTP 503 with the EC2 error `RequestLimitExceeded`.
    Throttle,
    /// HTTP `status` (500 → `InternalError`, otherwise `Unavailable`).
    Status(u16),
    /// Waits this long, then forwards and answers (the client may have given up).
    Slow(Duration),
    /// Resets the client connection without forwarding.
    Reset,
    /// Forwards (EC2 applies the call), then resets the client connection: answer lost.
    LoseAnswer,
}

/// One fault rule: applies to `actions` (all when empty), on a share of the calls.
#[derive(Clone, Debug)]
pub struct Rule {
    /// EC2 actions the rule applies to; empty = every action.
    pub actions: Vec<String>,
    /// The fault.
    pub fault: Fault,
    /// Share of matching calls that get the fault, 0.0 to 1.0 (drawn pseudo-randomly).
    pub ratio: f64,
    /// At most this many injections (then the rule is spent).
    pub limit: Option<u64>,
    injected: u64,
}

impl Rule {
    /// `fault` on every call of every action.
    pub fn all(fault: Fault) -> Rule {
        Rule { actions: Vec::new(), fault, ratio: 1.0, limit: None, injected: 0 }
    }

    /// Restricts the rule to `actions`.
    pub fn on(mut self, actions: &[&str]) -> Rule {
        self.actions = actions.iter().map(|a| a.to_string()).collect();
        self
    }

    /// Applies the fault to a share `ratio` of matching calls.
    pub fn ratio(mut self, ratio: f64) -> Rule {
        self.ratio = ratio;
        self
    }

    /// Applies the fault at most `n` times.
    pub fn limit(mut self, n: u64) -> Rule {
        self.limit = Some(n);
        self
    }
}

/// The rules in force, first match wins.
pub type Policy = Vec<Rule>;

/// The reads that lag writes in the lagging-reads mode (see the module doc).
pub const LAGGED_READS: [&str; 3] =
    ["DescribeRouteTables", "DescribeManagedPrefixLists", "GetManagedPrefixListEntries"];

/// The form parameters a [`Call`] records: those that say which route a write is about and
/// where it points.
pub const ROUTE_PARAMS: [&str; 7] = [
    "RouteTableId", "DestinationCidrBlock", "DestinationIpv6CidrBlock", "DestinationPrefixListId", "InstanceId",
    "NetworkInterfaceId", "GatewayId",
];

/// One call seen by the proxy.
#[derive(Clone, Debug)]
pub struct Call {
    /// When the request arrived.
    pub at: Instant,
    /// The EC2 action (`?` when none was found).
    pub action: String,
    /// The fault injected, if any.
    pub fault: Option<Fault>,
    /// True when the [`Model`]'s bucket was empty (then `fault` is `Some(Fault::Throttle)`).
    pub modelled: bool,
    /// True when the read was answered from the lagging-reads mode's frozen view instead of
    /// moto (see the module doc); it counts as a read all the same.
    pub lagged: bool,
    /// The [`ROUTE_PARAMS`] present in the form body, URL-decoded.
    pub params: BTreeMap<String, String>,
    /// The proxy's number for the call (to mark it lagged once answered).
    seq: u64,
}

impl Call {
    /// True when the call reached moto (EC2 applied it), whatever the client was answered;
    /// also true for a read answered from the lagged view (EC2 answered it, late).
    pub fn forwarded(&self) -> bool {
        matches!(self.fault, None | Some(Fault::Slow(_)) | Some(Fault::LoseAnswer))
    }

    /// The value of form parameter `name` (one of [`ROUTE_PARAMS`]).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    /// True for `CreateRoute` and `ReplaceRoute`: a write that points a route somewhere.
    pub fn is_route_write(&self) -> bool {
        self.action == "CreateRoute" || self.action == "ReplaceRoute"
    }

    /// Where a route write points the route: its `InstanceId` or `NetworkInterfaceId`.
    pub fn target(&self) -> Option<&str> {
        self.param("InstanceId").or(self.param("NetworkInterfaceId"))
    }

    /// The route a route call is about: (route table, destination CIDR or prefix list).
    pub fn route(&self) -> Option<(&str, &str)> {
        let dest = self
            .param("DestinationCidrBlock")
            .or(self.param("DestinationIpv6CidrBlock"))
            .or(self.param("DestinationPrefixListId"))?;
        Some((self.param("RouteTableId")?, dest))
    }

    /// True when the call was answered `RequestLimitExceeded` (by the policy or the model).
    pub fn throttled(&self) -> bool {
        self.fault == Some(Fault::Throttle)
    }
}

/// Calls in a time window by class (`Describe*` = read) and outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Reads forwarded to moto.
    pub reads: u64,
    /// Writes forwarded to moto.
    pub writes: u64,
    /// Reads answered `RequestLimitExceeded`.
    pub throttled_reads: u64,
    /// Writes answered `RequestLimitExceeded`.
    pub throttled_writes: u64,
    /// Calls with any other fault that did not reach moto (5xx, reset).
    pub other_faults: u64,
    /// Reads answered from the lagged view (counted in `reads` too).
    pub lagged_reads: u64,
}

impl Tally {
    fn add(&mut self, c: &Call) {
        self.lagged_reads += u64::from(c.lagged);
        let read = classify(&c.action) == Class::Read;
        let slot = match (c.forwarded(), c.throttled(), read) {
            (true, _, true) => &mut self.reads,
            (true, _, false) => &mut self.writes,
            (false, true, true) => &mut self.throttled_reads,
            (false, true, false) => &mut self.throttled_writes,
            (false, false, _) => &mut self.other_faults,
        };
        *slot += 1;
    }
}

/// What to do with one call: inject `fault`, or (with none) forward after `delay`.
struct Verdict {
    fault: Option<Fault>,
    delay: Duration,
    /// The call's [`Call::seq`].
    seq: u64,
}

/// The lagging-reads mode's state (see the module doc).
#[derive(Default)]
struct Lag {
    /// How long reads lag writes; `None`: the mode is off.
    lag: Option<Duration>,
    /// The last successful answer forwarded per lagged read's request body.
    last: HashMap<Vec<u8>, Vec<u8>>,
    /// The answers frozen when the lag in force began, per request body.
    frozen: HashMap<Vec<u8>, Vec<u8>>,
    /// When the lag in force ends (last forwarded write + lag).
    until: Option<Instant>,
}

impl Lag {
    /// Drops the frozen answers once the lag has run out.
    fn expire(&mut self, now: Instant) {
        if self.until.is_some_and(|u| now >= u) {
            self.until = None;
            self.frozen.clear();
        }
    }

    /// A write is forwarded now: freezes the answers unless a lag is in force, and
    /// (re)starts the lag.
    fn on_write(&mut self, now: Instant) {
        let Some(lag) = self.lag else { return };
        self.expire(now);
        if self.until.is_none() {
            self.frozen = self.last.clone();
        }
        self.until = Some(now + lag);
    }

    /// The frozen answer to a read of `body`, while the lag is in force.
    fn frozen_answer(&mut self, body: &[u8], now: Instant) -> Option<Vec<u8>> {
        self.expire(now);
        self.frozen.get(body).cloned()
    }

    /// Remembers the answer forwarded to a read of `body` (while the mode is on).
    fn remember(&mut self, body: &[u8], answer: &[u8]) {
        if self.lag.is_some() {
            self.last.insert(body.to_vec(), answer.to_vec());
        }
    }
}

#[derive(Default)]
struct Shared {
    policy: Mutex<Policy>,
    model: Mutex<Option<Arc<Limiter>>>,
    calls: Mutex<Vec<Call>>,
    lag: Mutex<Lag>,
    seq: AtomicU64,
    rng: Mutex<u64>,
    connections: AtomicU64,
    stop: AtomicBool,
}

impl Shared {
    /// Picks the fault (the policy's, else the model's) or the delay for one call of
    /// `action` with form body `body`, and records the call.
    fn decide(&self, action: &str, body: &[u8]) -> Verdict {
        let policy_fault = self.policy_fault(action);
        let admission = match policy_fault {
            Some(_) => None,
            None => lock(&self.model).clone().map(|l| l.admit(action)),
        };
        let (fault, modelled, delay) = match (policy_fault, admission) {
            (Some(f), _) => (Some(f), false, Duration::ZERO),
            (None, Some(Admission::Throttle)) => (Some(Fault::Throttle), true, Duration::ZERO),
            (None, Some(Admission::Forward(d))) => (None, false, d),
            (None, None) => (None, false, Duration::ZERO),
        };
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let call = Call {
            at: Instant::now(),
            action: action.to_string(),
            fault: fault.clone(),
            modelled,
            lagged: false,
            params: route_params(body),
            seq,
        };
        lock(&self.calls).push(call);
        Verdict { fault, delay, seq }
    }

    /// Answers a call the verdict forwards: a lagged read from the frozen view while the
    /// lag is in force, anything else from moto (a write first freezes the reads' view).
    fn answer(&self, req: &Message, action: &str, seq: u64, upstream: &str) -> std::io::Result<Vec<u8>> {
        let lagged = LAGGED_READS.contains(&action);
        if lagged {
            if let Some(frozen) = lock(&self.lag).frozen_answer(&req.body, Instant::now()) {
                self.mark_lagged(seq);
                return Ok(frozen);
            }
        }
        if classify(action) == Class::Write {
            lock(&self.lag).on_write(Instant::now());
        }
        let answer = forward(req, upstream)?;
        let bytes = answer.to_bytes(&[]);
        if lagged && answer.start.split_whitespace().nth(1) == Some("200") {
            lock(&self.lag).remember(&req.body, &bytes);
        }
        Ok(bytes)
    }

    /// Marks call `seq` as answered from the lagged view.
    fn mark_lagged(&self, seq: u64) {
        if let Some(c) = lock(&self.calls).iter_mut().rev().find(|c| c.seq == seq) {
            c.lagged = true;
        }
    }

    /// The first matching rule's fault for one call of `action` (counted against its limit).
    fn policy_fault(&self, action: &str) -> Option<Fault> {
        let mut policy = lock(&self.policy);
        let mut fault = None;
        for rule in policy.iter_mut() {
            let matches = rule.actions.is_empty() || rule.actions.iter().any(|a| a == action);
            if !matches || rule.limit.is_some_and(|l| rule.injected >= l) {
                continue;
            }
            if rule.ratio >= 1.0 || self.draw() < rule.ratio {
                rule.injected += 1;
                fault = Some(rule.fault.clone());
                break;
            }
        }
        fault
    }

    /// Sleeps `d`, in steps, returning early when the proxy stops.
    fn pause(&self, d: Duration) {
        let end = Instant::now() + d;
        while !self.stop.load(Ordering::Relaxed) {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            std::thread::sleep(left.min(Duration::from_millis(20)));
        }
    }

    /// A pseudo-random number in [0, 1) (xorshift64, fixed seed: reproducible mixes).
    fn draw(&self) -> f64 {
        let mut s = lock(&self.rng);
        let mut x = *s;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *s = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A running proxy; stops on drop.
pub struct FaultProxy {
    /// `http://127.0.0.1:PORT`, for `AWS_ENDPOINT_URL`.
    pub endpoint: String,
    addr: std::net::SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts a proxy in front of `upstream` (`http://host:port`).
    pub fn start(upstream: &str) -> anyhow::Result<FaultProxy> {
        let upstream = upstream.trim_start_matches("http://").trim_end_matches('/').to_string();
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let endpoint = format!("http://{addr}");
        let shared = Arc::new(Shared { rng: Mutex::new(0x9E37_79B9_7F4A_7C15), ..Shared::default() });
        let sh = shared.clone();
        let accept =
            std::thread::Builder::new().name("faultproxy".into()).spawn(move || accept_loop(listener, sh, upstream))?;
        Ok(FaultProxy { endpoint, addr, shared, accept: Some(accept) })
    }

    /// Starts a proxy in front of `upstream` that applies `model` (see [`FaultProxy::set_model`]).
    pub fn start_model(upstream: &str, model: Model) -> anyhow::Result<FaultProxy> {
        let proxy = FaultProxy::start(upstream)?;
        proxy.set_model(Some(model))?;
        Ok(proxy)
    }

    /// Applies `model` to the calls from now on, with full buckets (also when the same model
    /// was in force: this refills them); `None` forwards without latency or throttling.
    /// Fails on a bucket with a rate below 0.001 per second or a burst of 0.
    pub fn set_model(&self, model: Option<Model>) -> anyhow::Result<()> {
        let limiter = model.map(Limiter::new).transpose()?.map(Arc::new);
        *lock(&self.shared.model) = limiter;
        Ok(())
    }

    /// The model in force, if any.
    pub fn model(&self) -> Option<Model> {
        lock(&self.shared.model).as_ref().map(|l| l.model())
    }

    /// Replaces the policy (an empty one forwards everything).
    pub fn set_policy(&self, policy: Policy) {
        *lock(&self.shared.policy) = policy;
    }

    /// Turns the lagging-reads mode on (reads lag writes by `lag`) or off (`None`); see the
    /// module doc. Either way it starts afresh: nothing remembered, no lag in force.
    pub fn set_read_lag(&self, lag: Option<Duration>) {
        *lock(&self.shared.lag) = Lag { lag, ..Lag::default() };
    }

    /// The read lag in force, if the mode is on.
    pub fn read_lag(&self) -> Option<Duration> {
        lock(&self.shared.lag).lag
    }

    /// Forwards everything from now on.
    pub fn clear(&self) {
        self.set_policy(Vec::new());
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.shared.calls).clone()
    }

    /// Calls per action so far.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for c in lock(&self.shared.calls).iter() {
            *out.entry(c.action.clone()).or_insert(0) += 1;
        }
        out
    }

    /// Calls of `action` so far.
    pub fn count(&self, action: &str) -> u64 {
        lock(&self.shared.calls).iter().filter(|c| c.action == action).count() as u64
    }

    /// Calls since `t`: (all, with a fault injected).
    pub fn since(&self, t: Instant) -> (u64, u64) {
        let calls = lock(&self.shared.calls);
        let recent = calls.iter().filter(|c| c.at >= t);
        recent.fold((0, 0), |(n, f), c| (n + 1, f + u64::from(c.fault.is_some())))
    }

    /// Calls that arrived since `t`, by class and outcome (e.g. writes forwarded and writes
    /// throttled during a failover).
    pub fn tally_since(&self, t: Instant) -> Tally {
        let mut tally = Tally::default();
        lock(&self.shared.calls).iter().filter(|c| c.at >= t).for_each(|c| tally.add(c));
        tally
    }

    /// `RequestLimitExceeded` answers per action so far (policy and model).
    pub fn throttled_counts(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for c in lock(&self.shared.calls).iter().filter(|c| c.throttled()) {
            *out.entry(c.action.clone()).or_insert(0) += 1;
        }
        out
    }

    /// Client connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// Forgets the calls seen so far (counters restart at zero).
    pub fn reset_counts(&self) {
        lock(&self.shared.calls).clear();
        self.shared.connections.store(0, Ordering::Relaxed);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        // Wake the blocking accept; if that connection fails, leave the thread behind
        // rather than hang in join.
        let woken = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2)).is_ok();
        if let Some(h) = self.accept.take().filter(|_| woken) {
            let _ = h.join();
        }
    }
}

/// Accepts client connections (blocking: a connection is served as soon as it arrives)
/// until the stop flag is set; one thread per connection.
fn accept_loop(listener: TcpListener, shared: Arc<Shared>, upstream: String) {
    while !shared.stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) if shared.stop.load(Ordering::Relaxed) => drop(stream),
            Ok((stream, _)) => {
                shared.connections.fetch_add(1, Ordering::Relaxed);
                let (sh, up) = (shared.clone(), upstream.clone());
                let _ =
                    std::thread::Builder::new().name("faultproxy-conn".into()).spawn(move || serve(stream, &sh, &up));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// A parsed HTTP message: head lines and body.
struct Message {
    start: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Message {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Serialises with `Content-Length` set and `Connection` dropped (plus `extra`).
    fn to_bytes(&self, extra: &[(&str, &str)]) -> Vec<u8> {
        let mut out = format!("{}\r\n", self.start);
        for (k, v) in &self.headers {
            let skip = ["connection", "content-length", "transfer-encoding", "keep-alive"];
            if !skip.contains(&k.to_ascii_lowercase().as_str()) {
                out.push_str(&format!("{k}: {v}\r\n"));
            }
        }
        for (k, v) in extra {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str(&format!("Content-Length: {}\r\n\r\n", self.body.len()));
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

/// Reads one HTTP message; `Ok(None)` at a clean end of stream. With `to_eof`, a body
/// without `Content-Length` runs to the end of the stream.
fn read_message(r: &mut impl BufRead, to_eof: bool) -> std::io::Result<Option<Message>> {
    let mut start = String::new();
    if r.read_line(&mut start)? == 0 {
        return Ok(None);
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        if let Some((k, v)) = line.trim_end().split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
        if headers.len() > 200 {
            return Err(std::io::Error::other("too many headers"));
        }
    }
    let mut msg = Message { start: start.trim_end().to_string(), headers, body: Vec::new() };
    let chunked = msg.header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    if chunked {
        msg.body = read_chunked(r)?;
    } else if let Some(len) = msg.header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        if len > MAX_BODY {
            return Err(std::io::Error::other("body too large"));
        }
        msg.body = vec![0; len];
        r.read_exact(&mut msg.body)?;
    } else if to_eof {
        r.take(MAX_BODY as u64).read_to_end(&mut msg.body)?;
    }
    Ok(Some(msg))
}

fn read_chunked(r: &mut impl BufRead) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line)?;
        let size =
            usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16).map_err(std::io::Error::other)?;
        if body.len() + size > MAX_BODY {
            return Err(std::io::Error::other("body too large"));
        }
        let mut chunk = vec![0; size + 2];
        r.read_exact(&mut chunk)?;
        chunk.truncate(size);
        body.extend_from_slice(&chunk);
        if size == 0 {
            // Trailers end with an empty line.
            loop {
                let mut t = String::new();
                if r.read_line(&mut t)? == 0 || t.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
    }
}

/// The `Action` of an EC2 query form body.
pub fn action_of(body: &[u8]) -> String {
    String::from_utf8_lossy(body)
        .split('&')
        .find_map(|kv| kv.strip_prefix("Action=").map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// The [`ROUTE_PARAMS`] of an EC2 query form body, URL-decoded.
pub fn route_params(body: &[u8]) -> BTreeMap<String, String> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| ROUTE_PARAMS.contains(k))
        .map(|(k, v)| (k.to_string(), url_decode(v)))
        .collect()
}

/// Decodes `%XX` escapes and `+` (a space) of a form value; a bad escape is kept as is.
fn url_decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An EC2 XML error answer.
fn error_response(status: u16, code: &str, message: &str) -> Vec<u8> {
    let reason = match status {
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors><RequestID>faultproxy-{status}</RequestID></Response>"
    );
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/xml;charset=UTF-8\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Sends `req` to moto on a fresh connection and reads the answer.
fn forward(req: &Message, upstream: &str) -> std::io::Result<Message> {
    let mut up = TcpStream::connect(upstream)?;
    up.set_read_timeout(Some(Duration::from_secs(60)))?;
    up.write_all(&req.to_bytes(&[("Connection", "close")]))?;
    let mut r = BufReader::new(up);
    read_message(&mut r, true)?.ok_or_else(|| std::io::Error::other("moto closed the connection"))
}

/// Closes `stream` with a TCP reset (SO_LINGER 0).
fn reset(stream: TcpStream) {
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}

/// Serves one client connection until it closes, the proxy stops, or a fault ends it.
fn serve(stream: TcpStream, shared: &Shared, upstream: &str) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let Ok(read_half) = stream.try_clone() else { return };
    let mut reader = BufReader::new(read_half);
    let mut stream = stream;
    while !shared.stop.load(Ordering::Relaxed) {
        // Wait for the next request without consuming it (idle keep-alive connections).
        match reader.fill_buf() {
            Ok([]) => return,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
            Err(_) => return,
        }
        let _ = reader.get_ref().set_read_timeout(Some(Duration::from_secs(10)));
        let req = match read_message(&mut reader, false) {
            Ok(Some(r)) => r,
            _ => return,
        };
        let _ = reader.get_ref().set_read_timeout(Some(Duration::from_millis(200)));
        let action = action_of(&req.body);
        let verdict = shared.decide(&action, &req.body);
        let answer = match verdict.fault {
            None => {
                shared.pause(verdict.delay);
                shared.answer(&req, &action, verdict.seq, upstream)
            }
            Some(Fault::Throttle) => Ok(error_response(503, "RequestLimitExceeded", "Request limit exceeded.")),
            Some(Fault::Status(s)) => {
                let code = if s == 500 { "InternalError" } else { "Unavailable" };
                Ok(error_response(s, code, "injected by faultproxy"))
            }
            Some(Fault::Slow(d)) => {
                shared.pause(d);
                shared.answer(&req, &action, verdict.seq, upstream)
            }
            Some(Fault::Reset) => return reset(stream),
            Some(Fault::LoseAnswer) => {
                let _ = shared.answer(&req, &action, verdict.seq, upstream);
                return reset(stream);
            }
        };
        match answer {
            Ok(bytes) => {
                if stream.write_all(&bytes).is_err() {
                    return;
                }
            }
            Err(_) => {
                let _ = stream.write_all(&error_response(502, "InternalError", "faultproxy: moto unreachable"));
                let _ = stream.shutdown(Shutdown::Both);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in for moto that answers the n-th request (from 1) with the body `n`; it
    /// accepts until `requests` were served or 20 s passed.
    fn counting_upstream(requests: usize) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        listener.set_nonblocking(true).expect("nonblocking");
        std::thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(20);
            let mut served = 0;
            while served < requests && Instant::now() < end {
                let Ok((stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                served += 1;
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut r = BufReader::new(stream.try_clone().expect("clone"));
                if read_message(&mut r, false).ok().flatten().is_some() {
                    let body = served.to_string();
                    let answer = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                    let _ = (&stream).write_all(answer.as_bytes());
                }
            }
        });
        format!("http://{addr}")
    }

    /// Sends one form `body` through `proxy` on a fresh connection; the answer's body.
    fn call(proxy: &FaultProxy, body: &str) -> String {
        let mut s = TcpStream::connect(proxy.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let req = format!("POST / HTTP/1.1\r\nHost: ec2\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        s.write_all(req.as_bytes()).expect("send");
        let msg = read_message(&mut BufReader::new(s), false).expect("answer").expect("an answer");
        String::from_utf8_lossy(&msg.body).into_owned()
    }

    const R1: &str = "Action=DescribeRouteTables&Version=2016-11-15&Filter.1.Name=vpc-id&Filter.1.Value.1=vpc-1";
    const R2: &str = "Action=DescribeRouteTables&Version=2016-11-15&RouteTableId.1=rtb-2";
    const W: &str =
        "Action=ReplaceRoute&Version=2016-11-15&RouteTableId=rtb-1&DestinationCidrBlock=10.1.0.0%2F16&InstanceId=i-b";

    #[test]
    fn reads_answer_the_view_from_before_a_write_until_the_lag_after_the_last_write() {
        let proxy = FaultProxy::start(&counting_upstream(8)).expect("proxy");
        proxy.set_read_lag(Some(Duration::from_millis(1000)));
        assert_eq!((call(&proxy, R1), call(&proxy, R2)), ("1".into(), "2".into()));
        assert_eq!(call(&proxy, W), "3");
        assert_eq!((call(&proxy, R1), call(&proxy, R2)), ("1".into(), "2".into()), "frozen while the lag runs");
        assert_eq!(call(&proxy, "Action=DescribeVpcs"), "4", "other reads are not lagged");
        assert_eq!(call(&proxy, "Action=DescribeRouteTables&RouteTableId.1=rtb-9"), "5", "unseen bodies see moto");
        std::thread::sleep(Duration::from_millis(600));
        assert_eq!(call(&proxy, W), "6", "a write during the lag extends it");
        std::thread::sleep(Duration::from_millis(600));
        assert_eq!(call(&proxy, R1), "1", "1.2 s after the first write, 0.6 s after the last: still frozen");
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(call(&proxy, R1), "7", "the lag has run out");
        let calls = proxy.calls();
        let lagged: Vec<bool> = calls.iter().map(|c| c.lagged).collect();
        assert_eq!(lagged, [false, false, false, true, true, false, false, false, true, false]);
        let t = proxy.tally_since(calls[0].at);
        assert_eq!((t.reads, t.lagged_reads, t.writes), (8, 3, 2), "{t:?}");
        let w = &calls[2];
        assert!(w.is_route_write());
        assert_eq!((w.route(), w.target()), (Some(("rtb-1", "10.1.0.0/16")), Some("i-b")));
    }

    #[test]
    fn without_the_mode_writes_freeze_nothing() {
        let proxy = FaultProxy::start(&counting_upstream(3)).expect("proxy");
        assert_eq!((call(&proxy, R1), call(&proxy, W), call(&proxy, R1)), ("1".into(), "2".into(), "3".into()));
        assert!(proxy.calls().iter().all(|c| !c.lagged));
        assert_eq!(proxy.read_lag(), None);
    }

    #[test]
    fn form_values_are_decoded() {
        let p = route_params(
            b"Action=CreateRoute&DestinationIpv6CidrBlock=2001%3Adb8%3A%3A%2F32&NetworkInterfaceId=eni-1&X=%ZZ",
        );
        assert_eq!(p.get("DestinationIpv6CidrBlock").map(String::as_str), Some("2001:db8::/32"));
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!(url_decode("a+b%2"), "a b%2");
    }
}
