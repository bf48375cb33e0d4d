//! `prune [--dry-run] [--json]`: drop the allocations of worktrees git no longer has, or whose
//! directory is gone and that are not locked. The worktree list is read under the registry
//! lock, so a worktree that allocates meanwhile is never mistaken for a dead one.

use std::collections::BTreeMap;

use serde_json::json;

use crate::cli::PruneArgs;
use crate::commands::{Report, ports_inline};
use crate::git::WorktreeInfo;
use crate::machine::Machine;
use crate::registry::{Ports, Registry};
use crate::workspace::{Workspace, display_path, lock_machine, warn, worktrees_seen_from_here};

struct Pruned {
    repo: Option<String>,
    key: String,
    path: String,
    reason: &'static str,
    ports: BTreeMap<String, u16>,
}

/// Prune one repository.
fn prune(ws: &Workspace, dry_run: bool, repo: Option<&str>) -> anyhow::Result<Vec<Pruned>> {
    let mut pruned = if dry_run {
        let reg = ws.load_unlocked()?;
        dead(&reg, &worktrees_seen_from_here(ws.repo())?)
    } else {
        let lock = ws.lock()?;
        let mut reg = ws.load_locked(&lock, None)?;
        let pruned = dead(&reg, &worktrees_seen_from_here(ws.repo())?);
        if !pruned.is_empty() {
            for p in &pruned {
                reg.remove_gone_worktree(&p.key);
            }
            ws.save(&lock, &mut reg)?;
        }
        pruned
    };
    for p in &mut pruned {
        p.repo = repo.map(str::to_string);
    }
    Ok(pruned)
}

/// Run `prune`.
pub fn run(args: &PruneArgs) -> anyhow::Result<Report> {
    let mut pruned = Vec::new();
    let mut gone_repos: Vec<(String, String, Option<[u16; 2]>)> = Vec::new();
    if args.all {
        let machine = Machine::from_env()?;
        // Index entries of gone repositories are dropped under the machine lock, which comes
        // before any repository's.
        let lock = if args.dry_run {
            None
        } else {
            Some(lock_machine(&machine)?)
        };
        let (mut index, warnings) = match &lock {
            Some(l) => machine.load(l)?,
            None => machine.read(),
        };
        warnings.iter().for_each(|w| warn(w));
        for (common, entry) in &index.repositories {
            if !common.is_dir() {
                gone_repos.push((
                    entry.name.clone(),
                    display_path(common).display().to_string(),
                    entry.block,
                ));
                continue;
            }
            match Workspace::open_at(common) {
                Ok(ws) => pruned.extend(prune(&ws, args.dry_run, Some(&entry.name))?),
                Err(e) => warn(&format!(
                    "skipped repository {} ({}): {e:#}",
                    entry.name,
                    common.display()
                )),
            }
        }
        if lock.is_some() && !index.drop_gone().is_empty() {
            machine.save(&index)?;
        }
    } else {
        let ws = Workspace::open()?;
        pruned = prune(&ws, args.dry_run, None)?;
    }

    if args.json {
        let list: Vec<_> = pruned
            .iter()
            .map(|p| json!({"repository": p.repo, "name": p.key, "path": p.path, "reason": p.reason, "ports": p.ports}))
            .collect();
        let gone: Vec<_> = gone_repos
            .iter()
            .map(|(n, p, block)| json!({"name": n, "path": p, "block": block}))
            .collect();
        return Ok(Report::json(
            &json!({"dry_run": args.dry_run, "pruned": list, "repositories_gone": gone}),
        ));
    }
    if pruned.is_empty() && gone_repos.is_empty() {
        return Ok(Report::ok("nothing to prune\n".into()));
    }
    let verb = if args.dry_run {
        "would prune"
    } else {
        "pruned"
    };
    let mut out = String::new();
    for (name, path, block) in &gone_repos {
        out.push_str(&format!(
            "{} repository {name} ({path}, gone): its ports{} are free again\n",
            if args.dry_run {
                "would drop"
            } else {
                "dropped"
            },
            block
                .map(|[lo, hi]| format!(" and its block {lo}-{hi}"))
                .unwrap_or_default()
        ));
    }
    for p in &pruned {
        let of = p
            .repo
            .as_ref()
            .map(|r| format!(" of {r}"))
            .unwrap_or_default();
        out.push_str(&format!(
            "{verb} {}{of} ({}, {}): {}\n",
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
                repo: None,
                key: key.to_string(),
                path: reg.record(key).map(|r| r.path).unwrap_or_default(),
                reason,
                ports: reg.ports(key).map(Ports::to_map).unwrap_or_default(),
            })
        })
        .collect()
}
