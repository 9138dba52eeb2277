//! The storage seam: every `fdatasync`/`fsync`, positioned write and rename that makes
//! data durable goes through these functions, so that tests can make the Nth call fail.
//!
//! # Test only
//!
//! Faults exist only in debug builds (`cfg(debug_assertions)`, what `cargo test` and
//! `cargo build` make). In a release build every function here is the plain system
//! call, inlined, and [`arm`] and the `FERRY_FAULTS` variable are ignored.
//!
//! A fault is armed by [`arm`] or, for tests through the real binary, by the
//! `FERRY_FAULTS` environment variable, read once at the first call. Its value is a
//! comma-separated list of `op[@path]:n[:errno]`:
//!
//! - `op`: `fdatasync` (also `fsync`: Ferry's `sync_data` and `sync_all` alike), `pwrite`
//!   (writes of data and of delay, index and metadata files) or `rename`;
//! - `@path`: only calls on a path containing this text count (a partition's folder,
//!   `journal`, `.index`, `meta`);
//! - `n`: the Nth matching call fails (1 is the first); later calls succeed again, as
//!   after a real failed `fdatasync` whose error the kernel reports only once;
//! - `errno`: `eio` (the default) or `enospc`.
//!
//! Each injected failure is logged at `error` level with the path, so a test can tell
//! the fault it armed from a real one.

use std::fs::File;
use std::io;
use std::path::Path;

/// `fdatasync` of `file` (at `path`).
#[inline]
pub fn sync_data(file: &File, path: &Path) -> io::Result<()> {
    #[cfg(debug_assertions)]
    armed::check(armed::Op::Sync, path)?;
    let _ = path;
    file.sync_data()
}

/// `fsync` of `file` (at `path`), counted with `fdatasync`.
#[inline]
pub fn sync_all(file: &File, path: &Path) -> io::Result<()> {
    #[cfg(debug_assertions)]
    armed::check(armed::Op::Sync, path)?;
    let _ = path;
    file.sync_all()
}

/// Syncs the folder `dir` (after files were created, renamed or removed in it).
#[inline]
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    let d = File::open(dir)?;
    sync_all(&d, dir)
}

/// `pwrite` of all of `buf` at `position`.
#[inline]
pub fn write_all_at(file: &File, path: &Path, buf: &[u8], position: u64) -> io::Result<()> {
    #[cfg(debug_assertions)]
    armed::check(armed::Op::Write, path)?;
    let _ = path;
    std::os::unix::fs::FileExt::write_all_at(file, buf, position)
}

/// A write of all of `buf` at the file's cursor (files opened to append).
#[inline]
pub fn write_all(mut file: &File, path: &Path, buf: &[u8]) -> io::Result<()> {
    #[cfg(debug_assertions)]
    armed::check(armed::Op::Write, path)?;
    let _ = path;
    io::Write::write_all(&mut file, buf)
}

/// `rename(from, to)`.
#[inline]
pub fn rename(from: &Path, to: &Path) -> io::Result<()> {
    #[cfg(debug_assertions)]
    armed::check(armed::Op::Rename, to)?;
    std::fs::rename(from, to)
}

/// Writes `bytes` to a new file `tmp`, syncs it and renames it over `to`: after a crash
/// `to` holds its old bytes or the new ones, never a mix. The caller syncs the folder
/// when the rename itself must last.
pub fn replace_file(tmp: &Path, to: &Path, bytes: &[u8]) -> io::Result<()> {
    {
        let f = File::create(tmp)?;
        write_all(&f, tmp, bytes)?;
        sync_data(&f, tmp)?;
    }
    rename(tmp, to)
}

/// Arms faults (the syntax of `FERRY_FAULTS`, see the module). Test only: in a release
/// build it does nothing and returns `Ok`.
pub fn arm(spec: &str) -> Result<(), String> {
    #[cfg(debug_assertions)]
    {
        let faults = armed::parse(spec)?;
        ferry_lock(&armed::FAULTS).extend(faults);
    }
    #[cfg(not(debug_assertions))]
    let _ = spec;
    Ok(())
}

/// Calls `hook` with the path each time a fault is injected, right after it is (test
/// only: a release build never calls it).
pub fn on_inject(hook: fn(&Path)) {
    #[cfg(debug_assertions)]
    {
        *ferry_lock(&armed::HOOK) = Some(hook);
    }
    #[cfg(not(debug_assertions))]
    let _ = hook;
}

