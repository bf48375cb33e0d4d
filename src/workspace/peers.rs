//! Worktrees and repositories as attribution and templates see them: known worktree paths,
//! other repositories' ports (`port(repo=...)`), the hook's state.

use std::path::{Path, PathBuf};

use crate::machine::Machine;
use crate::model::attribution::KnownWorktree;
use crate::registry::Registry;
use crate::render::Peers;
use crate::sys::git::WorktreeInfo;
use crate::sys::hooks;
pub use crate::sys::hooks::{
    Installed, PREVIOUS as PREVIOUS_HOOK, State as HookState, Uninstalled,
};

use super::{OtherRepository, Workspace, warn};

/// What `get --repo` and `env --repo` ask [`Peers`] with: the repository as the index knows
/// it (a path is made canonical, a name kept) and the worktree whose name to look for (`-w`,
/// else the current one's, else `main`), and the peers themselves.
pub fn peer_query(repo: &str, worktree: Option<&str>) -> (Peers, String, String) {
    let worktree = match worktree {
        Some(w) => w.to_string(),
        None => Workspace::open()
            .and_then(|ws| ws.current_key())
            .unwrap_or_else(|_| crate::sys::git::MAIN_KEY.to_string()),
    };
    let spec = Path::new(repo)
        .canonicalize()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| repo.to_string());
    (Workspace::peers(), spec, worktree)
}

/// A path as the kernel reports a process's cwd: canonical where it exists (a missing one
/// through its parent).
/// `wt` as the worktree a command runs for, for [`crate::model::attribution::classify`]'s `this`.
pub fn known_this(wt: &WorktreeInfo) -> KnownWorktree {
    KnownWorktree {
        path: canonical(&wt.path),
        repository: None,
        name: wt.key.clone(),
        exists: true,
    }
}

pub fn canonical(path: &Path) -> PathBuf {
    if let Ok(p) = path.canonicalize() {
        return p;
    }
    match (
        path.parent().and_then(|p| p.canonicalize().ok()),
        path.file_name(),
    ) {
        (Some(parent), Some(name)) => parent.join(name),
        _ => path.to_path_buf(),
    }
}

/// The worktrees `reg` records (but those `skip` names) and remembers as removed.
pub(super) fn recorded_worktrees(
    reg: &Registry,
    repository: Option<&Path>,
    skip: &dyn Fn(&str) -> bool,
) -> Vec<KnownWorktree> {
    let mut out = Vec::new();
    for key in reg.keys() {
        if skip(key) {
            continue;
        }
        if let Some(r) = reg.record(key) {
            let path = PathBuf::from(&r.path);
            if !path.is_absolute() {
                warn(&format!(
                    "the record of worktree {key} has path {:?}, which is not absolute: it matches no process; `git worktree-ports repair` rebuilds the records from git",
                    r.path
                ));
                continue;
            }
            out.push(KnownWorktree {
                exists: path.is_dir(),
                path: canonical(&path),
                repository: repository.map(Path::to_path_buf),
                name: key.to_string(),
            });
        }
    }
    for g in reg.gone_worktrees() {
        let path = PathBuf::from(&g.path);
        if !path.is_absolute() {
            continue;
        }
        out.push(KnownWorktree {
            exists: false,
            path: canonical(&path),
            repository: repository.map(Path::to_path_buf),
            name: g.key,
        });
    }
    out
}

impl Workspace {
    /// Every repository of the machine index (this one too), by display name, with its
    /// worktrees' ports, read without locks.
    pub fn peers() -> Peers {
        let mut peers = Peers::default();
        let Ok(machine) = Machine::from_env() else {
            return peers;
        };
        let (index, warnings) = machine.read();
        warnings.iter().for_each(|w| warn(w));
        for (common, entry) in &index.repositories {
            if !common.is_dir() {
                continue;
            }
            let other = OtherRepository::read(common);
            let worktrees = other
                .registry
                .allocations()
                .map(|(k, p)| (k.to_string(), p.to_map()))
                .collect();
            peers
                .0
                .insert(entry.name.clone(), (other.display, worktrees));
        }
        peers
    }

    /// Install our post-checkout hook (keeping and chaining a hook that was there; a hook
    /// manager's directory gets nothing); the hooks directory as it was, and what happened.
    pub fn install_hook(&self) -> anyhow::Result<(HookState, Installed)> {
        let state = self.hook_state()?;
        let done = hooks::install(&state)?;
        Ok((state, done))
    }

    /// Remove our hook, putting back the one that was there before.
    pub fn uninstall_hook(&self) -> anyhow::Result<(HookState, Uninstalled)> {
        let state = self.hook_state()?;
        let done = hooks::uninstall(&state)?;
        Ok((state, done))
    }

    /// The post-checkout hook as it is: where, whether ours and current, who manages the
    /// directory. A hooks directory inside a work tree is the team's, tracked with the code:
    /// treated like a manager's, whichever worktree this runs in.
    pub fn hook_state(&self) -> anyhow::Result<HookState> {
        let dir = self.repo.hooks_dir()?;
        let mut state = crate::sys::hooks::inspect(&dir, self.repo.workdir());
        if state.manager.is_none() && !state.ours && self.inside_a_worktree(&dir) {
            state.manager = Some(crate::sys::hooks::Manager::WorkTree);
        }
        Ok(state)
    }

    pub(super) fn inside_a_worktree(&self, dir: &Path) -> bool {
        let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        let common = self.repo.common_dir();
        let common = common
            .canonicalize()
            .unwrap_or_else(|_| common.to_path_buf());
        if dir.starts_with(&common) {
            return false;
        }
        self.worktrees().is_ok_and(|list| {
            list.iter().any(|w| {
                w.path
                    .canonicalize()
                    .is_ok_and(|p| dir.starts_with(&p) && !dir.starts_with(p.join(".git")))
            })
        })
    }

    /// Every worktree of this repository a process may run in: git's (living or not), the
    /// registry's entries git no longer has, and the worktrees removed with their directory
    /// gone (`gone_worktrees`), for [`crate::model::attribution`].
    pub fn known_worktrees(&self, reg: &Registry) -> anyhow::Result<Vec<KnownWorktree>> {
        let listed = self.worktrees()?;
        let mut out: Vec<KnownWorktree> = listed
            .iter()
            .map(|w| KnownWorktree {
                path: canonical(&w.path),
                repository: None,
                name: w.key.clone(),
                exists: !w.prunable && w.path.is_dir(),
            })
            .collect();
        out.extend(recorded_worktrees(reg, None, &|k| {
            listed.iter().any(|w| w.key == k)
        }));
        Ok(out)
    }

    /// The worktrees of every other repository of the machine index (from their registries'
    /// records: no git runs), for [`crate::model::attribution`].
    pub fn known_elsewhere(&self) -> Vec<KnownWorktree> {
        let Ok(machine) = Machine::from_env() else {
            return Vec::new();
        };
        let (index, _) = machine.read();
        let me = self.canonical_common_dir();
        let mut out = Vec::new();
        for common in index
            .repositories
            .keys()
            .filter(|c| **c != me && c.is_dir())
        {
            let other = OtherRepository::read_whole(common);
            out.extend(recorded_worktrees(
                &other.registry,
                Some(&other.display),
                &|_| false,
            ));
        }
        out
    }

    /// The common dir as the machine index keys it.
    pub fn canonical_common_dir(&self) -> PathBuf {
        let c = self.repo.common_dir();
        c.canonicalize().unwrap_or_else(|_| c.to_path_buf())
    }
}
