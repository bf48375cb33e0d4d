//! `render [-w <worktree>] [--all] [--force] [--json]`: render the worktree's templates with
//! its ports. One worktree: allocates first when it has no ports yet. `--all`: every worktree
//! that has ports, with the ports it has, under the lock; never allocates.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::cli::RenderArgs;
use crate::commands::{Report, files_json, render_summary};
use crate::workspace::Workspace;

/// Run `render`.
pub fn run(args: &RenderArgs) -> anyhow::Result<Report> {
    let ws = Workspace::open()?;
    let none = BTreeMap::new();
    let mut results = Vec::new();
    if args.all {
        results = ws.render_all(args.force)?;
    } else {
        let target = ws.target(args.worktree.as_deref())?;
        let held = ws.ensure_ports(&target, &none)?;
        let rendered = ws.render(&target, &held, args.force)?;
        ws.after_allocation(&target, &held);
        results.push((target, rendered));
    }
    if args.json {
        let list: Vec<Value> = results
            .iter()
            .map(|(t, r)| json!({"worktree": t.wt.key, "path": t.wt.path.to_string_lossy(), "files": files_json(r)}))
            .collect();
        return Ok(Report::json(&json!({"worktrees": list})));
    }
    if results.is_empty() {
        return Ok(Report::ok(
            "no worktree has ports yet; nothing to render\n".into(),
        ));
    }
    let mut out = String::new();
    for (t, r) in &results {
        out.push_str(&render_summary(&t.wt.path, r));
    }
    Ok(Report::ok(out))
}
