//! The allocator. PURE: it sees a snapshot of taken ports, the services to fill, the requests
//! and a [`Probe`]; it returns the worktree's complete port set or an error. No files, no git,
//! no sockets, no output: the caller probes through the trait and decides what to save.
//!
//! Strategy `ranges`: every service gets the lowest port of its range that no registry entry
//! holds (any worktree, any service), that is not reserved and that the probe reports free.
//! Ports in the `avoid` ranges (the kernel's ephemeral ports) are taken only when the rest of
//! the range is exhausted. All services or none: an error means nothing changed.
//!
//! Strategy `block` ([`block`]): the repository's block, the worktree's slot, the service's
//! offset. Pins, reserved ports and the probe apply alike.

mod block;
pub mod suggest;

pub use block::{BlockSite, choose_block};

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::ops::RangeInclusive;
use std::path::Path;

use crate::model::config::{MIN_PORT, Protocol, Service, Strategy};
use crate::model::error::{
    Code, Details, Error, PortAllocated, PortInUse, RangeFull, Reserved, ServicePort,
    UnknownService,
};

/// Who holds a busy port on this machine, as far as the OS tells.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holder {
    /// Process id, when readable.
    pub pid: Option<u32>,
    /// Command name (`/proc/<pid>/comm`), when readable.
    pub command: Option<String>,
    /// Owner uid of the socket, when the process itself is not readable.
    pub uid: Option<u32>,
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.pid, &self.command, self.uid) {
            (Some(pid), Some(cmd), _) => write!(f, "pid {pid} ({cmd})"),
            (Some(pid), None, _) => write!(f, "pid {pid}"),
            (None, _, Some(uid)) => write!(f, "a process of uid {uid} (not readable by you)"),
            (None, _, None) => f.write_str("another process"),
        }
    }
}

/// Asks the machine whether a port is free. Implemented by `probe::SystemProbe`, and by fakes
/// in tests and benchmarks.
pub trait Probe {
    /// True when a server could bind `port` for `protocol` right now.
    fn is_free(&self, port: u16, protocol: Protocol) -> bool;
    /// Who holds `port`, if anyone can tell (only called on the error path).
    fn holder(&self, port: u16, protocol: Protocol) -> Option<Holder>;
}

/// The owner of a registered port (borrowed from the registry it came from).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner<'a> {
    /// The repository whose registry holds the port: None for the repository being
    /// allocated, else its path as the user knows it.
    pub repository: Option<&'a Path>,
    /// Registry key of the worktree.
    pub worktree: &'a str,
    /// Service name.
    pub service: &'a str,
    /// True for a lease's port (`lease`): `worktree` is then the lease id.
    pub lease: bool,
    /// True for a port inside another repository's claimed block (`strategy = "block"`):
    /// `repository` is then the claimer, `worktree` and `service` are empty.
    pub block: bool,
    /// True for a port a gone repository (moved, deleted, or replaced at its path) kept:
    /// `repository` is then where it was, `worktree` and `service` are empty.
    pub gone: bool,
    /// True for a port of another repository known from the machine index's list of its
    /// ports (its registry was not read): `worktree` and `service` are empty.
    pub listed: bool,
}

