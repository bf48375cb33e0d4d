//! USE CASES, between the commands and the rest: the only layer that combines our files, the
//! rules and the OS. One file per use case:
//!
//! - `view`: git's worktrees as seen from here (read once per command; a worktree moved with
//!   `mv` is where we stand), the target worktree (it must exist), gone entries, holdings;
//! - `taken`: the machine outside this repository (index, other registries, leases);
//! - `ensure`: a worktree's ports (fast path, locks, allocation, names, save);
//! - `render`: the template context, which files a worktree should have, plan and apply;
//! - `lifecycle`: `[on] allocate` / `[on] release`;
//! - `remove`: what a removed worktree leaves and giving it back;
//! - `peers`: known worktrees for attribution, other repositories for templates, the hook.
//!
//! Prints warnings on stderr as they happen (recovery, ephemeral ports, render warnings);
//! never prints to stdout.

mod add;
mod check;
mod diagnose;
mod ensure;
mod hook;
mod init;
mod install;
mod lease;
pub mod lifecycle;
mod list;
mod peers;
mod prune;
mod release;
mod remove;
mod render;
mod repair;
mod status;
mod suggest;
mod taken;
mod view;

pub use check::*;
pub use diagnose::*;
pub use hook::*;
pub use init::*;
pub use install::*;
pub use lease::*;
pub use list::*;
pub use peers::*;
pub use prune::*;
pub use remove::*;
pub use render::*;
pub use repair::*;
pub use status::*;
pub use suggest::*;
pub use taken::*;
pub use view::*;

use std::collections::BTreeMap;
use std::path::Path;

use crate::registry::{self, Loaded, Lock, Paths, Registry};
use crate::sys::git::{Repo, WorktreeInfo};
use crate::sys::lock;

use lifecycle::ReleaseJob;

/// `web 8081, db 5433`.
pub fn ports_inline(ports: &BTreeMap<String, u16>) -> String {
    let parts: Vec<String> = ports.iter().map(|(s, p)| format!("{s} {p}")).collect();
    parts.join(", ")
}

/// What a command says while it waits for a lock (after about a second).
pub fn say_waiting(path: &Path) {
    eprintln!("git-worktree-ports: waiting for lock on {}", path.display());
}

/// Seconds since the epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub use crate::output::warn::{note, warn};

/// Let go of a registry the command is done with. A large one is freed on another thread: a
/// 10,000-worktree registry is 40,000 allocations, 1.6 ms to free, and the process is about
/// to exit. Small ones (a thread costs more than they do) are freed here.
pub fn dispose(registry: Registry) {
    if registry.size() > 2_000 {
        // A thread that cannot start drops the registry here instead.
        let _ = std::thread::Builder::new().spawn(move || drop(registry));
    }
}

/// One repository and its registry files.
pub struct Workspace {
    repo: Repo,
    paths: Paths,
    /// `[on] release` commands of worktrees a full range took ports back from (lazy
    /// reclaim, under the lock): run once the allocation is saved and the lock is let go.
    reclaimed: std::cell::RefCell<Vec<ReleaseJob>>,
    /// Ports of this repository's worktrees that the allocation running is about to move (a
    /// repository listed again holds them with another): not warned about as held twice
    /// while the worktrees before them are given new ones.
    moving: std::cell::RefCell<crate::model::portset::PortSet>,
    /// git's worktrees as seen from here, read once per command ([`Workspace::worktrees`]).
    worktrees: std::cell::OnceCell<Vec<WorktreeInfo>>,
    /// `core.sharedRepository`, read once, when something is first written under the git dir.
    sharing: std::cell::OnceCell<crate::model::sharing::Sharing>,
}

impl Workspace {
    /// Open the repository of the current directory (or of `GIT_DIR`).
    pub fn open() -> anyhow::Result<Workspace> {
        Ok(Workspace::of(Repo::discover()?))
    }

    /// Open the repository whose common dir is `common` (another repository of the machine).
    pub fn open_at(common: &Path) -> anyhow::Result<Workspace> {
        Ok(Workspace::of(Repo::open_at(common)?))
    }

