//! The checks a plugin file passes before the dynamic loader sees it: a regular file of a
//! sane size, owned and writable only by root or the user vpcrouter runs as (unless
//! `--allow-insecure-plugins`), and a complete shared library for this machine.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::error::LoadError;

/// The largest plugin library read (for the ELF check before the dynamic loader maps it):
/// a debug build of the largest bundled plugin is about 35 MB, a release build a few MB.
pub const MAX_PLUGIN_BYTES: u64 = 256 << 20;

/// A [`vpcrouter_plugin_api::file`] error about the plugin file at `path`.
pub(crate) fn file_error(path: &Path, e: vpcrouter_plugin_api::file::FileError) -> LoadError {
    use vpcrouter_plugin_api::file::FileError;
    match e {
        FileError::NotRegular { kind, .. } => LoadError::NotRegular { path: path.into(), kind },
        FileError::TooLarge { limit, .. } => LoadError::NotAPlugin {
            path: path.into(),
            reason: format!("it is larger than {} MiB, more than any plugin library", limit >> 20),
        },
        FileError::Io { source, .. } => LoadError::NotAPlugin { path: path.into(), reason: source.to_string() },
        other => LoadError::NotAPlugin { path: path.into(), reason: other.to_string() },
    }
}

/// The checks `--allow-insecure-plugins` skips, on the (canonical) file, its directory and
/// every directory above: nobody could replace the code the host loads.
pub(crate) fn check_permissions(path: &Path) -> Result<(), LoadError> {
    check_ownership(path, rustix::process::geteuid().as_raw())
}

/// The file and its directory: nobody but the owner may write them, and the owner is root or
/// the user vpcrouter runs as (as ssh's StrictModes). The directories above: the same owners,
/// and nobody else may write them unless they have the sticky bit (`/tmp`), which keeps
/// others from renaming what they hold.
fn check_ownership(path: &Path, me: u32) -> Result<(), LoadError> {
    use std::os::unix::fs::MetadataExt;
    let dir = path.parent().unwrap_or(Path::new("/"));
    let checked = [("the file", path), ("its directory", dir)].into_iter();
    let above = dir.ancestors().skip(1).map(|a| ("a directory above it", a));
    for (what, target) in checked.chain(above) {
        let meta = std::fs::metadata(target)
            .map_err(|e| LoadError::NotAPlugin { path: path.into(), reason: e.to_string() })?;
        let mode = meta.permissions().mode() & 0o7777;
        let sticky = mode & 0o1000 != 0;
        if mode & 0o022 != 0 {
            if target == path || target == dir {
                return Err(LoadError::Insecure { path: path.into(), what, target: target.into(), mode });
            }
            if !sticky {
                return Err(LoadError::InsecureAncestor { path: path.into(), target: target.into(), mode });
            }
        }
        let owner = meta.uid();
        if owner != 0 && owner != me {
            return Err(LoadError::NotOwned { path: path.into(), what, target: target.into(), owner, me });
        }
    }
    Ok(())
}

/// ELF machine number of the running program.
#[cfg(target_arch = "x86_64")]
const ELF_MACHINE: u16 = 62;
/// ELF machine number of the running program.
#[cfg(target_arch = "aarch64")]
const ELF_MACHINE: u16 = 183;

