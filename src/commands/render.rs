//! `render [-w <worktree>] [--all] [--force] [--json]`: render the worktree's templates with
//! its ports. One worktree: allocates first when it has no ports yet. `--all`: every worktree
//! that has ports, with the ports it has, under the lock; never allocates.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Serialize;

use crate::cli::RenderArgs;
use crate::commands::{FileAnswer, Report, files, render_summary};
use crate::workspace::Workspace;

/// `render --json`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct RenderAnswer {
    /// Each worktree rendered.
    pub worktrees: Vec<RenderedWorktree>,
}

/// One worktree of `render --json`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct RenderedWorktree {
    /// The worktree's name.
    pub worktree: String,
    /// Its directory.
    pub path: String,
    /// Its files and what happened to each.
    pub files: Vec<FileAnswer>,
}

/// Run `render`.
pub fn run(args: &RenderArgs) -> anyhow::Result<Report> {
    let ws = Workspace::open()?;
    let none = BTreeMap::new();
    let mut results = Vec::new();
    if args.all {
        results = ws.render_every_worktree(args.force)?;
    } else {
        let target = ws.target(args.worktree.as_deref())?;
        let held = ws.ensure_ports(&target, &none)?;
        let rendered = ws.render(&target, &held, args.force)?;
        ws.after_allocation(&target, &held);
        results.push((target, rendered));
    }
    if args.json {
        let worktrees = (results.iter())
            .map(|(t, r)| RenderedWorktree {
                worktree: t.wt.key.clone(),
                path: t.wt.path.to_string_lossy().into_owned(),
                files: files(r),
            })
            .collect();
        return Ok(Report::answer(RenderAnswer { worktrees }));
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
