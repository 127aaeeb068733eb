//! The state file, `drains.json` in `--state-dir`: where drains live when vpcrouter runs
//! alone. Read once at start; written atomically before a change is in force.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::drain::{Drain, DrainSet};

/// The state file's name in `--state-dir`.
pub const STATE_FILE: &str = "drains.json";
/// The largest state file read or written: a drain takes about 100 bytes, at most about
/// 1.1 KiB with the longest reason, so this holds over 900 drains of the longest reasons
/// (about 9,000 with short ones), far more routers than a VPC has.
pub const MAX_STATE_FILE: u64 = 1 << 20;

/// The state file's content.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    /// The format's version, 1: a file of another version is refused, not misread.
    version: u32,
    /// The drains in force, one per router.
    drains: Vec<Drain>,
}

/// Why drains could not be loaded or changed.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    /// The state file exists but cannot be read.
    #[error("{}: cannot read the drain state file: {error}; {}", path.display(), read_advice(error))]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// Something else than a regular file has the state file's name.
    #[error("{}: the drain state file is {kind}, not a regular file; remove it (vpcrouter writes the file itself) to start with no router drained", path.display())]
    NotRegular {
        /// The path.
        path: PathBuf,
        /// What it is ("a FIFO (named pipe)", "a directory", ...).
        kind: &'static str,
    },
    /// The state file is larger than vpcrouter ever writes it.
    #[error("{}: the drain state file is larger than {} MiB, more than vpcrouter writes; it is not vpcrouter's: move it away to start with no router drained", path.display(), MAX_STATE_FILE >> 20)]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The state file is not what vpcrouter wrote.
    #[error("{}: not a drain state file ({error}); fix it, or remove it to start with no router drained", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        error: String,
    },
    /// The drain could not be stored: it is not in force.
    #[error("cannot store the drain state in {}: {error}; the change is not made: give vpcrouter a writable --state-dir", path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// The drains would not fit in the state file.
    #[error("cannot store {count} drains: the drain state file would be larger than {} MiB; the change is not made: undrain the routers that are back in service, or use shorter reasons", MAX_STATE_FILE >> 20)]
    Full {
        /// How many drains the file would hold.
        count: usize,
    },
    /// Cluster mode: etcd did not take the change.
    #[error("cluster mode: the drain state is kept in etcd, and {0}; the change is not made")]
    Cluster(String),
}

/// What to do about a state file the system refuses to read.
fn read_advice(error: &std::io::Error) -> &'static str {
    match error.kind() {
        std::io::ErrorKind::PermissionDenied => {
            "fix its permissions: the user vpcrouter runs as must read it (it lists the drained routers)"
        }
        _ => "check the file system of --state-dir (the file lists the drained routers)",
    }
}

/// Reads a state file (a regular file of at most [`MAX_STATE_FILE`] bytes, never waiting on
/// a FIFO); a missing one means nothing is drained.
pub fn load(path: &Path) -> Result<DrainSet, DrainError> {
    use vpcrouter_plugin_api::file::{read_text, FileError};
    let corrupt = |error: String| DrainError::Corrupt { path: path.to_path_buf(), error };
    let text = match read_text(path, MAX_STATE_FILE) {
        Ok(t) => t,
        // No file (or no directory to hold one): nothing is drained.
        Err(FileError::Io { source, .. })
            if matches!(source.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory) =>
        {
            return Ok(DrainSet::new())
        }
        Err(FileError::Io { source, .. }) => return Err(DrainError::Read { path: path.to_path_buf(), error: source }),
        Err(FileError::NotRegular { kind, .. }) => {
            return Err(DrainError::NotRegular { path: path.to_path_buf(), kind })
        }
        Err(FileError::TooLarge { .. }) => return Err(DrainError::TooLarge { path: path.to_path_buf() }),
        Err(FileError::NotUtf8 { offset, .. }) => {
            return Err(corrupt(format!("not UTF-8 text: invalid byte at offset {offset}")))
        }
    };
    let file: StateFile = serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
    if file.version != 1 {
        return Err(corrupt(format!("version {} is not known to this vpcrouter (it writes version 1)", file.version)));
    }
    let mut set = DrainSet::new();
    for d in file.drains {
        if set.insert(d.ip, d.clone()).is_some() {
            return Err(corrupt(format!("{} is listed twice", d.ip)));
        }
    }
    Ok(set)
}

/// Writes `drains` to `dir`/[`STATE_FILE`] atomically: a temporary file in the same
/// directory, fsync, rename over the file, fsync of the directory. Mode 0644. The temporary
/// file is created new (`O_EXCL`): whatever has its name (a FIFO, a symlink) is removed
/// first, never opened, so nothing can make the write block or land elsewhere.
pub fn save(dir: &Path, drains: &DrainSet) -> Result<(), DrainError> {
    let path = dir.join(STATE_FILE);
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |error| DrainError::Write { path, error }
    };
    std::fs::create_dir_all(dir).map_err(err(dir))?;
    let file = StateFile { version: 1, drains: drains.values().cloned().collect() };
    let mut text = serde_json::to_string_pretty(&file).map_err(|e| err(&path)(std::io::Error::other(e)))?;
    text.push('\n');
    if text.len() as u64 > MAX_STATE_FILE {
        return Err(DrainError::Full { count: drains.len() });
    }
    let tmp = dir.join(format!(".{STATE_FILE}.{}.tmp", std::process::id()));
    let written = (|| {
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o644).open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        // O_DIRECTORY: a FIFO swapped in for the directory is refused, not waited on.
        std::fs::OpenOptions::new().read(true).custom_flags(O_DIRECTORY).open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map_err(err(&path))
}

