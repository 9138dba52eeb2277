//! Replacing a small file atomically: the new content goes to a temporary file, which
//! is synced, renamed over the old one, and the folder is synced. A crash leaves the old
//! or the new content, never a mix. Used by the metadata and committed-offset stores.

use std::fs::File;
use std::io::Write;
use std::path::Path;

pub(crate) fn replace_file(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let err = |what: &str, e: std::io::Error| format!("{what} {}: {e}", path.display());
    let tmp = path.with_extension("json.tmp");
    let mut f = File::create(&tmp).map_err(|e| err("creating temporary file for", e))?;
    f.write_all(bytes).map_err(|e| err("writing", e))?;
    f.sync_all().map_err(|e| err("syncing", e))?;
    std::fs::rename(&tmp, path).map_err(|e| err("replacing", e))?;
    if let Some(dir) = path.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| err("syncing folder of", e))?;
    }
    Ok(())
}
