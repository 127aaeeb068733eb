//! The one parser of etcd endpoint lists (`--cluster-etcd`, `--etcd_endpoints`).

use std::fmt;
use std::net::Ipv6Addr;

/// etcd's usual client port, used when a URL names none.
pub const DEFAULT_PORT: u16 = 2379;

/// `http://` or `https://`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain text.
    Http,
    /// TLS.
    Https,
}

impl Scheme {
    /// `http` or `https`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// One etcd client URL, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `http` or `https`.
    pub scheme: Scheme,
    /// Host name or IP address (an IPv6 address without its brackets).
    pub host: String,
    /// The port (2379 when the URL named none).
    pub port: u16,
}

impl Endpoint {
    /// The URL the etcd client is given, e.g. `https://[::1]:2379`.
    pub fn url(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "{}://[{}]:{}", self.scheme.as_str(), self.host, self.port)
        } else {
            write!(f, "{}://{}:{}", self.scheme.as_str(), self.host, self.port)
        }
    }
}

/// Why an endpoint list cannot be used. The text says what was wrong and what to pass; the
/// caller puts the option's name in front.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// Nothing but commas and blanks.
    #[error(
        "no etcd endpoint given; pass the etcd client URLs, comma-separated, e.g. \
         https://10.0.0.1:2379,https://10.0.0.2:2379"
    )]
    NoEndpoints,
    /// A scheme other than http/https.
    #[error("'{0}': unknown scheme; use http://host:port, https://host:port or a bare host:port")]
    Scheme(String),
    /// A path, query or fragment after the authority.
    #[error("'{0}' has a path, query or fragment; pass only scheme://host:port, e.g. https://10.0.0.1:2379")]
    Path(String),
    /// `user[:password]@` in the URL (shown with the user info removed).
    #[error(
        "'{0}' holds user info; pass the user with --etcd-user and the password with \
         --etcd-password-file or VPCROUTER_ETCD_PASSWORD, never in the URL"
    )]
    Userinfo(String),
    /// No host, or one with characters a host name cannot have.
    #[error("'{0}' names no usable host; pass host:port, e.g. 10.0.0.1:2379 or etcd-1.example.com:2379")]
    Host(String),
    /// An IPv6 address without brackets.
    #[error("'{0}': an IPv6 address must be in brackets, e.g. [::1]:2379")]
    Ipv6Brackets(String),
    /// Not a port number.
    #[error("'{item}': '{port}' is not a port; pass a number from 1 to 65535 (etcd's client port is usually 2379)")]
    Port {
        /// The endpoint as given.
        item: String,
        /// Its port part.
        port: String,
    },
    /// A bare host without a port.
    #[error("'{0}' has no port; pass host:port (etcd's client port is usually 2379) or a URL")]
    NoPort(String),
    /// http:// and https:// in one list.
    #[error("the endpoints mix http:// and https:// ('{http}' and '{https}'); use one scheme for all")]
    Mixed {
        /// The first http endpoint.
        http: String,
        /// The first https endpoint.
        https: String,
    },
}

/// Parses a comma-separated endpoint list: `http://host[:port]`, `https://host[:port]`, or a
/// bare `host:port`, which gets `bare` (https when TLS files are given, else http). IPv6
/// addresses go in brackets. Blanks around items and empty items are ignored.
pub fn parse_endpoints(raw: &str, bare: Scheme) -> Result<Vec<Endpoint>, EndpointError> {
    let list: Vec<Endpoint> = raw
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| parse_one(s, bare))
        .collect::<Result<_, _>>()?;
    if list.is_empty() {
        return Err(EndpointError::NoEndpoints);
    }
    let http = list.iter().find(|e| e.scheme == Scheme::Http);
    let https = list.iter().find(|e| e.scheme == Scheme::Https);
    if let (Some(http), Some(https)) = (http, https) {
        return Err(EndpointError::Mixed { http: http.url(), https: https.url() });
    }
    Ok(list)
}