/// Checks that `data` (a library file's content) is a complete 64-bit little-endian shared
/// object for this machine before the dynamic loader sees it: the loader maps segments by the offsets the file
/// claims, and a truncated library makes it crash the process (SIGBUS) instead of failing.
pub(crate) fn check_elf(data: &[u8]) -> Result<(), String> {
    let len = data.len() as u64;
    let u16_at = |o: usize| data.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u64_at = |o: u64| {
        let o = usize::try_from(o).ok()?;
        data.get(o..o + 8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes)
    };
    let bad = |what: &str| Err(format!("it is not a shared library for this machine ({what})"));
    if data.len() < 64 || &data[..4] != b"\x7fELF" {
        return bad("no ELF header");
    }
    if data[4] != 2 || data[5] != 1 || u16_at(16) != Some(3) || u16_at(18) != Some(ELF_MACHINE) {
        return bad("wrong class, byte order, type or architecture");
    }
    let truncated = || Err("it is truncated (its headers point past the end of the file)".to_string());
    let (Some(phoff), Some(shoff)) = (u64_at(0x20), u64_at(0x28)) else { return truncated() };
    let (Some(phentsize), Some(phnum), Some(shentsize), Some(shnum)) =
        (u16_at(0x36), u16_at(0x38), u16_at(0x3a), u16_at(0x3c))
    else {
        return truncated();
    };
    let table_end = |off: u64, size: u16, n: u16| off.checked_add(u64::from(size) * u64::from(n));
    if table_end(phoff, phentsize, phnum).is_none_or(|e| e > len)
        || table_end(shoff, shentsize, shnum).is_none_or(|e| e > len)
    {
        return truncated();
    }
    for i in 0..u64::from(phnum) {
        let entry = phoff + i * u64::from(phentsize);
        let (Some(offset), Some(filesz)) = (u64_at(entry + 8), u64_at(entry + 32)) else { return truncated() };
        if offset.checked_add(filesz).is_none_or(|e| e > len) {
            return truncated();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use vpcrouter_plugin_api::PluginKind;

    use super::*;
    use crate::find::SearchPath;
    use crate::load::Loader;

    #[test]
    fn truncated_libraries_are_refused_before_dlopen() {
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        // The test binary is an executable (PIE: type 3 like a library), so only the
        // length checks can fail here.
        let err = check_elf(&exe[..4096]).unwrap_err();
        assert!(err.contains("truncated"), "{err}");
        assert_eq!(check_elf(&exe), Ok(()));
    }

    #[test]
    fn a_world_writable_directory_above_without_the_sticky_bit_is_refused() {
        let top = tempfile::tempdir().unwrap();
        let ww = top.path().join("ww");
        let plugins = ww.join("plugins");
        std::fs::create_dir_all(&plugins).unwrap();
        let path = plugins.join("libvpcrouter_junk.so");
        std::fs::write(&path, b"not an ELF file").unwrap();
        std::fs::set_permissions(&ww, std::fs::Permissions::from_mode(0o777)).unwrap();
        let me = rustix::process::geteuid().as_raw();
        let err = check_ownership(&path, me).unwrap_err();
        assert!(matches!(&err, LoadError::InsecureAncestor { target, mode: 0o777, .. } if *target == ww), "{err}");
        assert_eq!(
            err.to_string(),
            format!(
                "refusing to load '{p}': the directory {w} above it is writable by group or others without the \
                 sticky bit (mode 777); fix with 'chmod go-w {w}' or pass --allow-insecure-plugins",
                p = path.display(),
                w = ww.display()
            )
        );
        // Through the loader, before the file is read; not with --allow-insecure-plugins.
        let search = SearchPath { dirs: vec![plugins.clone()], allow_insecure: false };
        let err = Loader::default().load(&search, PluginKind::Watcher, "junk").unwrap_err();
        assert!(matches!(err, LoadError::InsecureAncestor { .. }), "{err}");
        let search = SearchPath { dirs: vec![plugins.clone()], allow_insecure: true };
        let err = Loader::default().load(&search, PluginKind::Watcher, "junk").unwrap_err();
        assert!(matches!(err, LoadError::NotAPlugin { .. }), "{err}");
        // With the sticky bit (as /tmp), others cannot rename what it holds: accepted.
        std::fs::set_permissions(&ww, std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(check_ownership(&path, me).is_ok());
        // The plugin's own directory may not be writable by others, sticky or not.
        std::fs::set_permissions(&plugins, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let err = check_ownership(&path, me).unwrap_err();
        assert!(matches!(err, LoadError::Insecure { what: "its directory", .. }), "{err}");
    }

    /// Changes the owner of `path` (the tests run as root; elsewhere they skip the chown cases).
    fn chown(path: &Path, uid: u32) -> bool {
        std::os::unix::fs::chown(path, Some(uid), None).is_ok()
    }

    #[test]
    fn files_and_directories_of_other_users_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("libvpcrouter_junk.so");
        std::fs::write(&path, b"not an ELF file").unwrap();
        let me = rustix::process::geteuid().as_raw();
        // Owned by this user (or root): passes the check.
        assert!(check_ownership(&path, me).is_ok());
        if !chown(&path, 65534) {
            eprintln!("not root: the ownership cases are skipped");
            return;
        }
        let err = check_ownership(&path, me).unwrap_err();
        assert!(matches!(err, LoadError::NotOwned { what: "the file", owner: 65534, .. }), "{err}");
        assert_eq!(
            err.to_string(),
            format!(
                "refusing to load '{p}': the file is owned by uid 65534, not by root or the user vpcrouter runs as \
                 (uid {me}); fix with 'chown root {p}' or pass --allow-insecure-plugins",
                p = path.display()
            )
        );
        // The user vpcrouter runs as may own it.
        assert!(check_ownership(&path, 65534).is_ok());
        assert!(chown(&path, 0));
        assert!(chown(dir.path(), 4242));
        let err = check_ownership(&path, me).unwrap_err();
        assert!(matches!(err, LoadError::NotOwned { what: "its directory", owner: 4242, .. }), "{err}");
        // Through the loader: refused before the file is read, unless insecure plugins are allowed.
        let search = SearchPath { dirs: vec![dir.path().into()], allow_insecure: false };
        let err = Loader::default().load(&search, PluginKind::Watcher, "junk").unwrap_err();
        assert!(matches!(err, LoadError::NotOwned { .. }), "{err}");
        let search = SearchPath { dirs: vec![dir.path().into()], allow_insecure: true };
        let err = Loader::default().load(&search, PluginKind::Watcher, "junk").unwrap_err();
        assert!(matches!(err, LoadError::NotAPlugin { .. }), "{err}");
        assert!(chown(dir.path(), me));
        // A directory above, owned by another user: refused, and named.
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        let inner = sub.join("libvpcrouter_junk.so");
        std::fs::write(&inner, b"x").unwrap();
        assert!(chown(dir.path(), 4242));
        let err = check_ownership(&inner, me).unwrap_err();
        assert!(
            matches!(&err, LoadError::NotOwned { what: "a directory above it", owner: 4242, target, .. } if target == dir.path()),
            "{err}"
        );
        assert!(chown(dir.path(), me));
    }
}