    fn of(repo: Repo) -> Workspace {
        Workspace {
            paths: Paths::new(repo.common_dir()),
            repo,
            reclaimed: Default::default(),
            moving: Default::default(),
            worktrees: Default::default(),
            sharing: Default::default(),
        }
    }

    /// How the repository is shared (`core.sharedRepository`): the modes of everything the
    /// tool makes under its git dir, so every member of a shared repository's group can
    /// allocate. A value git does not know is an error naming it.
    pub fn sharing(&self) -> anyhow::Result<crate::model::sharing::Sharing> {
        use crate::model::sharing::Sharing;
        if let Some(s) = self.sharing.get() {
            return Ok(*s);
        }
        let s = match self.repo.shared_repository()? {
            None => Sharing::Private,
            Some(v) => Sharing::parse(&v).map_err(|m| {
                crate::model::error::Error::new(
                    crate::model::error::Code::ConfigInvalid,
                    format!(
                        "{m}; fix it with `git config core.sharedRepository group` (or unset it)"
                    ),
                )
            })?,
        };
        Ok(*self.sharing.get_or_init(|| s))
    }

    /// The mode of a file the tool writes under the git dir (0644 unshared).
    pub(crate) fn git_dir_mode(&self) -> anyhow::Result<crate::sys::fsio::Mode> {
        Ok(registry::mode_for(self.sharing()?))
    }

    /// The repository.
    pub fn repo(&self) -> &Repo {
        &self.repo
    }

    /// Its registry files.
    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    /// Take the registry lock, saying so when it takes a while.
    pub fn lock(&self) -> anyhow::Result<Lock> {
        let paths = Paths {
            sharing: self.sharing()?,
            ..self.paths.clone()
        };
        Lock::acquire(&paths, lock::timeout_from_env()?, &say_waiting)
    }

    /// The registry under `lock`, printing recovery warnings: `unlocked` itself when the
    /// file it was read from is still the registry ([`Lock::reload`]), else a fresh load.
    pub fn load_locked(&self, lock: &Lock, unlocked: Option<Loaded>) -> anyhow::Result<Registry> {
        let loaded = match unlocked {
            Some(loaded) => lock.reload(loaded)?,
            None => lock.load()?,
        };
        loaded.warnings.iter().for_each(|w| warn(w));
        Ok(loaded.registry)
    }

    /// Save under `lock`, printing the warning of a backup that could not be written.
    pub fn save(&self, lock: &Lock, reg: &mut Registry) -> anyhow::Result<()> {
        self.save_then(lock, reg, &mut |_| Ok(()))
    }

    /// [`Workspace::save`], calling `before_commit` with the new file's stamp before it
    /// replaces `ports.json` ([`Lock::save_then`]).
    pub fn save_then(
        &self,
        lock: &Lock,
        reg: &mut Registry,
        before_commit: crate::sys::fsio::BeforeRename<'_>,
    ) -> anyhow::Result<()> {
        if let Some(w) = lock.save_then(reg, before_commit)? {
            warn(&w);
        }
        Ok(())
    }

    /// The registry without the lock (readers), printing recovery warnings: read through
    /// [`Workspace::view`], which every use case asks.
    pub(super) fn load_unlocked(&self) -> anyhow::Result<Registry> {
        let loaded = self.read()?;
        loaded.warnings.iter().for_each(|w| warn(w));
        Ok(loaded.registry)
    }

    /// The ports `key` holds now (read without the lock; none when the registry cannot be
    /// read: the allocation that follows says why).
    pub fn ports_now(&self, key: &str) -> BTreeMap<String, u16> {
        (self.read().ok())
            .and_then(|l| l.registry.ports(key).map(registry::Ports::to_map))
            .unwrap_or_default()
    }

    /// The lock-free load as it is, warnings not yet printed (for fast paths that may go on
    /// to lock and reuse it).
    pub fn read(&self) -> anyhow::Result<Loaded> {
        registry::load_unlocked(&self.paths)
    }
}
