//! `add [<git worktree add options>] <path> [<commit-ish>] [--port S=P]... [--no-render]
//! [--json]`: the real `git worktree add`, then allocate, then render.
//!
//! Atomic from the user's view: if git fails, nothing is allocated; if allocation fails, the
//! new worktree (and a branch `-b` created) is removed again. If rendering fails, worktree and
//! ports stay and the error says how to re-render. The registry lock is never held while git
//! runs: git runs the post-checkout hook, which takes it.

use crate::cli::AddArgs;
use crate::commands::{Report, ports_inline, render_and_report, wants};
use crate::model::error::{Code, Error};
use crate::sys::git::{self, WorktreeInfo};
use crate::sys::hooks::INSIDE_ADD_ENV;
use crate::workspace::{Workspace, absolute, warn};

/// Run `add`.
pub fn run(args: &AddArgs) -> anyhow::Result<Report> {
    let opts = &args.options;
    let ws = Workspace::open()?;
    let before: Vec<String> = ws.repo().worktrees()?.into_iter().map(|w| w.key).collect();
    // What a rollback restores: a branch -b creates is deleted again; a branch -B resets is
    // put back where it was (or deleted, if -B created it).
    let branch = opts
        .new_branch
        .as_deref()
        .or(opts.reset_branch.as_deref())
        .map(|b| (b.to_string(), git::branch_commit(b)));

    let mut git_args: Vec<std::ffi::OsString> = vec!["add".into()];
    git_args.extend(opts.git_args.iter().map(Into::into));
    let status = git::run_worktree_command(&git_args, &[(INSIDE_ADD_ENV, "1")])?;
    if !status.success() {
        return Err(Error::new(
            Code::GitFailed,
            format!("git worktree add failed ({status}); nothing was allocated"),
        )
        .into());
    }

    let path = opts.path.as_deref().expect("validated: add has a path");
    let after = ws.repo().worktrees()?;
    // By path first: `path` may also be an existing worktree's name (git name `feat` and a
    // new directory `feat`), and a name lookup would find the old one.
    let new: Vec<&WorktreeInfo> = after.iter().filter(|w| !before.contains(&w.key)).collect();
    let wanted = absolute(path);
    let wt = new
        .iter()
        .find(|w| w.path.canonicalize().is_ok_and(|p| p == wanted))
        .copied()
        .or_else(|| (new.len() == 1).then(|| new[0]))
        .cloned()
        .ok_or_else(|| {
            Error::new(
                Code::GitFailed,
                format!("git worktree add succeeded, but no new worktree is at {path}; run `git worktree-ports allocate` inside it"),
            )
        })?;

    let allocated = ws.target_of(wt.clone()).and_then(|target| {
        let held = ws.ensure_ports(&target, &wants(&opts.ports))?;
        Ok((target, held))
    });
    let (target, held) = match allocated {
        Ok(v) => v,
        Err(err) => {
            rollback(&ws, &wt, branch.as_ref());
            return Err(err);
        }
    };
    render_and_report(&ws, &target, &held, !opts.no_render, opts.json)
}

/// Undo `git worktree add` after a failed allocation: remove the worktree (locked or not),
/// give back whatever was saved for it, and restore the branch.
fn rollback(ws: &Workspace, wt: &WorktreeInfo, branch: Option<&(String, Option<String>)>) {
    let path = &wt.path;
    let leaving = ws.leaving(wt);
    if !git::force_remove_worktree(path) {
        warn(&format!(
            "could not remove the new worktree {} again; remove it with `git worktree remove -f -f {}`, then `git worktree-ports prune`",
            path.display(),
            path.display()
        ));
        return;
    }
    let mut what = format!("removed the new worktree {} again", path.display());
    match ws.release_left(&leaving, None) {
        Ok(Some(released)) if !released.is_empty() => {
            what.push_str(&format!(", gave back {}", ports_inline(&released)));
        }
        Ok(_) => {}
        Err(e) => warn(&format!(
            "could not give back the new worktree's ports ({e:#}); run `git worktree-ports prune`"
        )),
    }
    match branch {
        Some((b, None)) if git::delete_branch(b) => {
            what.push_str(&format!(" and deleted its new branch {b}"));
        }
        Some((b, Some(commit))) if git::branch_commit(b).as_ref() != Some(commit) => {
            if git::reset_branch(b, commit) {
                what.push_str(&format!(" and put branch {b} back at {commit}"));
            } else {
                warn(&format!(
                    "could not put branch {b} back at {commit}; run `git branch -f {b} {commit}`"
                ));
            }
        }
        _ => {}
    }
    warn(&what);
}
