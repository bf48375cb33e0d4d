//! `exec [-w <worktree>] -- <command> [args...]`: run a command with the worktree's port
//! variables set, allocating first when it has none. On Unix the command replaces this
//! process, so its exit code and signals pass through untouched.

use std::collections::BTreeMap;

use crate::cli::ExecArgs;
use crate::commands::Report;
use crate::workspace::Workspace;

/// Run `exec`; returns only if the command could not be started (or, off Unix, when it ends).
pub fn run(args: &ExecArgs) -> anyhow::Result<Report> {
    let ws = Workspace::open()?;
    let target = ws.target(args.worktree.as_deref())?;
    let held = ws.ensure_ports(&target, &BTreeMap::new())?;
    ws.after_allocation(&target, &held);
    Err(ws.exec(&target, &held, &args.command))
}
