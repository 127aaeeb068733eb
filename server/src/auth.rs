//! The status server's bearer token (`--http-token-file`) and the one rule saying which
//! requests need it.
//!
//! The rule is [`needs_token`]: every request whose method is not GET or HEAD (see
//! [`is_state_changing`]), whatever its path, so that a state-changing endpoint a plugin or
//! the host adds later is covered without being listed anywhere; with `--http-auth-all`,
//! every request. The same predicate decides at start whether an unauthenticated server
//! may listen off loopback ([`crate::security::check_exposure`]).
//!
//! The token is the file's content, trimmed. Only its SHA-256 digest is kept, and a
//! presented token is compared by digest in constant time ([`constant_time_eq`]): neither
//! its content nor its length shows in the answer time. The token is never logged, shown
//! or put in an error message; the request's `Authorization` header is not passed on to
//! plugin handlers.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use aws_lc_rs::digest::{digest, SHA256};
use axum::http::HeaderValue;
use subtle::ConstantTimeEq;

use vpcrouter_plugin_api::sync::{read, write};

/// True for methods that may change state: all but GET and HEAD. The one predicate for
/// "state-changing", used by [`needs_token`] and the start-up check.
pub fn is_state_changing(method: &str) -> bool {
    !matches!(method.to_ascii_uppercase().as_str(), "GET" | "HEAD")
}

/// True when a request with `method` must carry the token: a state-changing one, or any
/// with `--http-auth-all`.
pub fn needs_token(method: &str, auth_all: bool) -> bool {
    auth_all || is_state_changing(method)
}

/// True when `a` and `b` are equal. Compares their SHA-256 digests in constant time, so the
/// time taken depends on neither the content nor the lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    sha256(a).ct_eq(&sha256(b)).into()
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, bytes).as_ref());
    out
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No `Authorization: Bearer ...` header.
    Missing,
    /// A bearer token, but not the right one.
    Invalid,
}

/// The credentials of an `Authorization` header value if it is `Bearer <token>` (scheme
/// case-insensitive, surrounding whitespace ignored).
fn bearer_credentials(value: &[u8]) -> Option<&[u8]> {
    let value = value.trim_ascii();
    let split = value.iter().position(|b| *b == b' ' || *b == b'\t')?;
    let (scheme, rest) = value.split_at(split);
    let token = rest.trim_ascii();
    (scheme.eq_ignore_ascii_case(b"bearer") && !token.is_empty()).then_some(token)
}

/// The token of `--http-token-file`, as a digest; re-read on SIGHUP.
pub struct TokenFile {
    /// Where the token is read from: re-read from there on SIGHUP, named in the log.
    path: PathBuf,
    /// The token's SHA-256, never the token itself; replaced whole by a reload.
    digest: RwLock<[u8; 32]>,
}

impl std::fmt::Debug for TokenFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenFile").field("path", &self.path).finish_non_exhaustive()
    }
}

impl TokenFile {
    /// Reads the token from `path`. An unreadable or empty file is an error; a file group
    /// or others may read gets a warning (logged).
    pub fn load(path: &Path) -> Result<TokenFile, String> {
        let digest = read_token(path)?;
        Ok(TokenFile { path: path.to_path_buf(), digest: RwLock::new(digest) })
    }

    /// A token given directly (tests).
    pub fn from_token(token: &str) -> TokenFile {
        TokenFile { path: PathBuf::new(), digest: RwLock::new(sha256(token.trim().as_bytes())) }
    }

