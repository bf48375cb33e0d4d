//! `add [<git worktree add options>] <path> [<commit-ish>] [--port S=P]... [--no-render]
//! [--json]`: the real `git worktree add`, then allocate, then render.
//!
//! Atomic from the user's view: if git fails, nothing is allocated; if allocation fails, the
//! new worktree (and a branch `-b` created) is removed again. If rendering fails, worktree and
//! ports stay and the error says how to re-render. The registry lock is never held while git
//! runs: git runs the post-checkout hook, which takes it.

use crate::cli::AddArgs;
use crate::commands::{Report, render_and_report, wants};
use crate::workspace::Workspace;

/// Run `add`.
pub fn run(args: &AddArgs) -> anyhow::Result<Report> {
    let opts = &args.options;
    let mut ws = Workspace::open()?;
    let path = opts.path.as_deref().expect("validated: add has a path");
    let branch = opts.new_branch.as_deref().or(opts.reset_branch.as_deref());
    let (target, held) = ws.add(&opts.git_args, path, branch, &wants(&opts.ports))?;
    render_and_report(&ws, &target, &held, !opts.no_render, opts.json)
}
