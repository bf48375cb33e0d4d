//! `allocate [<worktree>] [--port S=P]... [--move S]... [--no-render] [--json]`: give a
//! worktree its full set of ports (idempotent: a worktree that has them keeps them, and
//! nothing is written), then render its files. A kept port that a process outside the
//! worktree holds is reported, one line per service, with the `--move` that fixes it.

use crate::cli::AllocateArgs;
use crate::commands::{Report, render_and_report, wants};
use crate::model::allocate::Want;
use crate::workspace::Workspace;

/// Run `allocate`.
pub fn run(args: &AllocateArgs) -> anyhow::Result<Report> {
    let ws = Workspace::open()?;
    let target = ws.target(args.worktree.as_deref())?;
    let mut wants = wants(&args.ports);
    for service in &args.moves {
        // A pin says where to; a move alone takes the automatic choice.
        wants.entry(service.clone()).or_insert(Want::Move);
    }
    let held = ws.ensure_ports(&target, &wants)?;
    ws.warn_foreign_holders(&target, &held);
    render_and_report(&ws, &target, &held, !args.no_render, args.json)
}
