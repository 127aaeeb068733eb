//! A minimal HTTP/1.1 client over `std::net::TcpStream` for talking to the status server:
//! one request per connection (`Connection: close`), every read and write with a deadline.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::Context;

/// How long one read or write may block.
pub const IO_TIMEOUT: Duration = Duration::from_secs(15);

/// A parsed response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Header `(name, value)` pairs, names lower-case.
    pub headers: Vec<(String, String)>,
    /// The body as text (lossy UTF-8).
    pub body: String,
}

impl Response {
    /// The first header with this name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_str(&self.body)
            .with_context(|| format!("status {}: body is not JSON: {}", self.status, self.body))
    }
}

/// Connects to `127.0.0.1:port` with read and write deadlines.
pub fn connect(port: u16) -> anyhow::Result<TcpStream> {
    let stream =
        TcpStream::connect(("127.0.0.1", port)).with_context(|| format!("cannot connect to 127.0.0.1:{port}"))?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(stream)
}

/// Sends one request and reads the whole response.
pub fn request(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> anyhow::Result<Response> {
    let mut stream = connect(port)?;
    stream.write_all(request_head(method, path, &format!("127.0.0.1:{port}"), headers, body.len()).as_bytes())?;
    // The server may answer (e.g. 413) and close before reading a large body: a failed
    // write is then not an error as long as the response can be read.
    let _ = stream.write_all(body);
    read_response(&mut stream)
}

/// Reads a response until the server closes the connection.
pub fn read_response(stream: &mut TcpStream) -> anyhow::Result<Response> {
    // A reset after the response was sent (body not read by the server) ends it too.
    parse(&read_until_closed(stream, std::io::ErrorKind::ConnectionReset)?)
}

/// The head of a `Connection: close` request with a `Content-Length` and `headers`.
pub fn request_head(method: &str, path: &str, host: &str, headers: &[(&str, &str)], body_len: usize) -> String {
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {body_len}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head
}

/// Reads until the peer closes; an error of kind `ends_it` once some bytes arrived counts
/// as the close.
pub fn read_until_closed(stream: &mut impl Read, ends_it: std::io::ErrorKind) -> anyhow::Result<Vec<u8>> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ends_it && !raw.is_empty() => break,
            Err(e) => return Err(e).context("reading the response"),
        }
    }
    Ok(raw)
}

/// Parses a whole response (head and body).
pub fn parse(raw: &[u8]) -> anyhow::Result<Response> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").context("no complete response head")?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line: {status_line}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    if headers.iter().any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked")) {
        body = dechunk(&body)?;
    }
    Ok(Response { status, headers, body: String::from_utf8_lossy(&body).into_owned() })
}

fn dechunk(mut data: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    for _ in 0..100_000 {
        let line_end = data.windows(2).position(|w| w == b"\r\n").context("truncated chunk size")?;
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size =
            usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16).context("bad chunk size")?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        anyhow::ensure!(data.len() >= size + 2, "truncated chunk");
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
    anyhow::bail!("too many chunks")
}

/// `GET path` with an optional `Accept` header.
pub fn get(port: u16, path: &str, accept: Option<&str>) -> anyhow::Result<Response> {
    let headers: Vec<(&str, &str)> = accept.map(|a| ("Accept", a)).into_iter().collect();
    request(port, "GET", path, &headers, b"")
}

/// `POST path` with a JSON body.
pub fn post_json(port: u16, path: &str, body: &str) -> anyhow::Result<Response> {
    request(port, "POST", path, &[("Content-Type", "application/json")], body.as_bytes())
}
