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
use crate::model::error::{Code, Error};
use crate::sys::git;
use crate::workspace::{Workspace, find_worktree, not_found};

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
    let worktrees = ws.worktrees()?;
    let wt = find_worktree(&args.worktree, worktrees)
        .cloned()
        .ok_or_else(|| not_found(&args.worktree, worktrees))?;
    if wt.is_main {
        return Err(Error::new(
            Code::MainWorktree,
            "the main worktree cannot be removed; name a linked worktree (git worktree list shows them)",
        )
        .into());
    }
    let mut git_args: Vec<std::ffi::OsString> = vec!["remove".into()];
    if args.force {
        git_args.push("--force".into());
    }
    // `git worktree remove` runs no hook, so the lock may be held while it runs: no render of
    // ours writes into the directory git is deleting (git would fail with "Directory not
    // empty" and leave the worktree half removed), and no command of ours gives its name to
    // a new worktree before its entry is released.
    // `[on] release` first, outside the lock (it may take its time: `docker compose down`),
    // while the worktree is still there to run in.
    ws.before_release(&wt.key);
    let lock = ws.lock()?;
    // Who the entry belongs to, read before git deletes the worktree's git dir.
    let leaving = ws.leaving(&wt);
    // The path as it is: a non-UTF-8 path must reach git byte for byte.
    git_args.push(wt.path.clone().into_os_string());
    let status = git::run_worktree_command(&git_args, &[])?;
    if !status.success() {
        return Err(Error::new(
            Code::GitFailed,
            format!(
                "git worktree remove failed ({status}); the worktree and its ports are kept{}",
                if args.force {
                    ""
                } else {
                    " (use --force to remove it with changes)"
                }
            ),
        )
        .into());
    }
    let Some(released) = ws.release_left(&leaving, Some(&lock))? else {
        return Ok(Report::ok(format!(
            "removed {}; its name {} now belongs to a new worktree, whose ports were kept\n",
            wt.path.display(),
            wt.key
        ))
        .or_answer(
            args.json,
            RemoveAnswer {
                worktree: wt.key.clone(),
                path: wt.path.to_string_lossy().into_owned(),
                released: BTreeMap::new(),
                kept_for_new_worktree: true,
            },
        ));
    };
    if args.json {
        return Ok(Report::answer(RemoveAnswer {
            worktree: wt.key.clone(),
            path: wt.path.to_string_lossy().into_owned(),
            released,
            kept_for_new_worktree: false,
        }));
    }
    Ok(Report::ok(if released.is_empty() {
        format!("removed {} (it had no ports)\n", wt.path.display())
    } else {
        format!(
            "removed {}; released {}\n",
            wt.path.display(),
            ports_inline(&released)
        )
    }))
}
