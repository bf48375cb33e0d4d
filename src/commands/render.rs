//! `render [-w <worktree>] [--all] [--force] [--json]`, and the render step shared by
//! `allocate` and `add`. Allocates first when a worktree has no ports yet.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{Value, json};

use crate::cli::RenderArgs;
use crate::commands::{Ctx, Report, allocate, warn};
use crate::config::Config;
use crate::git::WorktreeInfo;
use crate::registry::{self, Loaded};
use crate::render::{self, FileAction, Rendered, TemplateContext};

/// Run `render`.
pub fn run(args: &RenderArgs) -> anyhow::Result<Report> {
    let ctx = Ctx::open()?;
    // --all reads the registry once; a worktree whose ports need no write is not read again.
    let (targets, read): (Vec<WorktreeInfo>, Option<Loaded>) = if args.all {
        let loaded = registry::load_unlocked(&ctx.paths)?;
        loaded.warnings.iter().for_each(|w| warn(w));
        let targets = ctx
            .repo
            .worktrees()?
            .into_iter()
            .filter(|w| {
                !w.prunable
                    && w.path.is_dir()
                    && loaded.registry.allocated_ports.contains_key(&w.key)
            })
            .collect();
        (targets, Some(loaded))
    } else {
        (vec![ctx.target(args.worktree.as_deref())?], None)
    };
    let none = BTreeMap::new();
    let mut results = Vec::new();
    for wt in &targets {
        let config = Config::load(&wt.path)?;
        let held = read
            .as_ref()
            .and_then(|l| allocate::already_allocated(l, wt, &config, &none));
        let ports = match held {
            Some(ports) => ports.to_map(),
            None => allocate::ensure(&ctx, wt, &config, &none)?,
        };
        let rendered = render_worktree(&ctx, wt, &config, &ports, args.force)?;
        results.push((wt, rendered));
    }
    if args.json {
        let list: Vec<Value> = results
            .iter()
            .map(|(wt, r)| json!({"worktree": wt.key, "path": wt.path.to_string_lossy(), "files": files_json(r)}))
            .collect();
        return Ok(Report::json(&json!({"worktrees": list})));
    }
    if results.is_empty() {
        return Ok(Report::ok(
            "no worktree has ports yet; nothing to render\n".into(),
        ));
    }
    let mut out = String::new();
    for (wt, r) in &results {
        out.push_str(&summary(wt, r));
    }
    Ok(Report::ok(out))
}

/// Render one worktree, keep its files out of `git status`, and print warnings.
pub fn render_worktree(
    ctx: &Ctx,
    wt: &WorktreeInfo,
    config: &Config,
    ports: &BTreeMap<String, u16>,
    force: bool,
) -> anyhow::Result<Rendered> {
    let tctx = TemplateContext::new(wt, ctx.repo.common_dir(), config, ports);
    let rendered = render::render(wt, &tctx, force, &|rels: &[PathBuf]| {
        ctx.repo.tracked(wt, rels)
    })?;
    rendered.warnings.iter().for_each(|w| warn(w));
    let wanted = render::exclude_patterns(&rendered.exclude);
    if !render::missing_excludes(ctx.repo.common_dir(), &wanted).is_empty() {
        // info/exclude is shared by every worktree: parallel renders must not lose lines.
        let _lock = ctx.lock()?;
        render::add_excludes(ctx.repo.common_dir(), &wanted)?;
    }
    Ok(rendered)
}

/// `[{"path": ".env", "action": "written"}]`.
pub fn files_json(r: &Rendered) -> Value {
    json!(
        r.files
            .iter()
            .map(|(p, a)| json!({"path": p.to_string_lossy(), "action": a}))
            .collect::<Vec<_>>()
    )
}

/// `rendered .env, config/app.toml in feature` (nothing when nothing changed).
pub fn summary(wt: &WorktreeInfo, r: &Rendered) -> String {
    let names = |want: FileAction| -> Vec<String> {
        r.files
            .iter()
            .filter(|(_, a)| *a == want)
            .map(|(p, _)| p.display().to_string())
            .collect()
    };
    let written = names(FileAction::Written);
    let unchanged = names(FileAction::Unchanged);
    let mut out = String::new();
    if !written.is_empty() {
        out.push_str(&format!(
            "rendered {} in {}\n",
            written.join(", "),
            wt.path.display()
        ));
    }
    if written.is_empty() && !unchanged.is_empty() {
        out.push_str(&format!(
            "{} up to date in {}\n",
            unchanged.join(", "),
            wt.path.display()
        ));
    }
    out
}
