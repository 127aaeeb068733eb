//! A drain: one router taken out of service, and the reason an operator gives for it.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::SystemTime;

/// The longest reason kept, in characters.
pub const MAX_REASON: usize = 256;

/// One drained router.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Drain {
    /// The router, as the route spec names it.
    pub ip: Ipv4Addr,
    /// When it was drained (RFC 3339, UTC).
    pub since: String,
    /// Why, as the operator said (may be empty).
    #[serde(default)]
    pub reason: String,
}

impl Drain {
    /// A drain of `ip` starting now.
    pub fn now(ip: Ipv4Addr, reason: &str) -> Drain {
        Drain { ip, since: vpcrouter_plugin_api::time::rfc3339(SystemTime::now()), reason: reason.to_string() }
    }
}

/// The drains in force, by router.
pub type DrainSet = BTreeMap<Ipv4Addr, Drain>;

/// Checks a drain reason: at most [`MAX_REASON`] characters, no control characters.
pub fn check_reason(reason: &str) -> Result<String, String> {
    let reason = reason.trim();
    if reason.chars().count() > MAX_REASON {
        return Err(format!("the reason is longer than {MAX_REASON} characters"));
    }
    if reason.chars().any(char::is_control) {
        return Err("the reason contains control characters (newlines, tabs, ...)".into());
    }
    Ok(reason.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_short_single_lines() {
        assert_eq!(check_reason("  patching  ").unwrap(), "patching");
        assert!(check_reason("a\nb").is_err());
        assert!(check_reason(&"x".repeat(MAX_REASON + 1)).is_err());
        assert!(check_reason(&"é".repeat(MAX_REASON)).is_ok());
    }
}