fn parse_one(item: &str, bare: Scheme) -> Result<Endpoint, EndpointError> {
    let (scheme, rest, is_bare) = match item.split_once("://") {
        Some(("http", rest)) => (Scheme::Http, rest, false),
        Some(("https", rest)) => (Scheme::Https, rest, false),
        Some(_) => return Err(EndpointError::Scheme(redact_userinfo(item))),
        None => (bare, item, true),
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if let Some(at) = authority.rfind('@') {
        // The user info may hold a password: never repeat it.
        let shown = item.replacen(&authority[..at], "…", 1);
        return Err(EndpointError::Userinfo(shown));
    }
    if authority.contains(['/', '?', '#']) {
        return Err(EndpointError::Path(item.to_string()));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (addr, after) = v6.split_once(']').ok_or_else(|| EndpointError::Host(item.to_string()))?;
        addr.parse::<Ipv6Addr>().map_err(|_| EndpointError::Host(item.to_string()))?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(|| EndpointError::Host(item.to_string()))?),
        };
        (addr, port)
    } else if authority.matches(':').count() > 1 {
        return Err(EndpointError::Ipv6Brackets(item.to_string()));
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let host_ok = !host.is_empty()
        && (host.contains(':') || host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')));
    if !host_ok {
        return Err(EndpointError::Host(item.to_string()));
    }
    let port = match port {
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && !p.starts_with('+') => n,
            _ => return Err(EndpointError::Port { item: item.to_string(), port: p.to_string() }),
        },
        None if is_bare => return Err(EndpointError::NoPort(item.to_string())),
        None => DEFAULT_PORT,
    };
    Ok(Endpoint { scheme, host: host.to_string(), port })
}

