//! The machine outside this repository: the index, the other repositories' registries (read
//! without their locks), the leases and the block claims; and [`machine_taken`], the one
//! taken set every way of choosing a port sees (allocation, blocks, `--move`, lazy reclaim,
//! leases, `suggest`, `check`).

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use crate::machine::{Index, Machine};
use crate::model::allocate::{Owner, Taken};
use crate::model::names;
use crate::registry::{self, Loaded, Paths, Registry};
use crate::sys::fsio::{self, Stamp};
use crate::sys::lock::{self, FileLock};
use crate::sys::procs;

use super::{Workspace, say_waiting, unix_now, warn};

/// The machine index, held under the machine lock for one allocation.
pub(super) struct MachineView {
    pub(super) machine: Machine,
    pub(super) _lock: FileLock,
    pub(super) index: Index,
    pub(super) changed: bool,
    /// Only the repositories' kept ports changed ([`Machine::save_ports`]).
    pub(super) ports_changed: bool,
}

/// Another repository's allocations, as one allocation sees them.
#[derive(Clone)]
pub struct OtherRepository {
    /// Its common dir, as the index names it.
    pub common: PathBuf,
    /// How to name the repository to a user: its main worktree (or its bare git dir).
    pub display: PathBuf,
    /// Its registry (empty when it could not be read).
    pub registry: Registry,
    /// Entries salvaged from a registry whose file and backup are both damaged.
    pub salvaged: Vec<(String, String, u16)>,
    /// The stamp of the `ports.json` `registry` was read from (None: recovered, damaged, or
    /// not read).
    pub stamp: Option<Stamp>,
    /// Its ports as the machine index lists them, when its registry is still the file the
    /// index took them from ([`Detail::Ports`]): `registry` is then not read (empty).
    pub listed: Option<Vec<[u16; 2]>>,
}

/// How much of the other repositories [`OutsideHoldings::read`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// Which ports they hold: a repository whose registry is unchanged since the machine
    /// index listed its ports is taken from the index after one stat (choosing ports).
    Ports,
    /// Which worktree and service holds each port: every registry is read (`check`,
    /// `doctor`, which name them).
    Owners,
}

impl OtherRepository {
    /// Read the ports of the repository whose common dir is `common` (its records and
    /// history skipped), warning about damage.
    pub fn read(common: &Path) -> OtherRepository {
        OtherRepository::read_with(common, registry::load_ports_unlocked)
    }

    /// [`OtherRepository::read`], the whole registry (records too: `list --all`).
    pub fn read_whole(common: &Path) -> OtherRepository {
        OtherRepository::read_with(common, registry::load_unlocked)
    }

    fn read_with(common: &Path, load: fn(&Paths) -> anyhow::Result<Loaded>) -> OtherRepository {
        let display = names::display_path(common);
        let paths = Paths::new(common);
        match load(&paths) {
            Ok(loaded) => {
                loaded
                    .warnings
                    .iter()
                    .for_each(|w| warn(&format!("repository {}: {w}", display.display())));
                OtherRepository {
                    common: common.to_path_buf(),
                    display,
                    registry: loaded.registry,
                    salvaged: Vec::new(),
                    stamp: loaded.stamp,
                    listed: None,
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
                OtherRepository {
                    common: common.to_path_buf(),
                    display,
                    registry: Registry::default(),
                    salvaged,
                    stamp: None,
                    listed: None,
                }
            }
        }
    }

    /// The repository at `common` by the ports the machine index lists for it.
    fn listed(common: &Path, runs: &[[u16; 2]]) -> OtherRepository {
        OtherRepository {
            common: common.to_path_buf(),
            display: names::display_path(common),
            registry: Registry::default(),
            salvaged: Vec::new(),
            stamp: None,
            listed: Some(runs.to_vec()),
        }
    }

    /// Add its ports to `taken`, owned by this repository. A port that already has an owner
    /// (two repositories registered it before they were coordinated, or a moved repository)
    /// keeps its first owner, and the pair goes to `shared`.
    fn add_to<'a>(&'a self, taken: &mut Taken<'a>, shared: &mut Vec<Shared>) {
        let repository = Some(self.display.as_path());
        for (wt, ports) in self.registry.allocations() {
            taken.insert_worktree(repository, wt, ports.iter(), &mut |port, first, second| {
                shared.push(self::shared(port, first, second));
            });
        }
        for (wt, service, port) in &self.salvaged {
            let owner = Owner::elsewhere(&self.display, wt, service);
            insert(taken, *port, owner, shared);
        }
        let owner = Owner::listed(&self.display);
        for [lo, hi] in self.listed.iter().flatten() {
            taken.insert_run(*lo..=*hi, owner, &mut |port, first| {
                shared.push(self::shared(port, first, owner));
            });
        }
    }
}

