//! `render [-w <worktree>] [--all] [--force] [--json]`: render the worktree's templates with
//! its ports. Allocates first when a worktree has no ports yet.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::cli::RenderArgs;
use crate::commands::{Report, files_json, render_summary};
use crate::registry::Ports;
use crate::workspace::{Target, Workspace, held_ports, warn};

/// Run `render`.
pub fn run(args: &RenderArgs) -> anyhow::Result<Report> {
    let ws = Workspace::open()?;
    let none = BTreeMap::new();
    let mut results = Vec::new();
    if args.all {
        // --all reads the registry once; a worktree whose ports need no write is not read
        // again.
        let loaded = ws.read()?;
        loaded.warnings.iter().for_each(|w| warn(w));
        let targets: Vec<Target> = ws
            .repo()
            .worktrees()?
            .into_iter()
            .filter(|w| !w.prunable && w.path.is_dir() && loaded.registry.ports(&w.key).is_some())
            .map(|w| ws.target_of(w))
            .collect::<anyhow::Result<_>>()?;
        for target in targets {
            let ports = match held_ports(&loaded, &target, &none) {
                Some(ports) => Ports::to_map(ports),
                None => ws.ensure_ports(&target, &none)?,
            };
            let rendered = ws.render(&target, &ports, args.force)?;
            results.push((target, rendered));
        }
    } else {
        let target = ws.target(args.worktree.as_deref())?;
        let ports = ws.ensure_ports(&target, &none)?;
        let rendered = ws.render(&target, &ports, args.force)?;
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
