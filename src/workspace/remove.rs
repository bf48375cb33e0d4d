//! `remove`: `git worktree remove`, then giving the worktree's ports back; what a worktree
//! about to be removed leaves, and releasing it once git removed it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::model::error::{Code, Error};
use crate::registry::{Lock, Ports, Registry, WorktreeRecord};
use crate::sys::git::{self, WorktreeInfo};

use super::{Workspace, find_worktree, not_found, worktree_id};

/// What a worktree about to be removed leaves in the registry, read before git deletes it
/// (and its identity token with it).
#[derive(Debug)]
pub struct Leaving {
    key: String,
    id: Option<String>,
    before: Option<(Option<WorktreeRecord>, Option<Ports>)>,
}

pub(super) fn entry(reg: &Registry, key: &str) -> (Option<WorktreeRecord>, Option<Ports>) {
    (reg.record(key), reg.ports(key).cloned())
}

impl Workspace {
    /// Note what `wt` holds before git removes it.
    pub fn leaving(&self, wt: &WorktreeInfo) -> Leaving {
        Leaving {
            key: wt.key.clone(),
            id: worktree_id(wt),
            before: self.read().ok().map(|l| entry(&l.registry, &wt.key)),
        }
    }

    /// After git removed a worktree: release its entry, if it is still its own. git reuses
    /// free names, and a new worktree may have taken this one's name (and allocated) while we
    /// waited for the lock: the entry is ours when it carries the removed worktree's identity
    /// token or, for an entry written before tokens, when it is unchanged since
    /// [`Workspace::leaving`]. None when the name now belongs to a new worktree.
    /// `lock_taken` is the lock when the caller holds it already (it held it around git's
    /// removal).
    pub fn release_left(
        &self,
        leaving: &Leaving,
        lock_taken: Option<&Lock>,
    ) -> anyhow::Result<Option<BTreeMap<String, u16>>> {
        let taken;
        let lock = match lock_taken {
            Some(l) => l,
            None => {
                taken = self.lock()?;
                &taken
            }
        };
        let mut reg = self.load_locked(lock, None)?;
        let now = entry(&reg, &leaving.key);
        let ours = match now.0.as_ref().and_then(|r| r.id.as_ref()) {
            Some(owner) => Some(owner) == leaving.id.as_ref(),
            None => leaving.before.as_ref().is_none_or(|b| *b == now),
        };
        if !ours {
            return Ok(None);
        }
        if !reg.knows(&leaving.key) {
            return Ok(Some(BTreeMap::new()));
        }
        let released = reg.remove_gone_worktree(&leaving.key);
        self.save(lock, &mut reg)?;
        Ok(Some(released))
    }
}

/// What `remove` did.
#[derive(Debug)]
pub struct Removed {
    /// The removed worktree's registry key.
    pub key: String,
    /// Its directory (gone now).
    pub path: PathBuf,
    /// Service -> the port given back; None when a new worktree took the name meanwhile (its
    /// ports stay).
    pub released: Option<BTreeMap<String, u16>>,
}

impl Workspace {
    /// `git worktree remove` the worktree `spec` names, then give its ports back. If git
    /// refuses, the worktree and its ports stay. The main worktree cannot be removed.
    pub fn remove(&self, spec: &str, force: bool) -> anyhow::Result<Removed> {
        let worktrees = self.worktrees()?;
        let wt = find_worktree(spec, worktrees)
            .cloned()
            .ok_or_else(|| not_found(spec, worktrees))?;
        if wt.is_main {
            return Err(Error::new(
                Code::MainWorktree,
                "the main worktree cannot be removed; name a linked worktree (git worktree list shows them)",
            )
            .into());
        }
        let mut git_args: Vec<std::ffi::OsString> = vec!["remove".into()];
        if force {
            git_args.push("--force".into());
        }
        // `git worktree remove` runs no hook, so the lock may be held while it runs: no render
        // of ours writes into the directory git is deleting (git would fail with "Directory
        // not empty" and leave the worktree half removed), and no command of ours gives its
        // name to a new worktree before its entry is released.
        // `[on] release` first, outside the lock (it may take its time: `docker compose
        // down`), while the worktree is still there to run in.
        self.before_release(&wt.key);
        let lock = self.lock()?;
        // Who the entry belongs to, read before git deletes the worktree's git dir.
        let leaving = self.leaving(&wt);
        // The path as it is: a non-UTF-8 path must reach git byte for byte.
        git_args.push(wt.path.clone().into_os_string());
        let status = git::run_worktree_command(&git_args, &[])?;
        if !status.success() {
            return Err(Error::new(
                Code::GitFailed,
                format!(
                    "git worktree remove failed ({status}); the worktree and its ports are kept{}",
                    if force {
                        ""
                    } else {
                        " (use --force to remove it with changes)"
                    }
                ),
            )
            .into());
        }
        let released = self.release_left(&leaving, Some(&lock))?;
        Ok(Removed {
            key: wt.key,
            path: wt.path,
            released,
        })
    }
}
