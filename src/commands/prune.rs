//! `prune [--dry-run] [--json]`: drop the allocations of worktrees git no longer has, or whose
//! directory is gone and that are not locked. The worktree list is read under the registry
//! lock, so a worktree that allocates meanwhile is never mistaken for a dead one.

use std::collections::BTreeMap;

use serde_json::json;

use crate::cli::PruneArgs;
use crate::commands::{Report, ports_inline};
use crate::git::WorktreeInfo;
use crate::registry::{Ports, Registry};
use crate::workspace::{Workspace, worktrees_seen_from_here};

struct Pruned {
    key: String,
    path: String,
    reason: &'static str,
    ports: BTreeMap<String, u16>,
}

/// Run `prune`.
pub fn run(args: &PruneArgs) -> anyhow::Result<Report> {
    let ws = Workspace::open()?;
    let pruned = if args.dry_run {
        let reg = ws.load_unlocked()?;
        dead(&reg, &worktrees_seen_from_here(ws.repo())?)
    } else {
        let lock = ws.lock()?;
        let mut reg = ws.load_locked(&lock, None)?;
        let pruned = dead(&reg, &worktrees_seen_from_here(ws.repo())?);
        if !pruned.is_empty() {
            for p in &pruned {
                reg.remove_worktree(&p.key);
            }
            ws.save(&lock, &mut reg)?;
        }
        pruned
    };

    if args.json {
        let list: Vec<_> = pruned
            .iter()
            .map(|p| json!({"name": p.key, "path": p.path, "reason": p.reason, "ports": p.ports}))
            .collect();
        return Ok(Report::json(
            &json!({"dry_run": args.dry_run, "pruned": list}),
        ));
    }
    if pruned.is_empty() {
        return Ok(Report::ok("nothing to prune\n".into()));
    }
    let verb = if args.dry_run {
        "would prune"
    } else {
        "pruned"
    };
    let mut out = String::new();
    for p in &pruned {
        out.push_str(&format!(
            "{verb} {} ({}, {}): {}\n",
            p.key,
            p.path,
            p.reason,
            if p.ports.is_empty() {
                "no ports".into()
            } else {
                ports_inline(&p.ports)
            }
        ));
    }
    Ok(Report::ok(out))
}

/// Registry entries whose worktree is gone.
fn dead(reg: &Registry, worktrees: &[WorktreeInfo]) -> Vec<Pruned> {
    let keys = reg.keys();
    keys.into_iter()
        .filter_map(|key| {
            let reason = match worktrees.iter().find(|w| w.key == key) {
                None => "no longer a git worktree",
                Some(w) if w.prunable => "directory deleted",
                Some(_) => return None,
            };
            Some(Pruned {
                key: key.to_string(),
                path: reg.record(key).map(|r| r.path).unwrap_or_default(),
                reason,
                ports: reg.ports(key).map(Ports::to_map).unwrap_or_default(),
            })
        })
        .collect()
}