    /// Re-reads the file; on failure the old token stays in force.
    pub fn reload(&self) -> Result<(), String> {
        let digest = read_token(&self.path)?;
        *write(&self.digest) = digest;
        Ok(())
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Checks a request's `Authorization` header.
    pub fn check(&self, authorization: Option<&HeaderValue>) -> Result<(), Denied> {
        let token = authorization.and_then(|v| bearer_credentials(v.as_bytes())).ok_or(Denied::Missing)?;
        let expected = *read(&self.digest);
        if bool::from(sha256(token).ct_eq(&expected)) {
            Ok(())
        } else {
            Err(Denied::Invalid)
        }
    }
}

/// The largest token file read: a token is a few dozen bytes.
pub const MAX_TOKEN_FILE: u64 = 4 << 10;

/// The text of the file of option `flag` (a token file), at most [`MAX_TOKEN_FILE`] bytes of a
/// regular file (a FIFO or a device is refused at once); the message names the flag and the
/// path, never the content.
pub fn read_token_text(flag: &str, path: &Path) -> Result<String, String> {
    use vpcrouter_plugin_api::file::{read_text, FileError};
    read_text(path, MAX_TOKEN_FILE).map_err(|e| match e {
        FileError::TooLarge { .. } => format!(
            "{flag} {}: the file is larger than {} KiB, not a token; give the file that holds the token alone",
            path.display(),
            MAX_TOKEN_FILE >> 10
        ),
        other => crate::option_file_error(flag, path, other),
    })
}

/// The digest of the token in `path`; the messages name the flag and the path, never the
/// content.
fn read_token(path: &Path) -> Result<[u8; 32], String> {
    let shown = path.display();
    let text = read_token_text("--http-token-file", path)?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!("--http-token-file {shown}: the file is empty; put the token in it"));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "--http-token-file {shown}: the token must be printable ASCII without spaces (it is sent in an HTTP header)"
        ));
    }
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                "--http-token-file {shown} can be read by group or others (mode {:o}): chmod 600 it",
                mode & 0o777
            );
        }
    }
    Ok(sha256(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(v: &str) -> HeaderValue {
        HeaderValue::from_str(v).unwrap()
    }

    #[test]
    fn token_check_right_wrong_missing_case_and_whitespace() {
        let t = TokenFile::from_token("s3cr3t-Tok");
        assert_eq!(t.check(Some(&header("Bearer s3cr3t-Tok"))), Ok(()));
        assert_eq!(t.check(Some(&header("bearer s3cr3t-Tok"))), Ok(()), "the scheme is case-insensitive");
        assert_eq!(t.check(Some(&header("BEARER \t s3cr3t-Tok  "))), Ok(()), "whitespace around the token");
        assert_eq!(t.check(Some(&header("Bearer s3cr3t-tok"))), Err(Denied::Invalid), "the token is case-sensitive");
        assert_eq!(t.check(Some(&header("Bearer s3cr3t-Tok2"))), Err(Denied::Invalid));
        assert_eq!(t.check(Some(&header("Bearer s3cr3t"))), Err(Denied::Invalid), "a prefix is not the token");
        assert_eq!(t.check(Some(&header("Bearer s3cr3t -Tok"))), Err(Denied::Invalid));
        assert_eq!(t.check(None), Err(Denied::Missing));
        assert_eq!(t.check(Some(&header("Bearer"))), Err(Denied::Missing));
        assert_eq!(t.check(Some(&header("Bearer   "))), Err(Denied::Missing));
        assert_eq!(t.check(Some(&header("s3cr3t-Tok"))), Err(Denied::Missing), "no scheme");
        assert_eq!(t.check(Some(&header("Basic s3cr3t-Tok"))), Err(Denied::Missing), "another scheme");
        assert_eq!(t.check(Some(&header("Bearers3cr3t-Tok"))), Err(Denied::Missing));
    }

    #[test]
    fn constant_time_eq_compares_content_and_length() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"abc", b""));
        assert!(!constant_time_eq(&[0u8; 32], &[0u8; 33]));
    }

    #[test]
    fn state_changing_is_everything_but_get_and_head() {
        for m in ["POST", "PUT", "DELETE", "PATCH", "post", "OPTIONS"] {
            assert!(is_state_changing(m) && needs_token(m, false), "{m}");
        }
        for m in ["GET", "HEAD", "get"] {
            assert!(!is_state_changing(m) && !needs_token(m, false), "{m}");
            assert!(needs_token(m, true), "{m} with --http-auth-all");
        }
    }

    #[test]
    fn token_file_is_read_trimmed_checked_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let set = |text: &str, mode: u32| {
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        set("  first-token\n", 0o600);
        let t = TokenFile::load(&path).unwrap();
        assert_eq!(t.check(Some(&header("Bearer first-token"))), Ok(()));
        assert!(!format!("{t:?}").contains("first-token"));

        set("second-token\n", 0o600);
        t.reload().unwrap();
        assert_eq!(t.check(Some(&header("Bearer first-token"))), Err(Denied::Invalid));
        assert_eq!(t.check(Some(&header("Bearer second-token"))), Ok(()));

        // A failed re-read keeps the token in force; messages never show the content.
        set(" \n", 0o600);
        let err = t.reload().unwrap_err();
        assert!(err.contains("--http-token-file") && err.contains("empty"), "{err}");
        assert_eq!(t.check(Some(&header("Bearer second-token"))), Ok(()));
        set("two words", 0o600);
        let err = t.reload().unwrap_err();
        assert!(err.contains("printable ASCII") && !err.contains("two words"), "{err}");
        std::fs::remove_file(&path).unwrap();
        let err = TokenFile::load(&path).unwrap_err();
        assert!(err.contains(&format!("--http-token-file {}: cannot read it", path.display())), "{err}");
        assert_eq!(t.check(Some(&header("Bearer second-token"))), Ok(()));
    }

    #[test]
    fn fifos_devices_and_large_files_are_refused_at_once_and_the_old_token_stays() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "good-token").unwrap();
        let t = TokenFile::load(&path).unwrap();
        let started = std::time::Instant::now();
        std::fs::remove_file(&path).unwrap();
        assert!(std::process::Command::new("mkfifo").arg(&path).status().unwrap().success());
        let err = t.reload().unwrap_err();
        assert_eq!(
            err,
            format!(
                "--http-token-file: '{}' is a FIFO (named pipe), not a regular file: give the path of a regular file",
                path.display()
            )
        );
        assert!(TokenFile::load(&path).is_err());
        let err = TokenFile::load(Path::new("/dev/zero")).unwrap_err();
        assert!(err.contains("'/dev/zero' is a character device, not a regular file"), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, "x".repeat(MAX_TOKEN_FILE as usize + 1)).unwrap();
        let err = t.reload().unwrap_err();
        assert!(err.ends_with("the file is larger than 4 KiB, not a token; give the file that holds the token alone"));
        assert_eq!(t.check(Some(&header("Bearer good-token"))), Ok(()), "the old token stays in force");
    }
}
