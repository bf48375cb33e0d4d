//! `list [--json]` (alias `ls`): every allocation, with live git facts where the worktree still
//! exists. Reads without the lock; never writes.

use std::collections::BTreeMap;

use serde_json::json;

use crate::cli::ListArgs;
use crate::commands::{Report, table};
use crate::config::Config;
use crate::registry::Ports;
use crate::workspace::{Workspace, worktrees_seen_from_here};

/// Run `list`.
pub fn run(args: &ListArgs) -> anyhow::Result<Report> {
    let ws = Workspace::open()?;
    let reg = ws.load_unlocked()?;
    let worktrees = worktrees_seen_from_here(ws.repo())?;

    // Every key that has ports or a record.
    let keys = reg.keys();

    struct Row {
        name: String,
        path: String,
        branch: Option<String>,
        ports: BTreeMap<String, u16>,
        exists: bool,
        moved: bool,
    }
    let rows: Vec<Row> = keys
        .into_iter()
        .map(|key| {
            let live = worktrees.iter().find(|w| w.key == key);
            let record = reg.record(key);
            Row {
                name: key.to_string(),
                path: live
                    .map(|w| w.path.to_string_lossy().into_owned())
                    .or_else(|| record.as_ref().map(|r| r.path.clone()))
                    .unwrap_or_default(),
                branch: match live {
                    Some(w) => w.branch.clone(),
                    None => record.as_ref().and_then(|r| r.branch.clone()),
                },
                ports: reg.ports(key).map(Ports::to_map).unwrap_or_default(),
                exists: live.is_some_and(|w| !w.prunable && w.path.exists()),
                moved: live.is_some_and(|w| w.moved_from.is_some()),
            }
        })
        .collect();

    if args.json {
        let list: Vec<_> = rows
            .iter()
            .map(|r| {
                json!({
                    "name": r.name,
                    "path": r.path,
                    "branch": r.branch,
                    "ports": r.ports,
                    "exists": r.exists,
                    "moved": r.moved,
                })
            })
            .collect();
        return Ok(Report::json(&json!({ "worktrees": list })));
    }
    if rows.is_empty() {
        return Ok(Report::ok(
            "no ports allocated yet; run `git worktree-ports allocate` in a worktree\n".into(),
        ));
    }

    // Columns: the current worktree's services in config order, then any others.
    let mut services: Vec<String> = match ws.repo().current().ok().flatten() {
        Some(w) => Config::load(&w.path).map(|c| c.services.into_iter().map(|s| s.name).collect()),
        None => Ok(Vec::new()),
    }
    .unwrap_or_default();
    for r in &rows {
        for s in r.ports.keys() {
            if !services.contains(s) {
                services.push(s.clone());
            }
        }
    }
    services.retain(|s| rows.iter().any(|r| r.ports.contains_key(s)));

    let mut lines = vec![
        ["WORKTREE", "BRANCH"]
            .iter()
            .map(|s| s.to_string())
            .chain(services.iter().cloned())
            .chain(["PATH".to_string()])
            .collect::<Vec<_>>(),
    ];
    let mut gone = false;
    for r in &rows {
        gone |= !r.exists;
        let mut line = vec![
            r.name.clone(),
            r.branch.clone().unwrap_or_else(|| "-".into()),
        ];
        line.extend(services.iter().map(|s| {
            r.ports
                .get(s)
                .map_or_else(|| "-".to_string(), u16::to_string)
        }));
        line.push(if r.moved {
            format!("{} (moved)", r.path)
        } else if r.exists {
            r.path.clone()
        } else {
            format!("{} (gone)", r.path)
        });
        lines.push(line);
    }
    let mut out = table(&lines);
    if gone {
        out.push_str("(gone): its directory is missing. If it was moved, run `git worktree repair` in it; if it was deleted, `git worktree-ports prune` gives its ports back\n");
    }
    if rows.iter().any(|r| r.moved) {
        out.push_str("(moved): moved without git knowing; run `git worktree repair` in it\n");
    }
    Ok(Report::ok(out))
}
