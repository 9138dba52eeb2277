//! Replacing a small file atomically: the new content goes to a temporary file, which
//! is synced, renamed over the old one, and the folder is synced. A crash leaves the old
//! or the new content, never a mix. Used by the metadata, committed-offset, subscription
//! registry and snapshot stores.
//!
//! A failed write or sync of the temporary file leaves the old file as it was: the
//! change is refused and the temporary file removed, and a later replacement (once
//! space is freed) starts afresh. A failed rename or sync of the folder stops that file
//! until restart: every later replacement of it fails with the first error, since the
//! kernel reports a lost write-back once and a later sync of the folder could succeed
//! without the rename. File operations go through `ferry_log::fault`, so tests can fail
//! them.

use ferry_log::fault;
use ferry_log::sync::lock;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Files whose replacement failed, with the first error.
static STOPPED: Mutex<Option<HashMap<PathBuf, String>>> = Mutex::new(None);

pub fn replace_file(path: &Path, bytes: &[u8]) -> Result<(), String> {
    replace(path, bytes, false)
}

/// As [`replace_file`], for a file only Ferry's own user may read (mode 0600): the
/// credentials store.
pub fn replace_private_file(path: &Path, bytes: &[u8]) -> Result<(), String> {
    replace(path, bytes, true)
}

fn replace(path: &Path, bytes: &[u8], private: bool) -> Result<(), String> {
    if let Some(why) = lock(&STOPPED).as_ref().and_then(|m| m.get(path)) {
        return Err(format!(
            "{} stopped taking writes after a failed disk operation ({why}); restart Ferry",
            path.display()
        ));
    }
    let err = |what: &str, e: std::io::Error| format!("{what} {}: {e}", path.display());
    let tmp = path.with_extension("json.tmp");
    let mut options = File::options();
    options.write(true).create(true).truncate(true);
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
        // A leftover from a failed replacement would keep its own mode.
        let _ = std::fs::remove_file(&tmp);
    }
    let f = options
        .open(&tmp)
        .map_err(|e| err("creating temporary file for", e))?;
    let staged = fault::write_all(&f, &tmp, bytes)
        .map_err(|e| err("writing", e))
        .and_then(|()| fault::sync_all(&f, &tmp).map_err(|e| err("syncing", e)));
    if let Err(why) = staged {
        drop(f);
        let _ = std::fs::remove_file(&tmp);
        tracing::warn!(file = %path.display(), error = %why, "Replacing a file failed before its rename; it is unchanged.");
        return Err(why);
    }
    let written = fault::rename(&tmp, path)
        .map_err(|e| err("replacing", e))
        .and_then(|()| match path.parent() {
            Some(dir) => fault::sync_dir(dir).map_err(|e| err("syncing folder of", e)),
            None => Ok(()),
        });
    if let Err(why) = &written {
        tracing::error!(file = %path.display(), error = %why, "Replacing a file failed; it takes no more writes until restart.");
        lock(&STOPPED)
            .get_or_insert_with(HashMap::new)
            .insert(path.to_path_buf(), why.clone());
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_sync_of_the_temporary_file_refuses_the_change_and_a_later_one_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.json");
        replace_file(&path, b"1").unwrap();
        fault::arm(&format!("fsync@{}/meta.json.tmp:1", dir.path().display())).unwrap();
        assert!(replace_file(&path, b"2").is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"1");
        assert!(!dir.path().join("meta.json.tmp").exists());
        replace_file(&path, b"3").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"3");
    }

    #[test]
    fn a_failed_rename_stops_later_replacements_until_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.json");
        replace_file(&path, b"1").unwrap();
        fault::arm(&format!("rename@{}/meta.json:1", dir.path().display())).unwrap();
        assert!(replace_file(&path, b"2").is_err());
        let again = replace_file(&path, b"3").unwrap_err();
        assert!(again.contains("restart"), "{again}");
        assert_eq!(std::fs::read(&path).unwrap(), b"1");
    }
}

/// Size of the file system holding a folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskSpace {
    pub total_bytes: u64,
    /// What an unprivileged writer may still use.
    pub usable_bytes: u64,
}

/// The size and free space of the file system holding `dir` (`statvfs`).
pub fn disk_space(dir: &Path) -> std::io::Result<DiskSpace> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in path"))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c_path` is a NUL-terminated string and `st` points to writable memory
    // the size of a `statvfs`, which the call fills when it returns 0.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it initialised the struct (zeroed before anyway).
    let st = unsafe { st.assume_init() };
    // The field types differ between platforms (u32 on some 32-bit ones).
    #[allow(clippy::unnecessary_cast)]
    let (fragment, blocks, available) =
        (st.f_frsize as u64, st.f_blocks as u64, st.f_bavail as u64);
    Ok(DiskSpace {
        total_bytes: blocks.saturating_mul(fragment),
        usable_bytes: available.saturating_mul(fragment),
    })
}

#[cfg(test)]
mod disk_space_tests {
    use super::*;

    #[test]
    fn the_disk_holding_a_folder_has_a_size_and_no_more_usable_than_that() {
        let dir = tempfile::tempdir().unwrap();
        let d = disk_space(dir.path()).unwrap();
        assert!(
            d.total_bytes > 0 && d.usable_bytes <= d.total_bytes,
            "{d:?}"
        );
        assert!(disk_space(&dir.path().join("missing")).is_err());
    }
}