impl<'a> Owner<'a> {
    /// An owner in the repository being allocated.
    pub fn here(worktree: &'a str, service: &'a str) -> Owner<'a> {
        Owner {
            repository: None,
            worktree,
            service,
            lease: false,
            block: false,
            gone: false,
            listed: false,
        }
    }

    /// An owner in another repository (its path as the user knows it).
    pub fn elsewhere(repository: &'a Path, worktree: &'a str, service: &'a str) -> Owner<'a> {
        Owner {
            repository: Some(repository),
            ..Owner::here(worktree, service)
        }
    }

    /// The block `repository` claimed.
    pub fn block(repository: &'a Path) -> Owner<'a> {
        Owner {
            repository: Some(repository),
            block: true,
            ..Owner::here("", "")
        }
    }

    /// A port the gone repository that was at `repository` kept.
    pub fn gone(repository: &'a Path) -> Owner<'a> {
        Owner {
            repository: Some(repository),
            gone: true,
            ..Owner::here("", "")
        }
    }

    /// A port of `repository`, as the machine index lists its ports.
    pub fn listed(repository: &'a Path) -> Owner<'a> {
        Owner {
            repository: Some(repository),
            listed: true,
            ..Owner::here("", "")
        }
    }

    /// The lease `id`.
    pub fn lease(id: &'a str) -> Owner<'a> {
        Owner {
            lease: true,
            ..Owner::here(id, "")
        }
    }
}

impl fmt::Display for Owner<'_> {
    /// `worktree feature (service web)`, or `worktree main of repository ~/src/other
    /// (service web)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.block
            && let Some(repo) = self.repository
        {
            return write!(f, "the block repository {} claimed", repo.display());
        }
        if self.gone
            && let Some(repo) = self.repository
        {
            return write!(
                f,
                "repository {}, which is gone (moved or deleted: it keeps its ports until it allocates again where it is now, or `git worktree-ports prune --all`)",
                repo.display()
            );
        }
        if self.listed
            && let Some(repo) = self.repository
        {
            return write!(
                f,
                "a worktree of repository {} (`git worktree-ports list --all` says which)",
                repo.display()
            );
        }
        if self.lease {
            return write!(
                f,
                "lease {} (`git worktree-ports release --lease {}`)",
                self.worktree, self.worktree
            );
        }
        write!(f, "worktree {}", self.worktree)?;
        if let Some(repo) = self.repository {
            write!(f, " of repository {}", repo.display())?;
        }
        write!(f, " (service {})", self.service)
    }
}

/// Every port registered to any worktree, built once from the registries. Names are
/// borrowed, not copied: a 10,000-worktree registry would otherwise cost 100,000 string
/// allocations per command.
#[derive(Debug, Clone, Default)]
pub struct Taken<'a> {
    /// Port -> who registered it: 0 when nobody did; `PLAIN | i` for `plain[i]`; else 1 + a
    /// position in `owners`. In pages of [`PAGE`] ports, each allocated zeroed on the first
    /// insert into it, so a repository's few ports touch a few KiB, not a 256 KiB table (the
    /// whole table was calloc'ed fresh from the kernel only while malloc mapped blocks that
    /// large; a hash map of 50,000 ports was a tenth of a 10,000-worktree allocation).
    slots: Vec<Option<Box<[u32]>>>,
    /// Owners with a flag (leases, blocks, gone or listed repositories): few.
    owners: Vec<Owner<'a>>,
    /// Worktree keys of plain slot values (one per run of inserts for the same worktree), with
    /// the position of their repository in `repositories`. A plain value is a worktree's
    /// service, here or in another repository, packed into the slot itself
    /// (`PLAIN | service << WORKTREE_BITS | worktree`): a 10,000-worktree registry's 50,000
    /// owners were 2.8 MB as [`Owner`]s (700 page faults of every allocation there), then
    /// 400 KB as a vector of indexes, now nothing beyond the slots.
    worktrees: Vec<(&'a str, u16)>,
    /// Service names of plain slot values, each once.
    services: Vec<&'a str>,
    /// Repositories of plain slot values, each once.
    repositories: Vec<Option<&'a Path>>,
    /// The services of the last [`Taken::insert_worktree`], in its order, with their indexes
    /// in `services`.
    last_services: Vec<(&'a str, u32)>,
}

/// A slot value that names a worktree's service, packed ([`Taken::worktrees`]).
const PLAIN: u32 = 1 << 31;

/// Bits of a plain slot value for the worktree (below them, 8 for the service).
const WORKTREE_BITS: u32 = 23;

/// The same repository: the same path kept (every worktree of a registry names it through one
/// reference), else an equal one (a path compares component by component).
fn same(a: Option<&Path>, b: Option<&Path>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => std::ptr::eq(a, b) || a == b,
        (a, b) => a.is_none() && b.is_none(),
    }
}

/// The worktree's bits of a plain slot value.
const WORKTREE_MASK: u32 = (1 << WORKTREE_BITS) - 1;

/// Ports per page of [`Taken`]'s slot table (4 KiB).
const PAGE: usize = 1024;

impl<'a> Taken<'a> {
    /// An empty snapshot.
    pub fn new() -> Taken<'a> {
        Taken::default()
    }

    /// An empty snapshot with room for the worktrees of `n` ports.
    pub fn with_capacity(n: usize) -> Taken<'a> {
        Taken {
            worktrees: Vec::with_capacity(n / 4),
            ..Taken::default()
        }
    }

    /// Record that `owner` holds `port`. A port that already has another owner is a
    /// conflict: the first owner stays and is returned, for the caller to report.
    pub fn insert(&mut self, port: u16, owner: Owner<'a>) -> Result<(), Owner<'a>> {
        let held = *self.slot_mut(port);
        match held {
            0 => {
                let slot = self.intern(owner);
                *self.slot_mut(port) = slot;
                Ok(())
            }
            v if self.owner_at(v) == owner => Ok(()),
            v => Err(self.owner_at(v)),
        }
    }

    /// Record that `owner` holds every port of `ports`, with one entry for the owner however
    /// long the run (a neighbour's 50,000 ports known from the machine index): each port that
    /// already has another owner goes to `conflict` with that first owner, which stays.
    pub fn insert_run(
        &mut self,
        ports: RangeInclusive<u16>,
        owner: Owner<'a>,
        conflict: &mut dyn FnMut(u16, Owner<'a>),
    ) {
        let me = self.intern(owner);
        for port in ports {
            let held = *self.slot_mut(port);
            match held {
                0 => *self.slot_mut(port) = me,
                v if self.owner_at(v) == owner => {}
                v => conflict(port, self.owner_at(v)),
            }
        }
    }

    /// Record that `worktree` (of `repository`: None for the repository choosing) holds the
    /// port of each of its `services`: what [`Taken::insert`] does for each, with the
    /// worktree kept once and each service found by its position in the worktree's list when
    /// the worktree before had the same list (as the worktrees read from one registry share
    /// theirs): 50,000 inserts for 10,000 worktrees took a twelfth of a fresh allocation there.
    /// Each port that already has another owner goes to `conflict` with that first owner,
    /// which stays, and the owner refused.
    pub fn insert_worktree(
        &mut self,
        repository: Option<&'a Path>,
        worktree: &'a str,
        services: impl IntoIterator<Item = (&'a str, u16)>,
        conflict: &mut dyn FnMut(u16, Owner<'a>, Owner<'a>),
    ) {
        let owner = |service| Owner {
            repository,
            ..Owner::here(worktree, service)
        };
        let w = self.worktree_index(repository, worktree);
        for (at, (service, port)) in services.into_iter().enumerate() {
            let s = match self.last_services.get(at) {
                Some((name, s)) if std::ptr::eq(*name, service) => Some(*s),
                _ => self.service_index(service).inspect(|s| {
                    self.last_services.truncate(at);
                    self.last_services.push((service, *s));
                }),
            };
            let Some(value) = w.zip(s).map(|(w, s)| PLAIN | s << WORKTREE_BITS | w) else {
                // Indexes that do not fit (never on a real machine): an owner of its own.
                if let Err(first) = self.insert(port, owner(service)) {
                    conflict(port, first, owner(service));
                }
                continue;
            };
            let slot = self.slot_mut(port);
            let held = *slot;
            if held == 0 {
                *slot = value;
            } else if held != value {
                let first = self.owner_at(held);
                if first != owner(service) {
                    conflict(port, first, owner(service));
                }
            }
        }
    }

    /// `port`'s slot, its page allocated zeroed first when it has none.
    fn slot_mut(&mut self, port: u16) -> &mut u32 {
        let (page, at) = (usize::from(port) / PAGE, usize::from(port) % PAGE);
        if self.slots.is_empty() {
            self.slots = vec![None; (usize::from(u16::MAX) + 1) / PAGE];
        }
        &mut self.slots[page].get_or_insert_with(|| vec![0; PAGE].into_boxed_slice())[at]
    }

    /// `port`'s slot: 0 when nobody registered it.
    fn slot(&self, port: u16) -> u32 {
        let (page, at) = (usize::from(port) / PAGE, usize::from(port) % PAGE);
        match self.slots.get(page) {
            Some(Some(p)) => p[at],
            _ => 0,
        }
    }

    /// Keep `owner`; its slot value.
    fn intern(&mut self, owner: Owner<'a>) -> u32 {
        let flagged = owner.lease || owner.block || owner.gone || owner.listed;
        match (!flagged).then(|| self.plain_of(owner)).flatten() {
            Some(v) => v,
            None => {
                self.owners.push(owner);
                u32::try_from(self.owners.len()).expect("at most 65,536 owners")
            }
        }
    }

    /// `owner` as a plain slot value; None when an index would not fit (never on a real
    /// machine: 8 million worktrees, 256 services).
    fn plain_of(&mut self, owner: Owner<'a>) -> Option<u32> {
        let worktree = self.worktree_index(owner.repository, owner.worktree)?;
        let service = self.service_index(owner.service)?;
        Some(PLAIN | service << WORKTREE_BITS | worktree)
    }

    /// The index of `worktree` of `repository` in `worktrees`: inserts come a worktree at a
    /// time, so it is the last one kept, or a new one.
    fn worktree_index(&mut self, repository: Option<&'a Path>, worktree: &'a str) -> Option<u32> {
        let repository = match (self.repositories.iter()).position(|r| same(*r, repository)) {
            Some(i) => i,
            None => {
                self.repositories.push(repository);
                self.repositories.len() - 1
            }
        };
        let repository = u16::try_from(repository).ok()?;
        let i = match self.worktrees.last() {
            Some((last, r))
                if *r == repository && (std::ptr::eq(*last, worktree) || *last == worktree) =>
            {
                self.worktrees.len() - 1
            }
            _ if self.worktrees.len() < 1 << WORKTREE_BITS => {
                self.worktrees.push((worktree, repository));
                self.worktrees.len() - 1
            }
            _ => return None,
        };
        u32::try_from(i).ok()
    }

    /// The index of `service` in `services`, kept there first if it is new.
    fn service_index(&mut self, service: &'a str) -> Option<u32> {
        let same = |s: &&str| std::ptr::eq(*s, service) || *s == service;
        let i = match self.services.iter().position(same) {
            Some(i) => i,
            None if self.services.len() < 256 => {
                self.services.push(service);
                self.services.len() - 1
            }
            None => return None,
        };
        u32::try_from(i).ok()
    }

    /// The worktree, service and repository a plain slot value names.
    fn plain(&self, v: u32) -> (&'a str, &'a str, Option<&'a Path>) {
        let (worktree, repository) = self.worktrees[(v & WORKTREE_MASK) as usize];
        let service = self.services[((v & !PLAIN) >> WORKTREE_BITS) as usize];
        (
            worktree,
            service,
            self.repositories[usize::from(repository)],
        )
    }

    /// The owner a non-zero slot value names.
    fn owner_at(&self, v: u32) -> Owner<'a> {
        if v & PLAIN == 0 {
            return self.owners[v as usize - 1];
        }
        let (worktree, service, repository) = self.plain(v);
        Owner {
            repository,
            ..Owner::here(worktree, service)
        }
    }

    /// True when `port` is held by anyone but `owner`: `owner(port)` is neither None nor
    /// `owner`, found without building the holder.
    pub fn held_by_other(&self, port: u16, owner: &Owner<'_>) -> bool {
        let entries = self.entries_of(owner.repository, owner.worktree);
        self.held_by_other_than(port, owner, &entries)
    }

    /// The positions of `worktree` of `repository` among the worktrees of plain slot values:
    /// what [`Taken::held_by_other_than`] compares instead of names.
    pub fn entries_of(&self, repository: Option<&Path>, worktree: &str) -> Vec<u32> {
        let Some(r) = (self.repositories.iter()).position(|r| same(*r, repository)) else {
            return Vec::new();
        };
        (self.worktrees.iter().enumerate())
            .filter(|(_, (k, kr))| usize::from(*kr) == r && *k == worktree)
            .filter_map(|(i, _)| u32::try_from(i).ok())
            .collect()
    }

    /// [`Taken::held_by_other`] with the owner's worktree found once (`entries`: its
    /// [`Taken::entries_of`]): the allocator asks it of every port it passes over, and a
    /// worktree's name compared 50,000 times was a sixteenth of a fresh allocation among
    /// 10,000 worktrees.
    pub fn held_by_other_than(&self, port: u16, owner: &Owner<'_>, entries: &[u32]) -> bool {
        self.value_held_by_other(self.slot(port), owner, entries)
    }

    /// The first port of `ports` not held by anyone but `owner` (`entries`: its
    /// [`Taken::entries_of`]), passing over the others' a page of slots at a time: the
    /// allocator passes over every port a service's range has taken (10,000 among 10,000
    /// worktrees) before the first it may give.
    pub fn first_not_held(
        &self,
        ports: RangeInclusive<u16>,
        owner: &Owner<'_>,
        entries: &[u32],
    ) -> Option<u16> {
        let (mut p, end) = (usize::from(*ports.start()), usize::from(*ports.end()));
        while p <= end {
            let (page, at) = (p / PAGE, p % PAGE);
            let Some(Some(slots)) = self.slots.get(page) else {
                return u16::try_from(p).ok();
            };
            let last = end.min(page * PAGE + PAGE - 1);
            let rest = &slots[at..=last % PAGE];
            match (rest.iter()).position(|v| !self.value_held_by_other(*v, owner, entries)) {
                Some(i) => return u16::try_from(p + i).ok(),
                None => p = last + 1,
            }
        }
        None
    }

    /// [`Taken::held_by_other_than`] of a slot's value (inlined into the allocator's pass).
    #[inline(always)]
    fn value_held_by_other(&self, v: u32, owner: &Owner<'_>, entries: &[u32]) -> bool {
        if v == 0 {
            return false;
        }
        if v & PLAIN == 0 {
            return self.owners[v as usize - 1] != *owner;
        }
        let flagged = owner.lease || owner.block || owner.gone || owner.listed;
        flagged
            || !entries.contains(&(v & WORKTREE_MASK))
            || self.services[((v & !PLAIN) >> WORKTREE_BITS) as usize] != owner.service
    }

    /// Who holds `port`, if anyone.
    pub fn owner(&self, port: u16) -> Option<Owner<'a>> {
        match self.slot(port) {
            0 => None,
            v => Some(self.owner_at(v)),
        }
    }
}

/// What the caller asks for one service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// The automatic choice (keep the current port if there is one).
    Auto,
    /// This exact port (validated here, so it may be out of u16 range).
    Pin(u32),
    /// Another port than the current one (the automatic choice; the old port is given back).
    Move,
}

