//! `init`: write a commented `.worktree-ports/config.toml` (the built-in services) and
//! `.worktree-ports/templates/.env.tera` into the current worktree, for the user to edit and
//! commit. Never overwrites: an existing file is kept and reported.

use std::fmt::Write as _;

use crate::cli::InitArgs;
use crate::commands::Report;
use crate::workspace::{Workspace, write_starting_files};

/// Run `init`.
pub fn run(args: &InitArgs) -> anyhow::Result<Report> {
    let ws = Workspace::open()?;
    let target = ws.target(args.worktree.as_deref())?;
    let mut out = String::new();
    for (rel, written) in write_starting_files(&target)? {
        match written {
            true => writeln!(out, "wrote {rel}").ok(),
            false => writeln!(out, "kept {rel} (it exists)").ok(),
        };
    }
    out.push_str("edit them, commit them, and every worktree gets these services and files\n");
    Ok(Report::ok(out))
}
