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

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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
}

impl Call {
    /// True when the call reached moto (EC2 applied it), whatever the client was answered.
    pub fn forwarded(&self) -> bool {
        matches!(self.fault, None | Some(Fault::Slow(_)) | Some(Fault::LoseAnswer))
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
}

impl Tally {
    fn add(&mut self, c: &Call) {
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
}

#[derive(Default)]
struct Shared {
    policy: Mutex<Policy>,
    model: Mutex<Option<Arc<Limiter>>>,
    calls: Mutex<Vec<Call>>,
    rng: Mutex<u64>,
    connections: AtomicU64,
    stop: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// Picks the fault (the policy's, else the model's) or the delay for one call of
    /// `action`, and records the call.
    fn decide(&self, action: &str) -> Verdict {
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
        lock(&self.calls).push(Call { at: Instant::now(), action: action.to_string(), fault: fault.clone(), modelled });
        Verdict { fault, delay }
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
        let verdict = shared.decide(&action_of(&req.body));
        let answer = match verdict.fault {
            None => {
                shared.pause(verdict.delay);
                forward(&req, upstream).map(|m| m.to_bytes(&[]))
            }
            Some(Fault::Throttle) => Ok(error_response(503, "RequestLimitExceeded", "Request limit exceeded.")),
            Some(Fault::Status(s)) => {
                let code = if s == 500 { "InternalError" } else { "Unavailable" };
                Ok(error_response(s, code, "injected by faultproxy"))
            }
            Some(Fault::Slow(d)) => {
                shared.pause(d);
                forward(&req, upstream).map(|m| m.to_bytes(&[]))
            }
            Some(Fault::Reset) => return reset(stream),
            Some(Fault::LoseAnswer) => {
                let _ = forward(&req, upstream);
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
