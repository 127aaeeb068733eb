//! Reading a file given by a user: only a regular file, never more than a limit, never a hang.
//!
//! A path given on a command line may name anything: a FIFO (opening it for reading blocks
//! until a writer comes), `/dev/zero` (endless), a directory, a 100 MB file. [`read_file`]
//! opens without blocking, refuses anything that is not a regular file, and refuses a file
//! larger than the limit before reading it (and stops reading at the limit if it grows
//! meanwhile). Every error names the path, what was wrong and what to do.

use std::fmt;
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// `O_NONBLOCK` on Linux (every architecture the host runs on): opening a FIFO for reading
/// returns at once instead of waiting for a writer. Regular files ignore it.
const O_NONBLOCK: i32 = 0o4000;

/// Why a file could not be read.
#[derive(Debug)]
pub enum FileError {
    /// It could not be opened or read (missing, permission, I/O).
    Io {
        /// The path as given.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// It is a FIFO, device, socket or directory.
    NotRegular {
        /// The path as given.
        path: PathBuf,
        /// What it is instead ("a FIFO", "a directory", ...).
        kind: &'static str,
    },
    /// It is larger than the limit.
    TooLarge {
        /// The path as given.
        path: PathBuf,
        /// The limit in bytes.
        limit: u64,
    },
    /// It is not UTF-8 text ([`read_text`] only).
    NotUtf8 {
        /// The path as given.
        path: PathBuf,
        /// Byte offset of the first invalid byte.
        offset: usize,
    },
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { path, source } => write!(f, "cannot read '{}': {source}", path.display()),
            Self::NotRegular { path, kind } => {
                write!(f, "'{}' is {kind}, not a regular file: give the path of a regular file", path.display())
            }
            Self::TooLarge { path, limit } => write!(
                f,
                "'{}' is larger than the limit of {}: check that it is the right file",
                path.display(),
                human_bytes(*limit)
            ),
            Self::NotUtf8 { path, offset } => {
                write!(f, "'{}' is not UTF-8 text (invalid byte at offset {offset}): save it as UTF-8", path.display())
            }
        }
    }
}

impl std::error::Error for FileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl FileError {
    /// True when the file does not exist (a caller may treat that as "empty" or "not yet").
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

/// `1 MiB`, `64 MiB`, `512 KiB`, or bytes.
fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} bytes"),
    }
}

/// What a non-regular file is, in words.
fn kind_of(meta: &Metadata) -> Option<&'static str> {
    let t = meta.file_type();
    if t.is_file() {
        None
    } else if t.is_dir() {
        Some("a directory")
    } else if t.is_fifo() {
        Some("a FIFO (named pipe)")
    } else if t.is_char_device() {
        Some("a character device")
    } else if t.is_block_device() {
        Some("a block device")
    } else if t.is_socket() {
        Some("a socket")
    } else {
        Some("not a regular file")
    }
}

/// Opens `path` (following symlinks) without blocking and checks that it is a regular file.
fn open_regular(path: &Path) -> Result<(File, Metadata), FileError> {
    let io = |source| FileError::Io { path: path.to_path_buf(), source };
    let file = std::fs::OpenOptions::new().read(true).custom_flags(O_NONBLOCK).open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if let Some(kind) = kind_of(&meta) {
        return Err(FileError::NotRegular { path: path.to_path_buf(), kind });
    }
    Ok((file, meta))
}

/// Checks that `path` is a regular file of at most `limit` bytes, without reading it.
pub fn check_file(path: &Path, limit: u64) -> Result<(), FileError> {
    let (_, meta) = open_regular(path)?;
    if meta.len() > limit {
        return Err(FileError::TooLarge { path: path.to_path_buf(), limit });
    }
    Ok(())
}

/// Reads the whole regular file at `path`, of at most `limit` bytes.
pub fn read_file(path: &Path, limit: u64) -> Result<Vec<u8>, FileError> {
    let (file, meta) = open_regular(path)?;
    let too_large = || FileError::TooLarge { path: path.to_path_buf(), limit };
    if meta.len() > limit {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // One byte past the limit tells a file that grew since the check.
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|source| FileError::Io { path: path.to_path_buf(), source })?;
    if bytes.len() as u64 > limit {
        return Err(too_large());
    }
    Ok(bytes)
}

/// [`read_file`], as UTF-8 text.
pub fn read_text(path: &Path, limit: u64) -> Result<String, FileError> {
    let bytes = read_file(path, limit)?;
    String::from_utf8(bytes)
        .map_err(|e| FileError::NotUtf8 { path: path.to_path_buf(), offset: e.utf8_error().valid_up_to() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn a_regular_file_within_the_limit_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        std::fs::write(&path, "{}").unwrap();
        assert_eq!(read_text(&path, 2).unwrap(), "{}");
        check_file(&path, 2).unwrap();
    }

    #[test]
    fn a_file_over_the_limit_is_refused_naming_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        std::fs::write(&path, vec![b' '; 3 << 10]).unwrap();
        let e = read_file(&path, 2 << 10).unwrap_err();
        assert!(e.to_string().contains("larger than the limit of 2 KiB"), "{e}");
        assert!(check_file(&path, 2 << 10).is_err());
    }

    #[test]
    fn endless_devices_and_directories_are_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        for (path, kind) in [(Path::new("/dev/zero"), "character device"), (dir.path(), "directory")] {
            let e = read_file(path, 1 << 20).unwrap_err();
            assert!(e.to_string().contains(kind), "{e}");
            assert!(e.to_string().contains("not a regular file"), "{e}");
        }
    }

    #[test]
    fn a_fifo_is_refused_without_waiting_for_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fifo.json");
        let status = std::process::Command::new("mkfifo").arg(&path).status().unwrap();
        assert!(status.success());
        let t = Instant::now();
        let e = read_text(&path, 1 << 20).unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(1));
        assert!(e.to_string().contains("FIFO"), "{e}");
    }

    #[test]
    fn invalid_utf8_names_the_offset_and_missing_files_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("latin1.json");
        std::fs::write(&path, b"{\"caf\xe9\": 1}").unwrap();
        let e = read_text(&path, 100).unwrap_err();
        assert!(e.to_string().contains("not UTF-8 text (invalid byte at offset 5)"), "{e}");
        assert!(!e.is_not_found());
        assert!(read_text(&dir.path().join("missing"), 10).unwrap_err().is_not_found());
    }
}
