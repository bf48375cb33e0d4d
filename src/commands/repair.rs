//! `repair [--dry-run] [--json]`: rebuild the registry from git's worktree list and every
//! record that can still be read: `ports.json`, `ports.json.bak`, then the kept
//! `ports.json.corrupt-*` files (newest first), salvaging complete entries from damaged ones.
//!
//! The newest record wins, always: records are read newest first, and reading stops at the
//! first one that parses whole, since everything older is either in it or was released since
//! (a kept `ports.json.corrupt-*` must never bring back a port a worktree gave up long ago).
//! Damaged records newer than that one add what can be salvaged from them. Each worktree git
//! still has (locked ones too, even with their directory absent: an unplugged disk) keeps, per
//! service, the port of the newest record that names one; a port two records give to different
//! worktrees goes to the first and is reported. Records of worktrees git no longer has are
//! dropped (as `prune` would). Nothing is deleted: a damaged `ports.json` is kept aside.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Serialize;

use crate::cli::RepairArgs;
use crate::commands::{Report, ports_inline};
use crate::workspace::{Repaired, Workspace};

/// `repair --json`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct RepairAnswer {
    /// --dry-run: nothing was changed.
    pub dry_run: bool,
    /// The worktrees whose ports were kept, and where they were read from.
    pub kept: Vec<Kept>,
    /// What was dropped, and why.
    pub dropped: Vec<String>,
    /// Worktrees of the sources git no longer has.
    pub gone: Vec<String>,
    /// The files read.
    pub sources: Vec<SourceAnswer>,
    /// Older copies found (kept aside, not read).
    pub older: Vec<String>,
}

/// One kept worktree of `repair --json`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Kept {
    /// The worktree's name.
    pub worktree: String,
    /// Service -> port.
    pub ports: BTreeMap<String, u16>,
    /// The sources its ports came from.
    pub from: Vec<String>,
}

/// One file `repair` read.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SourceAnswer {
    /// Its path.
    pub path: String,
    /// Whether it parsed as a whole registry.
    pub whole: bool,
    /// How many worktree entries were salvaged from it.
    pub entries: usize,
}

/// Run `repair`.
pub fn run(args: &RepairArgs) -> anyhow::Result<Report> {
    let ws = Workspace::open()?;
    let Repaired {
        kept,
        dropped,
        gone,
        sources,
        older,
    } = ws.repair(args.dry_run)?;

    if args.json {
        return Ok(Report::answer(RepairAnswer {
            dry_run: args.dry_run,
            kept: (kept.into_iter())
                .map(|(worktree, ports, from)| Kept {
                    worktree,
                    ports,
                    from,
                })
                .collect(),
            dropped,
            gone,
            sources: (sources.iter())
                .map(|s| SourceAnswer {
                    path: s.path.to_string_lossy().into_owned(),
                    whole: s.whole,
                    entries: s.entries,
                })
                .collect(),
            older: (older.iter())
                .map(|p| p.to_string_lossy().into_owned())
                .collect(),
        }));
    }
    let mut out = String::new();
    for p in &older {
        out.push_str(&format!(
            "not used: {} (older than a whole record, which wins)\n",
            p.display()
        ));
    }
    for s in &sources {
        out.push_str(&format!(
            "read {}: {} ({} entries)\n",
            s.path.display(),
            if s.whole {
                "whole"
            } else {
                "damaged, salvaged"
            },
            s.entries
        ));
    }
    let verb = if args.dry_run { "would keep" } else { "kept" };
    for (w, p, from) in &kept {
        out.push_str(&format!(
            "{verb} {w}: {} (from {})\n",
            ports_inline(p),
            from.join(", ")
        ));
    }
    for d in &dropped {
        out.push_str(&format!("dropped {d}\n"));
    }
    if !gone.is_empty() {
        out.push_str(&format!(
            "dropped worktrees git no longer has: {}\n",
            gone.join(", ")
        ));
    }
    if kept.is_empty() {
        out.push_str(
            "no ports could be recovered; worktrees allocate anew on their next command\n",
        );
    }
    Ok(Report::ok(out))
}
