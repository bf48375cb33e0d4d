//! `allocate [<worktree>] [--port S=P]... [--no-render] [--json]`: give a worktree its full
//! set of ports (idempotent: a worktree that has them keeps them, and nothing is written),
//! then render its files.

use crate::cli::AllocateArgs;
use crate::commands::{Report, render_and_report, wants};
use crate::workspace::Workspace;

/// Run `allocate`.
pub fn run(args: &AllocateArgs) -> anyhow::Result<Report> {
    let ws = Workspace::open()?;
    let target = ws.target(args.worktree.as_deref())?;
    let held = ws.ensure_ports(&target, &wants(&args.ports))?;
    render_and_report(&ws, &target, &held, !args.no_render, args.json)
}
