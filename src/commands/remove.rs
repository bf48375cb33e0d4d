//! `remove <worktree> [--force]`: `git worktree remove`, then give its ports back. If git
//! refuses, the ports stay.
//!
//! Releases only the removed worktree's entry: git may give its name to a new worktree while
//! this command waits for the lock (git reuses free names), and that worktree's ports are not
//! ours to release. The entry is ours when its identity token is the removed worktree's, or,
//! for an entry written before identities, when it is unchanged since before git ran.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Serialize;

use crate::cli::RemoveArgs;
use crate::commands::{Report, ports_inline};
use crate::workspace::Workspace;

/// `remove --json`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct RemoveAnswer {
    /// The removed worktree's name.
    pub worktree: String,
    /// Its directory (gone now).
    pub path: String,
    /// Service -> the port given back.
    pub released: BTreeMap<String, u16>,
    /// True when a new worktree took the name while this one was removed: its ports stay.
    pub kept_for_new_worktree: bool,
}

/// Run `remove`.
pub fn run(args: &RemoveArgs) -> anyhow::Result<Report> {
    let ws = Workspace::open()?;
    let removed = ws.remove(&args.worktree, args.force)?;
    let answer = |released: BTreeMap<String, u16>, kept: bool| RemoveAnswer {
        worktree: removed.key.clone(),
        path: removed.path.to_string_lossy().into_owned(),
        released,
        kept_for_new_worktree: kept,
    };
    let path = removed.path.display();
    Ok(match removed.released {
        None => Report::ok(format!(
            "removed {path}; its name {} now belongs to a new worktree, whose ports were kept\n",
            removed.key
        ))
        .or_answer(args.json, answer(BTreeMap::new(), true)),
        Some(released) => Report::ok(match released.is_empty() {
            true => format!("removed {path} (it had no ports)\n"),
            false => format!("removed {path}; released {}\n", ports_inline(&released)),
        })
        .or_answer(args.json, answer(released, false)),
    })
}
