//! The machine outside this repository: the index, the other repositories' registries (read
//! without their locks) and the leases, as one allocation sees them.

use std::path::{Path, PathBuf};

use crate::machine::{Index, Machine};
use crate::model::allocate::{Owner, Taken};
use crate::model::names;
use crate::registry::{self, Loaded, Paths, Registry};
use crate::sys::fsio;
use crate::sys::lock::{self, FileLock};
use crate::sys::procs;

use super::{Workspace, say_waiting, unix_now, warn};

/// The machine index, held under the machine lock for one allocation.
pub(super) struct MachineView {
    pub(super) machine: Machine,
    pub(super) _lock: FileLock,
    pub(super) index: Index,
    pub(super) changed: bool,
}

/// Another repository's allocations, as one allocation sees them.
pub struct Other {
    /// How to name the repository to a user: its main worktree (or its bare git dir).
    pub display: PathBuf,
    /// Its registry (empty when it could not be read).
    pub registry: Registry,
    /// Entries salvaged from a registry whose file and backup are both damaged.
    pub salvaged: Vec<(String, String, u16)>,
}

impl Other {
    /// Read the ports of the repository whose common dir is `common` (its records and
    /// history skipped), warning about damage.
    pub fn read(common: &Path) -> Other {
        Other::read_with(common, registry::load_ports_unlocked)
    }

    /// [`Other::read`], the whole registry (records too: `list --all`).
    pub fn read_whole(common: &Path) -> Other {
        Other::read_with(common, registry::load_unlocked)
    }

    fn read_with(common: &Path, load: fn(&Paths) -> anyhow::Result<Loaded>) -> Other {
        let display = names::display_path(common);
        let paths = Paths::new(common);
        match load(&paths) {
            Ok(loaded) => {
                loaded
                    .warnings
                    .iter()
                    .for_each(|w| warn(&format!("repository {}: {w}", display.display())));
                Other {
                    display,
                    registry: loaded.registry,
                    salvaged: Vec::new(),
                }
            }
            Err(e) => {
                let mut salvaged = Vec::new();
                for file in [&paths.file, &paths.backup] {
                    if let Ok(Some(bytes)) = fsio::read_regular(file) {
                        salvaged.extend(
                            crate::model::salvage::allocated_ports(&bytes)
                                .into_iter()
                                .filter_map(|(w, s, p)| Some((w, s, u16::try_from(p).ok()?))),
                        );
                    }
                }
                warn(&format!(
                    "the registry of repository {} cannot be read ({}); its {} readable ports are treated as taken, any others it holds are unknown to this allocation: run `git worktree-ports repair` there",
                    display.display(),
                    crate::model::error::classify(&e).message,
                    salvaged.len()
                ));
                Other {
                    display,
                    registry: Registry::default(),
                    salvaged,
                }
            }
        }
    }

    /// Add its ports to `taken`, owned by this repository. A port two repositories both
    /// registered (before they were coordinated) keeps its first owner.
    pub fn add_to<'a>(&'a self, taken: &mut Taken<'a>) {
        for (wt, ports) in self.registry.allocations() {
            for (service, port) in ports.iter() {
                let _ = taken.insert(port, Owner::elsewhere(&self.display, wt, service));
            }
        }
        for (wt, service, port) in &self.salvaged {
            let _ = taken.insert(*port, Owner::elsewhere(&self.display, wt, service));
        }
    }
}

/// Everything outside this repository that holds ports: the other repositories of the
/// machine index, and the leases.
#[derive(Default)]
pub struct Elsewhere {
    /// The other repositories' registries.
    pub others: Vec<Other>,
    /// Leased ports, with their lease ids.
    pub leases: Vec<(u16, String)>,
}

impl Elsewhere {
    /// What `index` lists, but the repository `except`.
    pub fn read(index: &Index, except: Option<&Path>) -> Elsewhere {
        Elsewhere {
            others: others(index, except),
            leases: (index.leased_ports().into_iter())
                .map(|(p, id)| (p, id.to_string()))
                .collect(),
        }
    }

    /// Add all of it to `taken`.
    pub fn add_to<'a>(&'a self, taken: &mut Taken<'a>) {
        for other in &self.others {
            other.add_to(taken);
        }
        for (port, id) in &self.leases {
            let _ = taken.insert(*port, Owner::lease(id));
        }
    }
}

/// Take the machine lock, saying so when it takes a while.
pub fn lock_machine(machine: &Machine) -> anyhow::Result<FileLock> {
    machine.lock(lock::timeout_from_env()?, &say_waiting)
}

/// Drop the leases of `index` whose TTL passed or whose holder process died (the caller holds
/// the machine lock and saves); returns them.
pub fn reclaim_leases(index: &mut Index) -> Vec<(String, crate::machine::Lease)> {
    index.reclaim_leases(unix_now(), &procs::alive)
}

/// The ports of every repository of `index` but `except` whose directory is still there.
pub fn others(index: &Index, except: Option<&Path>) -> Vec<Other> {
    (index.repositories.keys())
        .filter(|p| Some(p.as_path()) != except && p.is_dir())
        .map(|common| Other::read(common))
        .collect()
}

impl Workspace {
    /// The machine index under its lock, with repositories whose common dir is gone dropped.
    pub(super) fn machine_view(&self) -> anyhow::Result<MachineView> {
        let machine = Machine::from_env()?;
        let lock = lock_machine(&machine)?;
        let (mut index, warnings) = machine.load(&lock)?;
        warnings.iter().for_each(|w| warn(w));
        let mut changed = !index.drop_gone().is_empty();
        changed |= !reclaim_leases(&mut index).is_empty();
        Ok(MachineView {
            machine,
            _lock: lock,
            index,
            changed,
        })
    }

    /// The registries of every other listed repository, read without their locks (a rename
    /// gives a whole file). A damaged one is read from its backup; when both are damaged,
    /// what can be salvaged from them is taken, and the rest of its ports is unknown: said.
    pub(super) fn other_registries(&self, index: &Index) -> Elsewhere {
        Elsewhere::read(index, Some(&self.canonical_common_dir()))
    }
}