/// Everything the allocator reads.
pub struct Request<'a> {
    /// How ports are chosen.
    pub strategy: Strategy,
    /// Registry key of the worktree being allocated.
    pub worktree: &'a str,
    /// Services the worktree must have (config order).
    pub services: &'a [Service],
    /// The ports this worktree holds now (may include services the config no longer has).
    pub current: &'a BTreeMap<String, u16>,
    /// Per-service requests; services not named here are `Auto`.
    pub wants: &'a BTreeMap<String, Want>,
    /// Ports held by every worktree, this one included.
    pub taken: &'a Taken<'a>,
    /// Ports never handed out (config `reserved`).
    pub reserved: &'a [RangeInclusive<u16>],
    /// Ports automatic choices take last (the kernel's ephemeral range).
    pub avoid: &'a [RangeInclusive<u16>],
    /// Block strategy: the repository's block and its slots (None in the ranges strategy).
    pub block: Option<BlockSite<'a>>,
}

/// One change the allocation made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A service got its first port.
    Assigned {
        /// Service name.
        service: String,
        /// The new port.
        port: u16,
    },
    /// A pin moved a service; `from` goes back to the pool.
    Moved {
        /// Service name.
        service: String,
        /// The port given back.
        from: u16,
        /// The new port.
        to: u16,
    },
}

/// A successful allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// The worktree's complete port set after the allocation.
    pub ports: BTreeMap<String, u16>,
    /// What changed (empty: nothing to save).
    pub changes: Vec<Change>,
    /// Things the user should know (a port taken from the ephemeral range).
    pub warnings: Vec<String>,
    /// Block strategy: the worktree's slot in the repository's block.
    pub slot: Option<u32>,
}

/// Allocate ports for one worktree. See the module docs for the rules.
pub fn allocate(req: &Request<'_>, probe: &dyn Probe) -> Result<Allocation, Error> {
    for name in req.wants.keys() {
        if !req.services.iter().any(|s| &s.name == name) {
            let names: Vec<&str> = req.services.iter().map(|s| s.name.as_str()).collect();
            return Err(Error::new(
                Code::UnknownService,
                format!(
                    "unknown service {name:?}; this worktree's services are: {}",
                    names.join(", ")
                ),
            )
            .with(Details::UnknownService(UnknownService {
                service: name.clone(),
                services: names.iter().map(|n| n.to_string()).collect(),
                worktree: None,
            })));
        }
    }

    let mut ctx = Ctx::new(req, probe);
    let mut ports = req.current.clone();
    let mut changes = Vec::new();
    let mut warnings = Vec::new();

    // Moves: the service's port goes back, and the automatic choice may not take it again.
    let mut moved_from = BTreeMap::new();
    for svc in req.services {
        if req.wants.get(&svc.name) != Some(&Want::Move) {
            continue;
        }
        let Some(from) = ports.remove(&svc.name) else {
            continue;
        };
        if let Strategy::Block(_) = req.strategy {
            return Err(Error::new(
                Code::RangeExhausted,
                format!(
                    "{} cannot move within its slot: in the block strategy a service's port is its slot's start + offset ({from}); move the whole worktree instead: `git worktree-ports release && git worktree-ports allocate`",
                    svc.name
                ),
            )
            .with(Details::ServicePort(ServicePort {
                service: svc.name.clone(),
                port: u32::from(from),
            })));
        }
        ctx.chosen.insert(from);
        moved_from.insert(svc.name.clone(), from);
    }

    // Pins first, so an automatic choice never takes a port pinned in the same request.
    for svc in req.services {
        let Some(Want::Pin(pin)) = req.wants.get(&svc.name).copied() else {
            continue;
        };
        let current = req.current.get(&svc.name).copied();
        if current.map(u32::from) == Some(pin) {
            continue;
        }
        let port = ctx.check_pin(svc, pin)?;
        ctx.chosen.insert(port);
        ports.insert(svc.name.clone(), port);
        changes.push(match current {
            Some(from) => Change::Moved {
                service: svc.name.clone(),
                from,
                to: port,
            },
            None => Change::Assigned {
                service: svc.name.clone(),
                port,
            },
        });
    }

    let mut slot = None;
    match (req.strategy, &req.block) {
        (Strategy::Block(b), Some(site)) => {
            slot = block::fill(&mut ctx, b, site, &mut ports, &mut changes)?;
        }
        (Strategy::Block(_), None) => {
            return Err(Error::new(
                Code::RangeExhausted,
                "the block strategy needs the repository's block (this is a bug)",
            ));
        }
        (Strategy::Ranges, _) => {
            for svc in req.services {
                if ports.contains_key(&svc.name) {
                    continue;
                }
                let (port, warning) = ctx.choose(svc)?;
                ctx.chosen.insert(port);
                warnings.extend(warning);
                ports.insert(svc.name.clone(), port);
                changes.push(Change::Assigned {
                    service: svc.name.clone(),
                    port,
                });
            }
        }
    }

    for change in &mut changes {
        if let Change::Assigned { service, port } = change
            && let Some(from) = moved_from.get(service.as_str())
        {
            *change = Change::Moved {
                service: service.clone(),
                from: *from,
                to: *port,
            };
        }
    }
    Ok(Allocation {
        ports,
        changes,
        warnings,
        slot,
    })
}

/// Why a port cannot be handed to a service.
enum Refusal<'t> {
    Allocated(Owner<'t>),
    Reserved,
    InUse,
}

struct Ctx<'a, 'r> {
    req: &'a Request<'r>,
    probe: &'a dyn Probe,
    /// Ports handed out earlier in this same allocation.
    chosen: HashSet<u16>,
    /// The worktree's own entries in the taken set ([`Taken::entries_of`]).
    mine: Vec<u32>,
}

impl<'a, 'r> Ctx<'a, 'r> {
    fn new(req: &'a Request<'r>, probe: &'a dyn Probe) -> Ctx<'a, 'r> {
        Ctx {
            req,
            probe,
            chosen: HashSet::new(),
            mine: req.taken.entries_of(None, req.worktree),
        }
    }