/// How many faults were injected so far on paths containing `path` (always 0 in a
/// release build).
pub fn injected(path: &str) -> u64 {
    #[cfg(debug_assertions)]
    {
        ferry_lock(&armed::FAULTS)
            .iter()
            .filter(|f| f.injected && f.path.contains(path))
            .count() as u64
    }
    #[cfg(not(debug_assertions))]
    {
        let _ = path;
        0
    }
}

#[cfg(debug_assertions)]
fn ferry_lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    crate::sync::lock(m)
}

#[cfg(debug_assertions)]
mod armed {
    use super::ferry_lock;
    use std::io;
    use std::path::Path;
    use std::sync::{Mutex, Once};

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(super) enum Op {
        Sync,
        Write,
        Rename,
    }

    #[derive(Debug)]
    pub(super) struct Fault {
        op: Op,
        pub(super) path: String,
        nth: u64,
        seen: u64,
        errno: i32,
        pub(super) injected: bool,
    }

    pub(super) static FAULTS: Mutex<Vec<Fault>> = Mutex::new(Vec::new());
    pub(super) static HOOK: Mutex<Option<fn(&Path)>> = Mutex::new(None);
    static FROM_ENV: Once = Once::new();

    pub(super) fn parse(spec: &str) -> Result<Vec<Fault>, String> {
        let mut out = Vec::new();
        for one in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let bad = || format!("fault {one:?}: expected op[@path]:n[:eio|enospc]");
            let mut parts = one.split(':');
            let target = parts.next().ok_or_else(bad)?;
            let (op, path) = target.split_once('@').unwrap_or((target, ""));
            let op = match op {
                "fdatasync" | "fsync" => Op::Sync,
                "pwrite" => Op::Write,
                "rename" => Op::Rename,
                _ => return Err(bad()),
            };
            let nth: u64 = parts
                .next()
                .and_then(|n| n.parse().ok())
                .filter(|n| *n > 0)
                .ok_or_else(bad)?;
            let errno = match parts.next() {
                None | Some("eio") => 5,
                Some("enospc") => 28,
                Some(_) => return Err(bad()),
            };
            if parts.next().is_some() {
                return Err(bad());
            }
            out.push(Fault {
                op,
                path: path.to_string(),
                nth,
                seen: 0,
                errno,
                injected: false,
            });
        }
        Ok(out)
    }

    pub(super) fn check(op: Op, path: &Path) -> io::Result<()> {
        FROM_ENV.call_once(|| {
            if let Ok(spec) = std::env::var("FERRY_FAULTS") {
                match parse(&spec) {
                    Ok(faults) => {
                        tracing::warn!(faults = %spec, "FERRY_FAULTS is set: injecting storage faults (debug build, for tests only).");
                        ferry_lock(&FAULTS).extend(faults);
                    }
                    Err(e) => tracing::error!(error = %e, "FERRY_FAULTS ignored."),
                }
            }
        });
        let mut faults = ferry_lock(&FAULTS);
        if faults.is_empty() {
            return Ok(());
        }
        let shown = path.to_string_lossy();
        for f in faults.iter_mut() {
            if f.op != op || !shown.contains(&f.path) {
                continue;
            }
            f.seen += 1;
            if f.seen == f.nth {
                f.injected = true;
                tracing::error!(path = %shown, op = ?op, call = f.nth, "Injected storage fault (FERRY_FAULTS / fault::arm).");
                let errno = f.errno;
                drop(faults);
                if let Some(hook) = *ferry_lock(&HOOK) {
                    hook(path);
                }
                return Err(io::Error::from_raw_os_error(errno));
            }
        }
        Ok(())
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn a_fault_spec_is_parsed_and_a_bad_one_refused() {
            let f = parse("fdatasync@/p/0:3, pwrite:1:enospc,rename@meta:2").unwrap();
            assert_eq!(f.len(), 3);
            assert_eq!(
                (f[0].op, f[0].path.as_str(), f[0].nth),
                (Op::Sync, "/p/0", 3)
            );
            assert_eq!((f[1].op, f[1].errno), (Op::Write, 28));
            assert_eq!(f[2].op, Op::Rename);
            for bad in [
                "fsync",
                "fsync:0",
                "unlink:1",
                "fsync:1:eperm",
                "fsync:1:eio:x",
            ] {
                assert!(parse(bad).is_err(), "{bad}");
            }
        }
    }
}