/// `item` with anything between `://` and `@` replaced (it may be a password).
fn redact_userinfo(item: &str) -> String {
    match (item.find("://"), item.rfind('@')) {
        (Some(s), Some(at)) if at > s + 3 => format!("{}…{}", &item[..s + 3], &item[at..]),
        (None, Some(at)) => format!("…{}", &item[at..]),
        _ => item.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(raw: &str, bare: Scheme) -> Vec<String> {
        parse_endpoints(raw, bare).unwrap().iter().map(Endpoint::url).collect()
    }

    #[test]
    fn good_lists() {
        let cases: &[(&str, Scheme, &[&str])] = &[
            ("http://127.0.0.1:2379", Scheme::Http, &["http://127.0.0.1:2379"]),
            (
                " http://10.0.0.1:2379/ , http://etcd-2:2379,",
                Scheme::Http,
                &["http://10.0.0.1:2379", "http://etcd-2:2379"],
            ),
            ("https://a:1,https://b", Scheme::Http, &["https://a:1", "https://b:2379"]),
            ("10.0.0.2:2379", Scheme::Http, &["http://10.0.0.2:2379"]),
            ("10.0.0.2:2379, https://h:2", Scheme::Https, &["https://10.0.0.2:2379", "https://h:2"]),
            ("[::1]:2379,http://[2001:db8::5]", Scheme::Http, &["http://[::1]:2379", "http://[2001:db8::5]:2379"]),
            ("https://[::1]:12379/", Scheme::Http, &["https://[::1]:12379"]),
            ("http://my_etcd.local:65535", Scheme::Http, &["http://my_etcd.local:65535"]),
        ];
        for (raw, bare, want) in cases {
            assert_eq!(urls(raw, *bare), *want, "{raw}");
        }
        let e = &parse_endpoints("[::1]:1", Scheme::Https).unwrap()[0];
        assert_eq!((e.scheme, e.host.as_str(), e.port), (Scheme::Https, "::1", 1));
    }

    #[test]
    fn bad_lists_say_what_was_wrong_and_what_to_pass() {
        let cases: &[(&str, &str)] = &[
            ("", "no etcd endpoint given; pass the etcd client URLs, comma-separated, e.g. https://10.0.0.1:2379,https://10.0.0.2:2379"),
            (" , ,", "no etcd endpoint given; pass the etcd client URLs, comma-separated, e.g. https://10.0.0.1:2379,https://10.0.0.2:2379"),
            ("ftp://h:1", "'ftp://h:1': unknown scheme; use http://host:port, https://host:port or a bare host:port"),
            ("HTTP://h:1", "'HTTP://h:1': unknown scheme; use http://host:port, https://host:port or a bare host:port"),
            ("unix://a:b@h", "'unix://…@h': unknown scheme; use http://host:port, https://host:port or a bare host:port"),
            ("http://h:2379/v3", "'http://h:2379/v3' has a path, query or fragment; pass only scheme://host:port, e.g. https://10.0.0.1:2379"),
            ("http://h:2379?x=1", "'http://h:2379?x=1' has a path, query or fragment; pass only scheme://host:port, e.g. https://10.0.0.1:2379"),
            ("https://root:s3cret@h:2379", "'https://…@h:2379' holds user info; pass the user with --etcd-user and the password with --etcd-password-file or VPCROUTER_ETCD_PASSWORD, never in the URL"),
            ("u@h:2379", "'…@h:2379' holds user info; pass the user with --etcd-user and the password with --etcd-password-file or VPCROUTER_ETCD_PASSWORD, never in the URL"),
            ("http://", "'http://' names no usable host; pass host:port, e.g. 10.0.0.1:2379 or etcd-1.example.com:2379"),
            ("http://:2379", "'http://:2379' names no usable host; pass host:port, e.g. 10.0.0.1:2379 or etcd-1.example.com:2379"),
            ("http://h 1:2379", "'http://h 1:2379' names no usable host; pass host:port, e.g. 10.0.0.1:2379 or etcd-1.example.com:2379"),
            ("http://[::g]:1", "'http://[::g]:1' names no usable host; pass host:port, e.g. 10.0.0.1:2379 or etcd-1.example.com:2379"),
            ("http://[::1]x", "'http://[::1]x' names no usable host; pass host:port, e.g. 10.0.0.1:2379 or etcd-1.example.com:2379"),
            ("::1:2379", "'::1:2379': an IPv6 address must be in brackets, e.g. [::1]:2379"),
            ("http://h:port", "'http://h:port': 'port' is not a port; pass a number from 1 to 65535 (etcd's client port is usually 2379)"),
            ("http://h:0", "'http://h:0': '0' is not a port; pass a number from 1 to 65535 (etcd's client port is usually 2379)"),
            ("http://h:70000", "'http://h:70000': '70000' is not a port; pass a number from 1 to 65535 (etcd's client port is usually 2379)"),
            ("http://h:", "'http://h:': '' is not a port; pass a number from 1 to 65535 (etcd's client port is usually 2379)"),
            ("etcd", "'etcd' has no port; pass host:port (etcd's client port is usually 2379) or a URL"),
            ("http://a:1,https://b:2", "the endpoints mix http:// and https:// ('http://a:1' and 'https://b:2'); use one scheme for all"),
        ];
        for (raw, want) in cases {
            let got = parse_endpoints(raw, Scheme::Http).unwrap_err().to_string();
            assert_eq!(got, *want, "{raw}");
            // The same inside a list of good ones.
            if !raw.trim_matches([' ', ',']).is_empty() && !raw.contains(",") {
                let got = parse_endpoints(&format!("http://ok:2379,{raw}"), Scheme::Http).unwrap_err().to_string();
                if !want.starts_with("the endpoints mix") {
                    assert_eq!(got, *want, "in a list: {raw}");
                }
            }
        }
        // A bare host:port among https URLs is https when TLS files are given, so no mixing.
        assert!(parse_endpoints("https://a:1,b:2", Scheme::Https).is_ok());
        assert!(matches!(parse_endpoints("https://a:1,b:2", Scheme::Http), Err(EndpointError::Mixed { .. })));
    }
}