    /// Why `port` cannot go to `svc` without asking the OS, or None if it may.
    fn refuse_known(&self, svc: &Service, port: u16) -> Option<Refusal<'r>> {
        if let Some(owner) = self.req.taken.owner(port) {
            // A service keeps or re-pins its own port; any other holder refuses it.
            if owner != Owner::here(self.req.worktree, &svc.name) {
                return Some(Refusal::Allocated(owner));
            }
        }
        if self.chosen.contains(&port) {
            return Some(Refusal::Allocated(Owner::here(
                self.req.worktree,
                "(another service in this request)",
            )));
        }
        if self.reserved(port) {
            return Some(Refusal::Reserved);
        }
        None
    }

    /// Below 1024, or in a reserved range of the config.
    fn reserved(&self, port: u16) -> bool {
        port < MIN_PORT || self.req.reserved.iter().any(|r| r.contains(&port))
    }

    /// Where `svc`'s ports come from: its range, or the repository's block.
    fn range_of(&self, svc: &Service) -> (u16, u16) {
        match (self.req.strategy, &self.req.block) {
            (Strategy::Block(b), Some(site)) => {
                let r = site.ports(b);
                (*r.start(), *r.end())
            }
            _ => svc.range,
        }
    }

    /// `refuse_known(svc, port).is_none()` and free for the OS, without building a refusal:
    /// the same three checks, the holder only compared (passing over the 50,000 taken ports
    /// of 10,000 worktrees, building each refusal made an allocation 35% slower in process).
    fn usable(&self, svc: &Service, port: u16) -> bool {
        let me = Owner::here(self.req.worktree, &svc.name);
        !self.req.taken.held_by_other_than(port, &me, &self.mine)
            && !self.chosen.contains(&port)
            && !self.reserved(port)
            && self.probe.is_free(port, svc.protocol)
    }

    /// The ports of `lo..=hi` that no one but `svc` of this worktree holds, in order: the
    /// only ones [`Ctx::usable`] may find usable.
    fn unheld<'s>(&'s self, svc: &'s Service, lo: u16, hi: u16) -> impl Iterator<Item = u16> + 's {
        let me = Owner::here(self.req.worktree, &svc.name);
        let mut from = Some(lo);
        std::iter::from_fn(move || {
            let p = (self.req.taken).first_not_held(from?..=hi, &me, &self.mine)?;
            from = p.checked_add(1).filter(|next| *next <= hi);
            Some(p)
        })
    }

    fn check_pin(&self, svc: &Service, pin: u32) -> Result<u16, Error> {
        let (lo, hi) = self.range_of(svc);
        let port = match u16::try_from(pin) {
            Ok(p) if p >= MIN_PORT => p,
            _ => {
                return Err(self.with_suggestions(
                    Error::new(
                        Code::InvalidPort,
                        format!(
                            "port {pin} for {} is outside 1024-65535 (ports below 1024 need root and are never handed out)",
                            svc.name
                        ),
                    )
                    .with(Details::ServicePort(ServicePort {
                        service: svc.name.clone(),
                        port: pin,
                    })),
                    svc,
                    pin.min(65535) as u16,
                ));
            }
        };

        let refusal = match self.refuse_known(svc, port) {
            Some(r) => Some(r),
            None if !self.probe.is_free(port, svc.protocol) => Some(Refusal::InUse),
            None => None,
        };
        let err = match refusal {
            None => return Ok(port),
            Some(Refusal::Allocated(owner)) => Error::new(
                Code::PortAllocated,
                format!("port {port} is allocated to {owner}"),
            )
            .with(Details::PortAllocated(PortAllocated {
                service: svc.name.clone(),
                port,
                range: [lo, hi],
                worktree: owner.worktree.to_string(),
                owner_service: owner.service.to_string(),
                repository: owner.repository.map(|r| r.display().to_string()),
            })),
            Some(Refusal::Reserved) => Error::new(
                Code::SystemReserved,
                format!("port {port} is reserved by the config's `reserved` list"),
            )
            .with(Details::Reserved(Reserved {
                service: svc.name.clone(),
                port,
                range: [lo, hi],
                reserved_range: None,
            })),
            Some(Refusal::InUse) => {
                let holder = self.probe.holder(port, svc.protocol);
                let who = holder
                    .as_ref()
                    .map_or_else(|| "another process".to_string(), Holder::to_string);
                Error::new(
                    Code::PortInUse,
                    format!("port {port} ({}) is in use by {who}", svc.protocol.as_str()),
                )
                .with(Details::PortInUse(PortInUse {
                    service: svc.name.clone(),
                    port,
                    range: [lo, hi],
                    protocol: svc.protocol.as_str().to_string(),
                    pid: holder.as_ref().and_then(|h| h.pid),
                    command: holder.as_ref().and_then(|h| h.command.clone()),
                    uid: holder.as_ref().and_then(|h| h.uid),
                }))
            }
        };
        Err(self.with_suggestions(err, svc, port))
    }

    /// Up to 3 usable ports of `svc`'s range, nearest to `near` first (ties: the lower).
    fn with_suggestions(&self, err: Error, svc: &Service, near: u16) -> Error {
        let (lo, hi) = self.range_of(svc);
        let near = near.clamp(lo, hi) as i32;
        // The service's own current port is no alternative: pinning it changes nothing.
        let own = self.req.current.get(&svc.name).copied();
        let mut found = Vec::new();
        let mut d = 0;
        while found.len() < 3 && (near - d >= lo as i32 || near + d <= hi as i32) {
            let below = near - d;
            let above = near + d;
            for p in [below, above] {
                if found.len() < 3
                    && (lo as i32..=hi as i32).contains(&p)
                    && !found.contains(&(p as u16))
                    && own != Some(p as u16)
                    && self.usable(svc, p as u16)
                {
                    found.push(p as u16);
                }
            }
            d += 1;
        }
        err.with_suggestions(found)
    }

    /// The automatic choice for `svc`, with a warning when it had to come from `avoid` or be
    /// a well-known port of the service's range: first a port in neither, then one in the
    /// kernel's ephemeral range, then a well-known one.
    fn choose(&self, svc: &Service) -> Result<(u16, Option<String>), Error> {
        let (lo, hi) = svc.range;
        let in_avoid = |p: u16| self.req.avoid.iter().any(|r| r.contains(&p));
        let known = |p: u16| {
            svc.well_known
                .iter()
                .find(|(k, _)| *k == p)
                .map(|(_, w)| *w)
        };
        for p in self.unheld(svc, lo, hi) {
            if !in_avoid(p) && known(p).is_none() && self.usable(svc, p) {
                return Ok((p, None));
            }
        }
        for p in self.unheld(svc, lo, hi) {
            if in_avoid(p) && known(p).is_none() && self.usable(svc, p) {
                let range = self
                    .req
                    .avoid
                    .iter()
                    .find(|r| r.contains(&p))
                    .map(|r| format!("{}-{}", r.start(), r.end()))
                    .unwrap_or_default();
                // Say why: the rest of the range is taken, or there is no rest.
                let why = if (lo..=hi).all(in_avoid) {
                    format!(
                        "all of {lo}-{hi} lies inside it; move [services.{}] range out of it in .worktree-ports/config.toml",
                        svc.name
                    )
                } else {
                    format!("the rest of {lo}-{hi} is taken")
                };
                return Ok((
                    p,
                    Some(format!(
                        "{}: port {p} is inside the kernel's ephemeral range {range}, where outgoing connections may grab it; {why}",
                        svc.name
                    )),
                ));
            }
        }
        for p in self.unheld(svc, lo, hi) {
            if let Some(whose) = known(p)
                && self.usable(svc, p)
            {
                return Ok((
                    p,
                    Some(format!(
                        "{}: port {p} is {whose}'s usual port, which a server started later may want; the rest of {lo}-{hi} is taken (give [services.{}] a range of its own in .worktree-ports/config.toml)",
                        svc.name, svc.name
                    )),
                ));
            }
        }
        Err(self.exhausted(svc))
    }

    fn exhausted(&self, svc: &Service) -> Error {
        let (lo, hi) = svc.range;
        let (mut allocated, mut reserved, mut in_use) = (0, 0, 0);
        for p in lo..=hi {
            match self.refuse_known(svc, p) {
                Some(Refusal::Allocated(_)) => allocated += 1,
                Some(Refusal::Reserved) => reserved += 1,
                _ => in_use += 1,
            }
        }
        Error::new(
            Code::RangeExhausted,
            format!(
                "no free port for service {} in {lo}-{hi} ({allocated} allocated to worktrees, {reserved} reserved, {in_use} in use by other processes); run `git worktree-ports prune` or widen [services.{}] range in .worktree-ports/config.toml",
                svc.name, svc.name
            ),
        )
        .with(Details::RangeFull(RangeFull {
            service: svc.name.clone(),
            range: [lo, hi],
            allocated,
            reserved,
            in_use,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::{Config, default_env_name};
    use std::cell::RefCell;

    /// A worktree inserted at once is each of its services inserted: the same owners, the
    /// same conflicts (the first owner stays), whether the worktree before had the same list
    /// of services or not, and the same worktree again in a later run.
    #[test]
    fn a_worktree_inserted_at_once_is_each_service_inserted() {
        let there = Path::new("/r/there");
        let list = ["db", "web"];
        type Row<'a> = (Option<&'a Path>, &'a str, Vec<(&'a str, u16)>);
        let worktrees: Vec<Row> = vec![
            (None, "main", vec![(list[0], 5000), (list[1], 8000)]),
            (None, "b", vec![(list[0], 5001), (list[1], 8001)]),
            (None, "c", vec![("api", 3000), (list[1], 8002)]),
            (Some(there), "main", vec![(list[0], 5002), (list[1], 8000)]),
            (None, "b", vec![("web", 8001), ("zz", 9000)]),
            (None, "main", vec![("web", 8001), ("db", 5000)]),
            (Some(there), "b", vec![(list[0], 5003)]),
        ];
        let owner = |r: Option<&'static Path>, w, s| Owner {
            repository: r,
            ..Owner::here(w, s)
        };
        let (mut one, mut each) = (Taken::new(), Taken::new());
        let (mut refused_one, mut refused_each) = (Vec::new(), Vec::new());
        for (r, w, services) in &worktrees {
            one.insert_worktree(*r, w, services.iter().copied(), &mut |p, first, second| {
                refused_one.push((p, first, second))
            });
            for (s, p) in services {
                if let Err(first) = each.insert(*p, owner(*r, w, s)) {
                    refused_each.push((*p, first, owner(*r, w, s)));
                }
            }
        }
        assert_eq!(refused_one, refused_each);
        assert_eq!(refused_one.len(), 2, "{refused_one:?}");
        for port in 0..=u16::MAX {
            assert_eq!(one.owner(port), each.owner(port), "{port}");
        }
        for (r, w, services) in &worktrees {
            for (s, _) in services.iter().chain(&[("other", 0)]) {
                let o = owner(*r, w, s);
                for port in [3000, 5000, 5001, 5002, 5003, 8000, 8001, 8002, 9000, 9001] {
                    let expected = one.owner(port).is_some_and(|held| held != o);
                    assert_eq!(one.held_by_other(port, &o), expected, "{port} {o}");
                }
                // The first port not held by another, found a page at a time, is the first
                // found one port at a time.
                let entries = one.entries_of(o.repository, o.worktree);
                for (lo, hi) in [
                    (2999, 3000),
                    (5000, 5003),
                    (5000, 9001),
                    (8000, 8002),
                    (0, 1),
                ] {
                    let expected = (lo..=hi).find(|p| !one.held_by_other(*p, &o));
                    assert_eq!(one.first_not_held(lo..=hi, &o, &entries), expected, "{o}");
                }
            }
        }
    }

    /// Passing over taken ports a page of slots at a time finds what one port at a time finds,
    /// across page edges, pages nobody inserted into, and the last port.
    #[test]
    fn the_first_port_not_held_is_found_across_pages() {
        let mut taken = Taken::new();
        taken.insert(2500, Owner::here("me", "web")).unwrap();
        let held = (1020..=1030).chain(2040..=3100).chain(65530..=65535);
        for p in held.filter(|p| *p != 2500) {
            taken.insert(p, Owner::here("other", "web")).unwrap();
        }
        let me = Owner::here("me", "web");
        let entries = taken.entries_of(None, "me");
        for (lo, hi) in [
            (1020, 1030),
            (1020, 1031),
            (1023, 1024),
            (2040, 3100),
            (2040, 2600),
            (2501, 3100),
            (2501, 3101),
            (65530, 65535),
            (65529, 65535),
            (0, 65535),
            (4000, 4000),
        ] {
            let expected = (lo..=hi).find(|p| !taken.held_by_other(*p, &me));
            assert_eq!(
                taken.first_not_held(lo..=hi, &me, &entries),
                expected,
                "{lo}-{hi}"
            );
        }
        assert_eq!(taken.first_not_held(2040..=3100, &me, &entries), Some(2500));
    }

    /// Worktree owners are kept as indexes (8 bytes, not 56): every owner reads back as it
    /// was inserted, whatever the mix of kinds and the order, and a conflict keeps the first.
    #[test]
    fn taken_gives_back_every_owner_as_inserted() {
        let (here, there) = (Path::new("/r/here"), Path::new("/r/there"));
        let owners = [
            Owner::here("main", "web"),
            Owner::here("main", "db"),
            Owner::elsewhere(there, "main", "web"),
            Owner::here("feature", "web"),
            Owner::lease("lease-1"),
            Owner::here("main", "api"),
            Owner::elsewhere(there, "feature", "db"),
            Owner::block(here),
            Owner::gone(there),
            Owner::listed(there),
        ];
        let mut taken = Taken::new();
        for (i, o) in owners.iter().enumerate() {
            assert_eq!(taken.insert(2000 + i as u16, *o), Ok(()));
        }
        taken.insert_run(3000..=3002, Owner::here("main", "web"), &mut |p, o| {
            panic!("{p} {o}")
        });
        // held_by_other is `owner` compared, for every port against every owner.
        for port in (1999..2012).chain(3000..=3003) {
            for o in owners.iter().chain(&[Owner::here("other", "web")]) {
                let expected = taken.owner(port).is_some_and(|held| held != *o);
                assert_eq!(taken.held_by_other(port, o), expected, "{port} {o}");
            }
        }
        for (i, o) in owners.iter().enumerate() {
            assert_eq!(taken.owner(2000 + i as u16), Some(*o));
            // The same owner again is not a conflict; another one is, and the first stays.
            assert_eq!(taken.insert(2000 + i as u16, *o), Ok(()));
            let other = Owner::here("other", "web");
            assert_eq!(taken.insert(2000 + i as u16, other), Err(*o));
        }
        assert_eq!(taken.owner(3001), Some(Owner::here("main", "web")));
        assert_eq!(taken.owner(2999), None);
    }

    /// A probe that reports a fixed set of busy ports and counts its calls.
    #[derive(Default)]
    struct FakeProbe {
        busy: HashSet<u16>,
        udp_busy: HashSet<u16>,
        calls: RefCell<Vec<u16>>,
    }

    impl Probe for FakeProbe {
        fn is_free(&self, port: u16, protocol: Protocol) -> bool {
            self.calls.borrow_mut().push(port);
            let tcp = !self.busy.contains(&port);
            let udp = !self.udp_busy.contains(&port);
            match protocol {
                Protocol::Tcp => tcp,
                Protocol::Udp => udp,
                Protocol::Both => tcp && udp,
            }
        }
        fn holder(&self, _port: u16, _protocol: Protocol) -> Option<Holder> {
            Some(Holder {
                pid: Some(4242),
                command: Some("nginx".into()),
                uid: None,
            })
        }
    }

    fn svc(name: &str, lo: u16, hi: u16) -> Service {
        Service {
            name: name.into(),
            range: (lo, hi),
            env: default_env_name(name),
            protocol: Protocol::Tcp,
            offset: 0,
            http: false,
            well_known: &[],
        }
    }

    #[test]
    fn well_known_ports_are_taken_last_and_said() {
        let mut web = svc("web", 9089, 9092);
        web.well_known = &[(9090, "Prometheus"), (9091, "the Pushgateway")];
        let mut case = Case::new(vec![web]);
        let free = FakeProbe::default();
        let first = case.run(&free).unwrap();
        assert_eq!((first.ports["web"], first.warnings.len()), (9089, 0));
        case = case.held("a", "web", 9089).held("b", "web", 9092);
        let a = case.run(&free).unwrap();
        assert_eq!(a.ports["web"], 9090);
        assert_eq!(
            a.warnings,
            [
                "web: port 9090 is Prometheus's usual port, which a server started later may want; the rest of 9089-9092 is taken (give [services.web] a range of its own in .worktree-ports/config.toml)"
            ]
        );
    }

    struct Case {
        worktree: String,
        services: Vec<Service>,
        current: BTreeMap<String, u16>,
        wants: BTreeMap<String, Want>,
        taken: Vec<(u16, String, String)>,
        reserved: Vec<RangeInclusive<u16>>,
        avoid: Vec<RangeInclusive<u16>>,
    }

    impl Case {
        fn new(services: Vec<Service>) -> Case {
            Case {
                worktree: "new".into(),
                services,
                current: BTreeMap::new(),
                wants: BTreeMap::new(),
                taken: Vec::new(),
                reserved: vec![],
                avoid: vec![],
            }
        }
        fn held(mut self, worktree: &str, service: &str, port: u16) -> Case {
            self.taken.push((port, worktree.into(), service.into()));
            if worktree == self.worktree {
                self.current.insert(service.into(), port);
            }
            self
        }
        fn pin(mut self, service: &str, port: u32) -> Case {
            self.wants.insert(service.into(), Want::Pin(port));
            self
        }
        fn run(&self, probe: &FakeProbe) -> Result<Allocation, Error> {
            let mut taken = Taken::new();
            for (p, w, s) in &self.taken {
                taken.insert(*p, Owner::here(w, s)).unwrap();
            }
            allocate(
                &Request {
                    strategy: Strategy::Ranges,
                    worktree: &self.worktree,
                    services: &self.services,
                    current: &self.current,
                    wants: &self.wants,
                    taken: &taken,
                    reserved: &self.reserved,
                    avoid: &self.avoid,
                    block: None,
                },
                probe,
            )
        }
    }

    fn ports(a: &Allocation) -> Vec<(&str, u16)> {
        a.ports.iter().map(|(k, v)| (k.as_str(), *v)).collect()
    }

    #[test]
    fn seed_example_gives_the_next_worktree_8082_and_5434() {
        let case = Case::new(vec![svc("web", 8080, 8099), svc("db", 5432, 5439)])
            .held("main", "web", 8080)
            .held("main", "db", 5432)
            .held("feature-login", "web", 8081)
            .held("feature-login", "db", 5433);
        let a = case.run(&FakeProbe::default()).unwrap();
        assert_eq!(ports(&a), [("db", 5434), ("web", 8082)]);
        assert_eq!(a.changes.len(), 2);
    }

    #[test]
    fn builtin_services_all_get_their_range_start() {
        let c = Config::builtin();
        let a = Case::new(c.services.clone())
            .run(&FakeProbe::default())
            .unwrap();
        assert_eq!(
            ports(&a),
            [
                ("api", 3000),
                ("db", 5432),
                ("debug", 5555),
                ("test", 9000),
                ("web", 8080)
            ]
        );
    }

    #[test]
    fn busy_ports_are_skipped_and_own_ports_never_probed() {
        let probe = FakeProbe {
            busy: [8080, 8081].into(),
            ..Default::default()
        };
        let a = Case::new(vec![svc("web", 8080, 8099)]).run(&probe).unwrap();
        assert_eq!(a.ports["web"], 8082);

        // Already allocated: kept even though a server (its own) listens there now.
        let probe = FakeProbe {
            busy: [8085].into(),
            ..Default::default()
        };
        let mut case = Case::new(vec![svc("web", 8080, 8099)]);
        case.worktree = "me".into();
        let case = case.held("me", "web", 8085);
        let a = case.run(&probe).unwrap();
        assert_eq!(a.ports["web"], 8085);
        assert!(a.changes.is_empty());
        assert!(probe.calls.borrow().is_empty(), "own port was probed");
    }

    #[test]
    fn ports_are_unique_across_services_of_one_worktree() {
        // Overlapping ranges: the second service must not get the first one's port.
        let a = Case::new(vec![svc("a", 4000, 4010), svc("b", 4000, 4010)])
            .run(&FakeProbe::default())
            .unwrap();
        assert_eq!(ports(&a), [("a", 4000), ("b", 4001)]);
    }

    #[test]
    fn udp_services_check_udp() {
        let mut s = svc("dns", 5300, 5310);
        s.protocol = Protocol::Udp;
        let probe = FakeProbe {
            busy: [5301].into(),
            udp_busy: [5300].into(),
            ..Default::default()
        };
        let a = Case::new(vec![s.clone()]).run(&probe).unwrap();
        assert_eq!(a.ports["dns"], 5301);
        s.protocol = Protocol::Both;
        let a = Case::new(vec![s]).run(&probe).unwrap();
        assert_eq!(a.ports["dns"], 5302);
    }

    #[test]
    fn reserved_and_low_ports_are_never_chosen() {
        let mut case = Case::new(vec![svc("web", 8080, 8099)]);
        case.reserved = vec![8080..=8090];
        assert_eq!(case.run(&FakeProbe::default()).unwrap().ports["web"], 8091);
    }

    #[test]
    fn ephemeral_ports_come_last_with_a_warning() {
        let mut case = Case::new(vec![svc("web", 40000, 40010)]);
        case.avoid = vec![32768..=40005];
        let a = case.run(&FakeProbe::default()).unwrap();
        assert_eq!(a.ports["web"], 40006);
        assert!(a.warnings.is_empty());

        let case = case.held("other", "x", 40006);
        let mut case = case;
        for p in 40007..=40010 {
            case = case.held("other", &format!("s{p}"), p);
        }
        let a = case.run(&FakeProbe::default()).unwrap();
        assert_eq!(a.ports["web"], 40000);
        assert!(
            a.warnings[0].contains("ephemeral range 32768-40005")
                && a.warnings[0].contains("the rest of 40000-40010 is taken"),
            "{:?}",
            a.warnings
        );

        // Regression (issue 15, low item): a range wholly inside the ephemeral range said "the
        // rest is taken" when nothing was.
        let mut case = Case::new(vec![svc("web", 40000, 40010)]);
        case.avoid = vec![32768..=60999];
        let a = case.run(&FakeProbe::default()).unwrap();
        assert_eq!(a.ports["web"], 40000);
        assert!(
            a.warnings[0].contains("all of 40000-40010 lies inside it")
                && !a.warnings[0].contains("taken"),
            "{:?}",
            a.warnings
        );
    }

    #[test]
    fn pin_is_honoured_and_moves_an_existing_port() {
        let mut case = Case::new(vec![svc("web", 8080, 8099), svc("db", 5432, 5439)]);
        case.worktree = "me".into();
        let case = case
            .held("me", "web", 8080)
            .held("me", "db", 5432)
            .pin("web", 8095);
        let a = case.run(&FakeProbe::default()).unwrap();
        assert_eq!(ports(&a), [("db", 5432), ("web", 8095)]);
        assert_eq!(
            a.changes,
            [Change::Moved {
                service: "web".into(),
                from: 8080,
                to: 8095
            }]
        );
        // Pinning a port outside the range is allowed: a pin is explicit.
        let a = Case::new(vec![svc("web", 8080, 8099)])
            .pin("web", 18000)
            .run(&FakeProbe::default())
            .unwrap();
        assert_eq!(a.ports["web"], 18000);
    }

    #[test]
    fn pin_to_own_current_port_is_a_no_op() {
        let mut case = Case::new(vec![svc("web", 8080, 8099)]);
        case.worktree = "me".into();
        let case = case.held("me", "web", 8083).pin("web", 8083);
        let probe = FakeProbe {
            busy: [8083].into(),
            ..Default::default()
        };
        let a = case.run(&probe).unwrap();
        assert!(a.changes.is_empty());
    }

    #[test]
    fn a_move_takes_another_port_even_when_the_old_one_is_free() {
        let mut case = Case::new(vec![svc("web", 8080, 8099), svc("db", 5432, 5439)]);
        case.worktree = "me".into();
        let mut case = case.held("me", "web", 8080).held("me", "db", 5432);
        case.wants.insert("web".into(), Want::Move);
        let a = case.run(&FakeProbe::default()).unwrap();
        assert_eq!(ports(&a), [("db", 5432), ("web", 8081)]);
        assert_eq!(
            a.changes,
            [Change::Moved {
                service: "web".into(),
                from: 8080,
                to: 8081
            }]
        );
    }

    #[test]
    fn auto_choices_skip_pinned_ports_of_the_same_request() {
        let a = Case::new(vec![svc("a", 4000, 4010), svc("b", 4000, 4010)])
            .pin("b", 4000)
            .run(&FakeProbe::default())
            .unwrap();
        assert_eq!(ports(&a), [("a", 4001), ("b", 4000)]);
    }

    #[test]
    fn pin_errors_carry_codes_and_three_nearest_suggestions() {
        let base = || {
            Case::new(vec![svc("web", 8080, 8099)])
                .held("feature", "web", 8085)
                .held("feature", "db", 8084)
        };
        let e = base()
            .pin("web", 8085)
            .run(&FakeProbe::default())
            .unwrap_err();
        assert_eq!(e.code, Code::PortAllocated);
        assert!(e.message.contains("worktree feature"), "{}", e.message);
        // 8084 is taken too: nearest free are 8086, 8083, 8087 (ties go to the lower port).
        assert_eq!(e.suggestions, [8086, 8083, 8087]);
        assert_eq!(e.details["worktree"], "feature");

        let probe = FakeProbe {
            busy: [8090].into(),
            ..Default::default()
        };
        let e = base().pin("web", 8090).run(&probe).unwrap_err();
        assert_eq!(e.code, Code::PortInUse);
        assert!(e.message.contains("pid 4242 (nginx)"), "{}", e.message);
        assert_eq!(e.suggestions, [8089, 8091, 8088]);

        let e = base()
            .pin("web", 80)
            .run(&FakeProbe::default())
            .unwrap_err();
        assert_eq!(e.code, Code::InvalidPort);
        assert_eq!(e.suggestions, [8080, 8081, 8082]);
        let e = base()
            .pin("web", 70000)
            .run(&FakeProbe::default())
            .unwrap_err();
        assert_eq!(e.code, Code::InvalidPort);
        assert_eq!(e.suggestions, [8099, 8098, 8097]);

        let mut case = base().pin("web", 8092);
        case.reserved = vec![8090..=8093];
        let e = case.run(&FakeProbe::default()).unwrap_err();
        assert_eq!(e.code, Code::SystemReserved);
        assert_eq!(e.suggestions, [8094, 8089, 8095]);
    }

    #[test]
    fn suggestions_never_offer_the_services_own_current_port() {
        let mut case = Case::new(vec![svc("web", 8080, 8099)]);
        case.worktree = "me".into();
        let case = case
            .held("main", "web", 8080)
            .held("me", "web", 8081)
            .pin("web", 8080);
        let e = case.run(&FakeProbe::default()).unwrap_err();
        assert_eq!(e.code, Code::PortAllocated);
        assert_eq!(e.suggestions, [8082, 8083, 8084]);
    }

    #[test]
    fn pin_to_a_port_of_another_own_service_is_refused() {
        let mut case = Case::new(vec![svc("web", 8080, 8099), svc("api", 8080, 8099)]);
        case.worktree = "me".into();
        let case = case
            .held("me", "web", 8080)
            .held("me", "api", 8081)
            .pin("api", 8080);
        let e = case.run(&FakeProbe::default()).unwrap_err();
        assert_eq!(e.code, Code::PortAllocated);
        assert!(e.message.contains("service web"), "{}", e.message);
    }

    #[test]
    fn unknown_service_in_a_pin() {
        let e = Case::new(vec![svc("web", 8080, 8099)])
            .pin("wbe", 8080)
            .run(&FakeProbe::default())
            .unwrap_err();
        assert_eq!(e.code, Code::UnknownService);
        assert!(e.message.contains("web"), "{}", e.message);
    }

    #[test]
    fn exhaustion_names_service_range_and_causes() {
        let mut case =
            Case::new(vec![svc("web", 8080, 8099), svc("db", 5432, 5433)]).held("a", "db", 5432);
        case.reserved = vec![5433..=5433];
        let e = case.run(&FakeProbe::default()).unwrap_err();
        assert_eq!(e.code, Code::RangeExhausted);
        assert!(
            e.message.contains("service db in 5432-5433"),
            "{}",
            e.message
        );
        assert!(e.message.contains("1 allocated"), "{}", e.message);
        assert!(e.message.contains("1 reserved"), "{}", e.message);
        assert!(e.message.contains("[services.db]"), "{}", e.message);

        let probe = FakeProbe {
            busy: (5432..=5433).collect(),
            ..Default::default()
        };
        let e = Case::new(vec![svc("db", 5432, 5433)])
            .run(&probe)
            .unwrap_err();
        assert!(e.message.contains("2 in use"), "{}", e.message);
    }

    #[test]
    fn services_dropped_from_the_config_are_kept() {
        let mut case = Case::new(vec![svc("web", 8080, 8099)]);
        case.worktree = "me".into();
        let case = case.held("me", "legacy", 9999);
        let a = case.run(&FakeProbe::default()).unwrap();
        assert_eq!(ports(&a), [("legacy", 9999), ("web", 8080)]);
    }

    /// The slot table is kept in pages of ports: ports on either side of a page's edge, the
    /// first and the last port, and a run across pages each read back as inserted, and a port
    /// of a page nothing was inserted into is nobody's.
    #[test]
    fn taken_keeps_ports_on_either_side_of_a_page_edge_apart() {
        let mut taken = Taken::new();
        assert_eq!(taken.owner(8080), None, "empty");
        let edges = [0, 1, 1023, 1024, 2047, 2048, 65534, 65535];
        for (i, port) in edges.into_iter().enumerate() {
            let service = ["a", "b"][i % 2];
            assert_eq!(taken.insert(port, Owner::here("main", service)), Ok(()));
        }
        taken.insert_run(4090..=4100, Owner::lease("l"), &mut |p, o| {
            panic!("{p} {o}")
        });
        for (i, port) in edges.into_iter().enumerate() {
            let service = ["a", "b"][i % 2];
            assert_eq!(
                taken.owner(port),
                Some(Owner::here("main", service)),
                "{port}"
            );
        }
        for port in [2, 1022, 1025, 2046, 2049, 4089, 4101, 30000, 65533] {
            assert_eq!(taken.owner(port), None, "{port}");
            assert!(!taken.held_by_other(port, &Owner::here("x", "y")), "{port}");
        }
        for port in 4090..=4100 {
            assert_eq!(taken.owner(port), Some(Owner::lease("l")), "{port}");
        }
    }

    #[test]
    fn taken_reports_a_second_owner_as_a_conflict_and_keeps_the_first() {
        let other = Path::new("/src/other");
        let mut taken = Taken::new();
        taken.insert(8080, Owner::here("main", "web")).unwrap();
        // The same owner again is no conflict.
        taken.insert(8080, Owner::here("main", "web")).unwrap();
        let theirs = Owner::elsewhere(other, "main", "web");
        assert_eq!(taken.insert(8080, theirs), Err(Owner::here("main", "web")));
        assert_eq!(taken.owner(8080), Some(Owner::here("main", "web")));
        taken.insert(8081, theirs).unwrap();
        assert_eq!(
            taken.owner(8081).unwrap().to_string(),
            "worktree main of repository /src/other (service web)"
        );
    }

    #[test]
    fn a_port_of_the_same_worktree_name_in_another_repository_is_not_ours() {
        let other = Path::new("/src/other");
        let svcs = vec![svc("web", 8080, 8081)];
        let mut taken = Taken::new();
        taken
            .insert(8080, Owner::elsewhere(other, "main", "web"))
            .unwrap();
        let wants = BTreeMap::from([("web".to_string(), Want::Pin(8080))]);
        let err = allocate(
            &Request {
                strategy: Strategy::Ranges,
                worktree: "main",
                services: &svcs,
                current: &BTreeMap::new(),
                wants: &wants,
                taken: &taken,
                reserved: &[],
                avoid: &[],
                block: None,
            },
            &FakeProbe::default(),
        )
        .unwrap_err();
        assert_eq!(err.code, Code::PortAllocated);
        assert!(
            err.message.contains("of repository /src/other"),
            "{}",
            err.message
        );
    }
}

