//! The cleaner's checkpoint: the passes made over a partition (see the compaction
//! module's "Checkpoint").

use crate::error::{LogError, Result};
use crate::fault;
use crate::log::sync_dir;
use std::path::Path;

/// The checkpoint's file name in the partition folder.
pub const CHECKPOINT_FILE: &str = "cleaner-checkpoint";
const CHECKPOINT_TMP: &str = "cleaner-checkpoint.tmp";
const CHECKPOINT_HEADER: &str = "ferry-cleaner-checkpoint 1";
/// Passes remembered at most; older ones are merged first.
const CHECKPOINT_PASSES_MAX: usize = 1024;

/// One pass as the checkpoint remembers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Pass {
    pub(super) end: u64,
    pub(super) at_ms: u64,
}

pub(super) fn load_checkpoint(dir: &Path) -> Vec<Pass> {
    let path = dir.join(CHECKPOINT_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "Could not read the compaction checkpoint; compacting from the start.");
            return Vec::new();
        }
    };
    let parsed = parse_checkpoint(&text);
    if parsed.is_none() {
        tracing::warn!(path = %path.display(), "The compaction checkpoint is damaged; compacting from the start.");
    }
    parsed.unwrap_or_default()
}

fn parse_checkpoint(text: &str) -> Option<Vec<Pass>> {
    let mut lines = text.lines();
    if lines.next()? != CHECKPOINT_HEADER {
        return None;
    }
    let mut passes: Vec<Pass> = Vec::new();
    for line in lines {
        let (end, at) = line.split_once(' ')?;
        let pass = Pass {
            end: end.parse().ok()?,
            at_ms: at.parse().ok()?,
        };
        if passes.last().is_some_and(|p| p.end >= pass.end) {
            return None;
        }
        passes.push(pass);
    }
    Some(passes)
}

pub(super) fn store_checkpoint(dir: &Path, passes: &[Pass]) -> Result<()> {
    let mut text = format!("{CHECKPOINT_HEADER}\n");
    for p in passes {
        text.push_str(&format!("{} {}\n", p.end, p.at_ms));
    }
    fault::replace_file(
        &dir.join(CHECKPOINT_TMP),
        &dir.join(CHECKPOINT_FILE),
        text.as_bytes(),
    )
    .map_err(|e| LogError::io("writing the compaction checkpoint", e))?;
    sync_dir(dir)
}

/// Drops passes wholly before `first` and merges neighbours whose tombstones have all
/// expired by `now_ms`.
pub(super) fn prune(passes: &mut Vec<Pass>, first: u64, now_ms: u64, delete_retention_ms: u64) {
    let keep_from = passes
        .iter()
        .position(|p| p.end > first)
        .unwrap_or(passes.len());
    passes.drain(..keep_from);
    let expired = |p: &Pass| p.at_ms.saturating_add(delete_retention_ms) <= now_ms;
    let mut merged: Vec<Pass> = Vec::with_capacity(passes.len());
    for p in passes.drain(..) {
        match merged.last_mut() {
            Some(last) if expired(last) && expired(&p) => {
                last.end = p.end;
                last.at_ms = last.at_ms.max(p.at_ms);
            }
            _ => merged.push(p),
        }
    }
    // Past the limit the oldest are merged whatever their age: their tombstones then
    // count from the later time, so they stay longer, never shorter.
    while merged.len() > CHECKPOINT_PASSES_MAX {
        let second = merged.remove(1);
        merged[0] = second;
    }
    *passes = merged;
}

/// When the pass that first reached `offset` ran, if one did.
pub(super) fn first_cleaned_at(passes: &[Pass], offset: u64) -> Option<u64> {
    passes.iter().find(|p| p.end > offset).map(|p| p.at_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_round_trip_and_damage_reads_as_none() {
        let passes = vec![Pass { end: 10, at_ms: 5 }, Pass { end: 20, at_ms: 7 }];
        let dir = tempfile::tempdir().unwrap();
        store_checkpoint(dir.path(), &passes).unwrap();
        assert_eq!(load_checkpoint(dir.path()), passes);
        assert_eq!(
            parse_checkpoint("ferry-cleaner-checkpoint 1\n20 1\n10 2\n"),
            None
        );
        assert_eq!(parse_checkpoint("something else"), None);
    }

    #[test]
    fn expired_passes_merge_and_passes_before_the_log_are_forgotten() {
        let mut p = vec![
            Pass { end: 10, at_ms: 0 },
            Pass { end: 20, at_ms: 1 },
            Pass {
                end: 30,
                at_ms: 100,
            },
        ];
        prune(&mut p, 12, 50, 10);
        assert_eq!(
            p,
            vec![
                Pass { end: 20, at_ms: 1 },
                Pass {
                    end: 30,
                    at_ms: 100
                }
            ]
        );
        prune(&mut p, 0, 200, 10);
        assert_eq!(
            p,
            vec![Pass {
                end: 30,
                at_ms: 100
            }]
        );
    }
}