/// A port with two owners. Never dropped: `doctor` reports it (`port-shared`) and an
/// allocation that sees one warns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shared {
    /// The port.
    pub port: u16,
    /// The owner that keeps it in the taken set, as a user reads it.
    pub first: String,
    /// The other owner.
    pub second: String,
    /// One of the two is a worktree of the repository choosing (the set's `own`).
    pub here: bool,
}

fn insert<'a>(taken: &mut Taken<'a>, port: u16, owner: Owner<'a>, shared: &mut Vec<Shared>) {
    if let Err(first) = taken.insert(port, owner) {
        shared.push(self::shared(port, first, owner));
    }
}

/// `port`, held by `first` and `second`.
fn shared(port: u16, first: Owner, second: Owner) -> Shared {
    let is_here =
        |o: &Owner| o.repository.is_none() && !o.lease && !o.block && !o.gone && !o.listed;
    Shared {
        port,
        first: first.to_string(),
        second: second.to_string(),
        here: is_here(&first) || is_here(&second),
    }
}

/// The taken set every way of choosing a port sees, built here only: `own` (the registry of
/// the repository choosing, when it has one), then everything [`OutsideHoldings`] holds: the other
/// repositories' registries, the leases, and the other repositories' claimed blocks (a
/// ranges repository never takes a port inside another's block). Ports with two owners are
/// returned, never discarded.
pub fn machine_taken<'a>(
    own: Option<&'a Registry>,
    elsewhere: &'a OutsideHoldings,
) -> (Taken<'a>, Vec<Shared>) {
    let mut taken = own.map(Registry::taken).unwrap_or_default();
    let mut shared = Vec::new();
    for other in &elsewhere.others {
        other.add_to(&mut taken, &mut shared);
    }
    for (port, id) in &elsewhere.leases {
        insert(&mut taken, *port, Owner::lease(id), &mut shared);
    }
    for gone in &elsewhere.gone {
        for port in &gone.ports {
            insert(&mut taken, *port, Owner::gone(&gone.display), &mut shared);
        }
    }
    for (range, display) in &elsewhere.claims {
        for port in range.clone() {
            // The claimer's own worktrees sit inside its block.
            if taken
                .owner(port)
                .is_some_and(|o| o.repository == Some(display.as_path()))
            {
                continue;
            }
            insert(&mut taken, port, Owner::block(display), &mut shared);
        }
    }
    (taken, shared)
}

/// Everything outside this repository that holds ports: the other repositories of the
/// machine index, their claimed blocks, and the leases.
#[derive(Default, Clone)]
pub struct OutsideHoldings {
    /// The other repositories' registries.
    pub others: Vec<OtherRepository>,
    /// Leased ports, with their lease ids.
    pub leases: Vec<(u16, String)>,
    /// The other repositories' claimed blocks, with the path a user knows each by.
    pub claims: Vec<(RangeInclusive<u16>, PathBuf)>,
    /// The ports gone repositories keep, oldest listed first.
    pub gone: Vec<GoneHolding>,
}

/// A repository of the index that is gone (its common dir is missing, another repository
/// took its path, or the repository there has another identity) and the ports it kept.
#[derive(Debug, Clone)]
pub struct GoneHolding {
    /// Its common dir, as the index names it.
    pub common: PathBuf,
    /// Its identity, when the index knew it.
    pub id: Option<String>,
    /// How to name it to a user.
    pub display: PathBuf,
    /// The ports it kept.
    pub ports: Vec<u16>,
    /// When it was listed: a full range takes back the longest listed first.
    pub added_at: String,
}

/// The repository choosing ports, as the index may know it: its common dir here, and its
/// identity (an entry with that identity at another path is this repository, moved).
#[derive(Debug, Clone, Copy, Default)]
pub struct Me<'a> {
    /// Its canonical common dir.
    pub common: Option<&'a Path>,
    /// Its identity token.
    pub id: Option<&'a str>,
}

impl Me<'_> {
    /// Whether the entry at `common` with identity `id` is this repository: by identity when
    /// both are known, else by path.
    fn is(&self, common: &Path, id: Option<&str>) -> bool {
        match (id, self.id) {
            (Some(a), Some(b)) => a == b,
            _ => self.common == Some(common),
        }
    }
}