#[cfg(test)]
mod properties {
    //! For random configs, registries, pins and probe answers, every result is in range (or
    //! the pin), not reserved, not busy, not anyone else's, idempotent and all-or-nothing.

    use super::*;
    use proptest::prelude::*;
    use proptest::strategy::Strategy;
    use std::cell::RefCell;

    struct SetProbe(HashSet<u16>, RefCell<u32>);

    impl Probe for SetProbe {
        fn is_free(&self, port: u16, _: Protocol) -> bool {
            *self.1.borrow_mut() += 1;
            !self.0.contains(&port)
        }
        fn holder(&self, _: u16, _: Protocol) -> Option<Holder> {
            None
        }
    }

    #[derive(Debug, Clone)]
    struct World {
        services: Vec<Service>,
        taken: Vec<(u16, String, String)>,
        reserved: Vec<RangeInclusive<u16>>,
        avoid: Vec<RangeInclusive<u16>>,
        busy: HashSet<u16>,
        wants: BTreeMap<String, Want>,
    }

    fn world() -> impl Strategy<Value = World> {
        let service = (1020u16..1060, 0u16..12);
        (
            prop::collection::vec(service, 1..4),
            prop::collection::vec((1020u16..1080, 0usize..3, 0usize..4), 0..30),
            prop::collection::vec((1020u16..1080, 0u16..8), 0..3),
            prop::option::of((1020u16..1080, 0u16..30)),
            prop::collection::hash_set(1020u16..1080, 0..20),
            prop::collection::vec((0usize..4, prop::option::of(0u32..70000)), 0..3),
        )
            .prop_map(|(svcs, taken, reserved, avoid, busy, wants)| {
                let services: Vec<Service> = svcs
                    .into_iter()
                    .enumerate()
                    .map(|(i, (lo, w))| Service {
                        name: format!("s{i}"),
                        range: (lo.max(MIN_PORT), lo.max(MIN_PORT) + w),
                        env: format!("S{i}_PORT"),
                        protocol: Protocol::Tcp,
                        offset: 0,
                        http: false,
                        well_known: &[],
                    })
                    .collect();
                let owners = ["me", "a", "b"];
                let mut seen = HashSet::new();
                let taken = taken
                    .into_iter()
                    .filter(|(p, _, _)| *p >= MIN_PORT && seen.insert(*p))
                    .map(|(p, o, s)| (p, owners[o].to_string(), format!("s{s}")))
                    .collect();
                let wants = wants
                    .into_iter()
                    .filter(|(i, _)| *i < services.len())
                    .map(|(i, pin)| (format!("s{i}"), pin.map_or(Want::Auto, Want::Pin)))
                    .collect();
                World {
                    services,
                    taken,
                    reserved: reserved.into_iter().map(|(lo, w)| lo..=lo + w).collect(),
                    avoid: avoid.into_iter().map(|(lo, w)| lo..=lo + w).collect(),
                    busy,
                    wants,
                }
            })
    }

