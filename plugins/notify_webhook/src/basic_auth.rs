//! The `Authorization: Basic` header of a URL's `user:password@`, as curl sends it.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use percent_encoding::percent_decode_str;

/// `Basic base64(user:password)`, the userinfo's percent-escapes decoded.
pub fn header(userinfo: &str) -> String {
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    let mut credentials: Vec<u8> = percent_decode_str(user).collect();
    credentials.push(b':');
    credentials.extend(percent_decode_str(password));
    format!("Basic {}", STANDARD.encode(credentials))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_becomes_a_basic_authorization() {
        // RFC 7617's example.
        assert_eq!(header("Aladdin:open%20sesame"), "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
        assert_eq!(header("token"), format!("Basic {}", STANDARD.encode("token:")));
    }
}