impl OutsideHoldings {
    /// What `index` holds, but the repository `me`: the listed repositories' registries
    /// (read without their locks, or their ports from the index: `detail`), the ports gone
    /// ones kept, the leases, the claims.
    pub fn read(index: &Index, me: Me, detail: Detail) -> OutsideHoldings {
        let mut others = Vec::new();
        let mut gone = Vec::new();
        let mut keep = |common: &Path, entry: &crate::machine::Entry| {
            if !entry.ports.is_empty() {
                gone.push(GoneHolding {
                    common: common.to_path_buf(),
                    id: entry.id.clone(),
                    display: names::display_path(common),
                    ports: entry.held().collect(),
                    added_at: entry.added_at.clone(),
                });
            }
        };
        for (common, entry) in &index.repositories {
            if me.is(common, entry.id.as_deref()) {
                continue;
            }
            // Its registry is the file the index took its ports from (which had its identity).
            if detail == Detail::Ports
                && let Some(runs) = entry.held_if_unchanged(&Paths::new(common).file)
            {
                others.push(OtherRepository::listed(common, runs));
                continue;
            }
            if !common.is_dir() {
                keep(common, entry);
                continue;
            }
            let other = OtherRepository::read(common);
            // Another repository made at its path (the one listed moved or was deleted): the
            // ports the listed one kept stay taken too.
            if let (Some(known), Some(found)) =
                (entry.id.as_deref(), other.registry.repository_id())
                && known != found
            {
                keep(common, entry);
            }
            others.push(other);
        }
        for d in &index.displaced {
            if !me.is(&d.path, d.entry.id.as_deref()) {
                keep(&d.path, &d.entry);
            }
        }
        gone.sort_by(|a, b| a.added_at.cmp(&b.added_at));
        let claims = (index.entries())
            .filter(|(p, e, _)| !me.is(p, e.id.as_deref()))
            .filter_map(|(p, e, _)| {
                let [lo, hi] = e.block?;
                Some((lo..=hi, names::display_path(p)))
            })
            .collect();
        OutsideHoldings {
            others,
            leases: (index.leased_ports().into_iter())
                .map(|(p, id)| (p, id.to_string()))
                .collect(),
            claims,
            gone,
        }
    }
}

impl OutsideHoldings {
    /// Read the registry of every repository taken from the index ([`Detail::Ports`]) that
    /// holds a port for which `wanted` is true: where a port is pinned, or held twice, the
    /// message names its worktree and service.
    pub fn read_where(&mut self, wanted: &dyn Fn(u16) -> bool) {
        for other in &mut self.others {
            let hit = (other.listed.iter().flatten()).any(|[lo, hi]| (*lo..=*hi).any(wanted));
            if hit {
                *other = OtherRepository::read(&other.common);
            }
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

impl Workspace {
    /// The machine index under its lock, with repositories whose common dir is gone dropped.
    pub(super) fn machine_view(&self) -> anyhow::Result<MachineView> {
        let machine = Machine::from_env()?;
        let lock = lock_machine(&machine)?;
        let (mut index, warnings) = machine.load(&lock)?;
        warnings.iter().for_each(|w| warn(w));
        // Gone repositories stay listed, keeping their ports (a moved repository is still
        // the repository it was): `prune --all` drops them, or a full range.
        let changed = !reclaim_leases(&mut index).is_empty();
        Ok(MachineView {
            machine,
            _lock: lock,
            index,
            changed,
            ports_changed: false,
        })
    }

    /// The registries of every other listed repository, read without their locks (a rename
    /// gives a whole file). A damaged one is read from its backup; when both are damaged,
    /// what can be salvaged from them is taken, and the rest of its ports is unknown: said.
    /// Every port held twice on the machine, as the taken set of an allocation here sees
    /// them: this registry, the other repositories', the leases, the claimed blocks.
    pub fn shared_ports(&self, reg: &Registry) -> Vec<Shared> {
        let Ok(machine) = Machine::from_env() else {
            return Vec::new();
        };
        let (index, _) = machine.read();
        let elsewhere = self.other_registries(&index, reg, Detail::Owners);
        machine_taken(Some(reg), &elsewhere).1
    }

    pub(super) fn other_registries(
        &self,
        index: &Index,
        reg: &Registry,
        detail: Detail,
    ) -> OutsideHoldings {
        let id = reg.repository_id();
        OutsideHoldings::read(
            index,
            Me {
                common: Some(&self.canonical_common_dir()),
                id: id.as_deref(),
            },
            detail,
        )
    }
}