    fn run(
        w: &World,
        current: &BTreeMap<String, u16>,
        taken: &Taken,
        wants: &BTreeMap<String, Want>,
    ) -> Result<Allocation, Error> {
        allocate(
            &Request {
                strategy: crate::model::config::Strategy::Ranges,
                worktree: "me",
                services: &w.services,
                current,
                wants,
                taken,
                reserved: &w.reserved,
                avoid: &w.avoid,
                block: None,
            },
            &SetProbe(w.busy.clone(), RefCell::new(0)),
        )
    }

    /// A port `svc` could take: what the allocator must only ever choose.
    fn usable(w: &World, me: &BTreeMap<String, u16>, port: u16, svc: &str) -> bool {
        port >= MIN_PORT
            && !w.reserved.iter().any(|r| r.contains(&port))
            && !w.busy.contains(&port)
            && !w
                .taken
                .iter()
                .any(|(p, o, s)| *p == port && !(o == "me" && s == svc))
            && !me.iter().any(|(s, p)| *p == port && s != svc)
    }

    /// One worktree's services and ports, in one of two repositories (0: the one choosing).
    type Holding = (u8, u8, Vec<(u8, u16)>);

    fn holdings() -> impl Strategy<Value = Vec<Holding>> {
        let services = proptest::collection::vec((0u8..4, 2040u16..2100), 1..5);
        proptest::collection::vec((0u8..2, 0u8..6, services), 0..12)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// The taken set built a worktree at a time is the one built a port at a time (the
        /// same owners, the same conflicts, services named by position or not, a worktree
        /// again later), and the first port not held by another, found a page at a time, is
        /// the first found one port at a time, for every owner.
        #[test]
        fn a_worktree_at_a_time_is_a_port_at_a_time(holdings in holdings()) {
            let repos = [None, Some(Path::new("/r/other"))];
            let names = ["web", "db", "api", "debug"];
            let keys = ["main", "a", "b", "c", "d", "e"];
            let owner = |r: u8, w: u8, s: u8| Owner {
                repository: repos[usize::from(r)],
                ..Owner::here(keys[usize::from(w)], names[usize::from(s)])
            };
            let (mut one, mut each) = (Taken::new(), Taken::new());
            let (mut refused_one, mut refused_each) = (Vec::new(), Vec::new());
            for (r, w, services) in &holdings {
                let list = services.iter().map(|(s, p)| (names[usize::from(*s)], *p));
                one.insert_worktree(repos[usize::from(*r)], keys[usize::from(*w)], list, &mut |p, f, s| {
                    refused_one.push((p, f, s))
                });
                for (s, p) in services {
                    if let Err(first) = each.insert(*p, owner(*r, *w, *s)) {
                        refused_each.push((*p, first, owner(*r, *w, *s)));
                    }
                }
            }
            prop_assert_eq!(refused_one, refused_each);
            for port in 2030..2110 {
                prop_assert_eq!(one.owner(port), each.owner(port));
            }
            for (r, w, s) in (0..2).flat_map(|r| (0..6).flat_map(move |w| (0..4).map(move |s| (r, w, s)))) {
                let o = owner(r, w, s);
                let entries = one.entries_of(o.repository, o.worktree);
                for port in 2030..2110 {
                    let expected = each.owner(port).is_some_and(|held| held != o);
                    prop_assert_eq!(one.held_by_other_than(port, &o, &entries), expected);
                }
                for (lo, hi) in [(2030, 2109), (2040, 2060), (2070, 2070), (2099, 2100)] {
                    let expected = (lo..=hi).find(|p| each.owner(*p).is_none_or(|held| held == o));
                    prop_assert_eq!(one.first_not_held(lo..=hi, &o, &entries), expected);
                }
            }
        }

        #[test]
        fn allocation_invariants(w in world()) {
            let mut taken = Taken::new();
            let mut current = BTreeMap::new();
            for (p, o, s) in &w.taken {
                taken.insert(*p, Owner::here(o, s)).unwrap();
                if o == "me" {
                    current.insert(s.clone(), *p);
                }
            }
            match run(&w, &current, &taken, &w.wants) {
                Ok(a) => {
                    // Complete: every service has a port; ports of this worktree are distinct.
                    for s in &w.services {
                        prop_assert!(a.ports.contains_key(&s.name));
                    }
                    let mut mine: Vec<u16> = a.ports.values().copied().collect();
                    mine.sort();
                    mine.dedup();
                    prop_assert_eq!(mine.len(), a.ports.len(), "a port twice in one worktree");
                    for s in &w.services {
                        let port = a.ports[&s.name];
                        let kept = current.get(&s.name) == Some(&port);
                        if kept {
                            continue;
                        }
                        match w.wants.get(&s.name) {
                            Some(Want::Pin(pin)) => prop_assert_eq!(u32::from(port), *pin),
                            _ => prop_assert!((s.range.0..=s.range.1).contains(&port), "{} out of range", port),
                        }
                        let others: BTreeMap<String, u16> = a.ports.iter().filter(|(n, _)| **n != s.name).map(|(n, p)| (n.clone(), *p)).collect();
                        prop_assert!(usable(&w, &others, port, &s.name), "{} is not usable for {}", port, s.name);
                    }
                    // Idempotent: asking again with the result in the registry changes nothing.
                    let mut taken2 = Taken::new();
                    for (p, o, s) in w.taken.iter().filter(|(_, o, _)| o != "me") {
                        taken2.insert(*p, Owner::here(o, s)).unwrap();
                    }
                    for (s, p) in &a.ports {
                        taken2.insert(*p, Owner::here("me", s)).unwrap();
                    }
                    let again = run(&w, &a.ports, &taken2, &BTreeMap::new()).unwrap();
                    prop_assert_eq!(&again.ports, &a.ports);
                    prop_assert!(again.changes.is_empty());
                }
                Err(e) => {
                    // All or nothing is structural (a pure function); check the error is earned.
                    match e.code {
                        Code::RangeExhausted => {
                            let svc = e.details["service"].as_str().unwrap();
                            let s = w.services.iter().find(|s| s.name == svc).unwrap();
                            let pinned: BTreeMap<String, u16> = w.wants.iter().filter_map(|(n, want)| match want {
                                Want::Pin(p) => u16::try_from(*p).ok().map(|p| (n.clone(), p)),
                                Want::Auto | Want::Move => None,
                            }).collect();
                            // No port of the range was usable, even before other choices.
                            for p in s.range.0..=s.range.1 {
                                let blocked = !usable(&w, &BTreeMap::new(), p, svc)
                                    || pinned.values().any(|q| *q == p)
                                    || w.services.iter().any(|o| o.name != s.name && (o.range.0..=o.range.1).contains(&p));
                                prop_assert!(blocked, "{} was free for {}", p, svc);
                            }
                        }
                        Code::InvalidPort | Code::PortAllocated | Code::SystemReserved | Code::PortInUse => {
                            prop_assert!(e.suggestions.len() <= 3);
                            let svc = e.details["service"].as_str().unwrap();
                            let s = w.services.iter().find(|s| s.name == svc).unwrap();
                            for p in &e.suggestions {
                                prop_assert!((s.range.0..=s.range.1).contains(p));
                                prop_assert!(usable(&w, &BTreeMap::new(), *p, svc), "suggested {} is not usable", p);
                            }
                        }
                        other => prop_assert!(false, "unexpected error {:?}: {}", other, e.message),
                    }
                }
            }
        }
    }
}
