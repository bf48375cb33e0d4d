//! `add`: the real `git worktree add`, then the new worktree's ports. The registry lock is
//! never held while git runs: git runs the post-checkout hook, which takes it.

use std::collections::BTreeMap;

use crate::model::allocate::Want;
use crate::model::error::{Code, Error};
use crate::sys::git::{self, WorktreeInfo};
use crate::sys::hooks::INSIDE_ADD_ENV;

use super::{Holding, Target, Workspace, absolute, ports_inline, warn};

impl Workspace {
    /// `git worktree add <git_args>` (the hook told it runs inside `add`), then the new
    /// worktree's ports. Atomic from the user's view: if git fails, nothing is allocated; if
    /// allocation fails, the new worktree (and a branch `-b` created) is removed again.
    /// `branch`: the branch `-b` creates or `-B` resets, which a rollback deletes again or
    /// puts back where it was.
    pub fn add(
        &mut self,
        git_args: &[String],
        path: &str,
        branch: Option<&str>,
        wants: &BTreeMap<String, Want>,
    ) -> anyhow::Result<(Target, Holding)> {
        let before = self.repo.worktree_keys();
        let branch = branch.map(|b| (b.to_string(), git::branch_commit(b)));

        let git_args: Vec<std::ffi::OsString> = std::iter::once("add".into())
            .chain(git_args.iter().map(Into::into))
            .collect();
        let status = git::run_worktree_command(&git_args, &[(INSIDE_ADD_ENV, "1")])?;
        if !status.success() {
            return Err(Error::new(
                Code::GitFailed,
                format!("git worktree add failed ({status}); nothing was allocated"),
            )
            .into());
        }

        // By path first: `path` may also be an existing worktree's name (git name `feat` and a
        // new directory `feat`), and a name lookup would find the old one.
        let new = self.worktrees_new_since(&before)?;
        let wanted = absolute(path);
        let wt = new
        .iter()
        .find(|w| w.path.canonicalize().is_ok_and(|p| p == wanted))
        .or_else(|| (new.len() == 1).then(|| &new[0]))
        .cloned()
        .ok_or_else(|| {
            Error::new(
                Code::GitFailed,
                format!("git worktree add succeeded, but no new worktree is at {path}; run `git worktree-ports allocate` inside it"),
            )
        })?;

        let allocated = self.target_of(wt.clone()).and_then(|target| {
            let held = self.ensure_ports(&target, wants)?;
            Ok((target, held))
        });
        if allocated.is_err() {
            rollback(self, &wt, branch.as_ref());
        }
        allocated
    }
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