/// `O_DIRECTORY` on Linux x86_64.
#[cfg(target_arch = "x86_64")]
const O_DIRECTORY: i32 = 0o200000;
/// `O_DIRECTORY` on Linux aarch64.
#[cfg(target_arch = "aarch64")]
const O_DIRECTORY: i32 = 0o40000;

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::drain::MAX_REASON;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn a_corrupt_state_file_is_one_line_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        for bad in [
            "{",
            r#"{"version": 1, "drains": [{"ip": "10.0.0.300", "since": "x"}]}"#,
            r#"{"version": 2, "drains": []}"#,
            r#"{"version": 1, "drains": [], "x": 1}"#,
        ] {
            std::fs::write(&path, bad).unwrap();
            let e = load(&path).unwrap_err().to_string();
            assert!(e.starts_with(&format!("{}: not a drain state file (", path.display())), "{e}");
            assert!(!e.contains('\n') && e.ends_with("remove it to start with no router drained"), "{e}");
        }
        std::fs::write(
            &path,
            r#"{"version": 1, "drains": [{"ip": "10.0.0.1", "since": "a"}, {"ip": "10.0.0.1", "since": "b"}]}"#,
        )
        .unwrap();
        assert!(load(&path).unwrap_err().to_string().contains("10.0.0.1 is listed twice"));
    }

    fn mkfifo(path: &Path) {
        assert!(std::process::Command::new("mkfifo").arg(path).status().unwrap().success());
    }

    #[test]
    fn a_state_file_that_is_no_file_or_too_large_says_what_to_do_for_that_cause() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        let mut seen = Vec::new();
        let mut open = || {
            let e = load(&path).unwrap_err().to_string();
            seen.push(e.clone());
            e
        };
        let started = std::time::Instant::now();
        mkfifo(&path);
        let e = open();
        assert!(started.elapsed() < std::time::Duration::from_secs(1), "no wait for a writer");
        assert_eq!(
            e,
            format!(
                "{}: the drain state file is a FIFO (named pipe), not a regular file; remove it (vpcrouter writes \
                 the file itself) to start with no router drained",
                path.display()
            )
        );
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        let e = open();
        assert!(e.contains("is a directory, not a regular file; remove it"), "{e}");
        std::fs::remove_dir(&path).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
        let e = open();
        assert!(e.contains("is a character device, not a regular file"), "{e}");
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, vec![b' '; (MAX_STATE_FILE + 1) as usize]).unwrap();
        let e = open();
        assert!(e.contains("larger than 1 MiB, more than vpcrouter writes") && e.ends_with("no router drained"), "{e}");
        std::fs::write(&path, b"{\"version\": 1, \"drains\": [\xff]}").unwrap();
        let e = open();
        assert!(e.contains("not UTF-8 text: invalid byte at offset 26") && e.ends_with("no router drained"), "{e}");
        std::fs::write(&path, b"{\"version\": 1,").unwrap();
        let e = open();
        assert!(
            e.contains("not a drain state file (")
                && e.ends_with("fix it, or remove it to start with no router drained"),
            "{e}"
        );
        for e in seen {
            assert!(!e.contains("permissions") && !e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn the_state_file_is_never_written_larger_than_it_may_be_read() {
        let dir = tempfile::tempdir().unwrap();
        let reason = "\u{1d11e}".repeat(MAX_REASON);
        let full: DrainSet = (0..1100u32)
            .map(|i| {
                let ip = Ipv4Addr::from(0x0a00_0000 + i);
                (ip, Drain::now(ip, &reason))
            })
            .collect();
        let e = save(dir.path(), &full).unwrap_err().to_string();
        assert!(e.starts_with("cannot store 1100 drains: the drain state file would be larger than 1 MiB"), "{e}");
        assert!(!dir.path().join(STATE_FILE).exists());
        // The largest set that fits is read back.
        let fits: DrainSet = full.into_iter().take(900).collect();
        save(dir.path(), &fits).unwrap();
        assert_eq!(load(&dir.path().join(STATE_FILE)).unwrap().len(), 900);
    }

    #[test]
    fn a_fifo_in_place_of_the_temporary_file_does_not_block_the_write() {
        let dir = tempfile::tempdir().unwrap();
        mkfifo(&dir.path().join(format!(".{STATE_FILE}.{}.tmp", std::process::id())));
        let started = std::time::Instant::now();
        let set: DrainSet = [(ip("10.0.0.1"), Drain::now(ip("10.0.0.1"), "x"))].into();
        save(dir.path(), &set).unwrap();
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        assert_eq!(load(&dir.path().join(STATE_FILE)).unwrap(), set);
    }
}
