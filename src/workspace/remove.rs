//! What a worktree about to be removed leaves, and giving it back once git removed it.

use std::collections::BTreeMap;

use crate::registry::{Lock, Ports, Registry, WorktreeRecord};
use crate::sys::git::WorktreeInfo;

use super::{Workspace, worktree_id};

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
    /// `held` is the lock when the caller holds it already (it held it around git's removal).
    pub fn release_left(
        &self,
        leaving: &Leaving,
        held: Option<&Lock>,
    ) -> anyhow::Result<Option<BTreeMap<String, u16>>> {
        let taken;
        let lock = match held {
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
