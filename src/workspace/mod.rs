//! The workflow every command shares, between the commands and the core: open the repository,
//! resolve the target worktree (it must exist), take the registry lock, ensure ports, plan and
//! apply renders. Commands are: arguments -> [`Workspace`] -> an output value; the rules every
//! command must obey live here once.
//!
//! Prints warnings on stderr as they happen (recovery, ephemeral ports, render warnings);
//! never prints to stdout.

pub mod lifecycle;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::machine::{Index, Machine};
use crate::model::allocate::{self, BlockSite, Owner, Request, Taken, Want};
use crate::model::attribution::Known;
use crate::model::config::{self, Config, Strategy};
use crate::model::error::{Code, Error};
use crate::model::names;
use crate::registry::{
    self, Claim, Loaded, Lock, Paths, Ports, Registry, WorktreeRecord, now_rfc3339,
};
use crate::render::{self, FileAction, Peers, Plan, Rendered, TemplateContext};
use crate::sys::fsio::{self, Durability, Mode, WriteOptions};
use crate::sys::git::{Repo, WorktreeInfo};
use crate::sys::lock::{self, FileLock};
use crate::sys::probe::{self, SystemProbe};
use lifecycle::Event;

/// SYSTEM_RESERVED saying which named range (`reserved = ["system"]`) holds the port.
fn name_the_reserved_range(mut e: Error, config: &Config) -> Error {
    if e.code != Code::SystemReserved {
        return e;
    }
    let port = e.details["port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok());
    if let Some((range, name)) =
        port.and_then(|p| config.reserved_names.iter().find(|(r, _)| r.contains(&p)))
    {
        e.message = format!(
            "{} (the `{name}` range, {}-{})",
            e.message,
            range.start(),
            range.end()
        );
        if let Some(d) = e.details.as_object_mut() {
            d.insert("reserved_range".into(), json!(name));
        }
    }
    e
}

/// `web 8081, db 5433`.
pub fn ports_inline(ports: &BTreeMap<String, u16>) -> String {
    let parts: Vec<String> = ports.iter().map(|(s, p)| format!("{s} {p}")).collect();
    parts.join(", ")
}

/// The machine index, held under the machine lock for one allocation.
struct MachineView {
    machine: Machine,
    _lock: FileLock,
    index: Index,
    changed: bool,
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

/// What a worktree about to be removed leaves in the registry, read before git deletes it
/// (and its identity token with it).
#[derive(Debug)]
pub struct Leaving {
    key: String,
    id: Option<String>,
    before: Option<(Option<WorktreeRecord>, Option<Ports>)>,
}

fn entry(reg: &Registry, key: &str) -> (Option<WorktreeRecord>, Option<Ports>) {
    (reg.record(key), reg.ports(key).cloned())
}

/// What a command says while it waits for a lock (after about a second).
pub fn say_waiting(path: &Path) {
    eprintln!("git-worktree-ports: waiting for lock on {}", path.display());
}

/// Take the machine lock, saying so when it takes a while.
pub fn lock_machine(machine: &Machine) -> anyhow::Result<FileLock> {
    machine.lock(lock::timeout_from_env()?, &say_waiting)
}

/// Drop the leases of `index` whose TTL passed or whose holder process died (the caller holds
/// the machine lock and saves); returns them.
pub fn reclaim_leases(index: &mut Index) -> Vec<(String, crate::machine::Lease)> {
    index.reclaim_leases(unix_now(), &probe::process_alive)
}

/// The proxy's port, once the proxy was set up on this machine (`proxy run` or `start`
/// records it in the state dir): templates then get proxy URLs.
pub fn proxy_port() -> Option<u16> {
    Machine::from_env().ok()?.proxy_port()
}

/// The template context of a worktree and what it holds (names and URLs included).
pub fn template_context(ws: &Workspace, target: &Target, held: &Holding) -> TemplateContext {
    let mut ctx = TemplateContext::new(
        &target.wt,
        ws.repo.common_dir(),
        &target.config,
        &held.ports,
        &held.compose_project_name,
    );
    ctx.slot = held.slot;
    ctx.with_hostname(held.hostname.as_deref(), proxy_port())
}

/// `WORKTREE_SLOT`, beside a worktree's port variables (`env`, `exec`, `[on]` commands).
pub fn slot_var(slot: Option<u32>) -> Option<(String, u16)> {
    Some(("WORKTREE_SLOT".to_string(), u16::try_from(slot?).ok()?))
}

/// Seconds since the epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The ports of every repository of `index` but `except` whose directory is still there.
pub fn others(index: &Index, except: Option<&Path>) -> Vec<Other> {
    (index.repositories.keys())
        .filter(|p| Some(p.as_path()) != except && p.is_dir())
        .map(|common| Other::read(common))
        .collect()
}

/// Print a warning on stderr.
pub fn warn(msg: &str) {
    let label = crate::output::colour::paint_err("warning:", crate::output::colour::Colour::Yellow);
    eprintln!("git-worktree-ports: {label} {msg}");
}

/// Let go of a registry the command is done with. A large one is freed on another thread: a
/// 10,000-worktree registry is 40,000 allocations, 1.6 ms to free, and the process is about
/// to exit. Small ones (a thread costs more than they do) are freed here.
pub fn dispose(registry: Registry) {
    if registry.size() > 2_000 {
        // A thread that cannot start drops the registry here instead.
        let _ = std::thread::Builder::new().spawn(move || drop(registry));
    }
}

/// A rendered file compared with what a render would write ([`Workspace::file_states`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FileState {
    /// It has the content a render would give it.
    UpToDate,
    /// A render would change (or remove) it.
    Stale,
    /// git tracks it: never written.
    Tracked,
    /// The main worktree was given ports by a linked worktree's allocation (main-first) and
    /// has not been rendered yet: `render` writes it.
    NotRendered,
}

/// One repository and its registry files.
pub struct Workspace {
    repo: Repo,
    paths: Paths,
    /// `[on] release` commands of worktrees a full range took ports back from (lazy
    /// reclaim, under the lock): run once the allocation is saved and the lock is let go.
    reclaimed: std::cell::RefCell<Vec<ReleaseJob>>,
    /// git's worktrees as seen from here, read once per command ([`Workspace::worktrees`]).
    worktrees: std::cell::OnceCell<Vec<WorktreeInfo>>,
}

/// An `[on] release` command to run: what it runs, for which worktree, with which ports,
/// where.
#[derive(Debug)]
struct ReleaseJob {
    cmd: String,
    target: Target,
    held: Holding,
    home: PathBuf,
}

/// A worktree a command acts on: it exists (its directory is there), and its config is read.
#[derive(Debug, Clone)]
pub struct Target {
    /// The worktree.
    pub wt: WorktreeInfo,
    /// Its `.worktree-ports/config.toml` (or the built-in services).
    pub config: Config,
    /// Its identity token ([`worktree_id`]), None before its first allocation.
    pub id: Option<String>,
}

/// What a worktree holds: its ports, and the names decided with them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holding {
    /// Service -> port.
    pub ports: BTreeMap<String, u16>,
    /// Its docker compose project name (kept in its record).
    pub compose_project_name: String,
    /// Its slot (kept in its record); None only for a record from before slots that a
    /// render-only command read.
    pub slot: Option<u32>,
    /// The worktree had no ports before this command gave them (its `[on] allocate` runs).
    pub fresh: bool,
    /// Its hostname (kept in its record); None only for a record from before hostnames.
    pub hostname: Option<String>,
    /// The main worktree got its first ports along with this one's (main-first): its
    /// `[on] allocate` runs too.
    pub main_fresh: bool,
}

impl Holding {
    /// What worktree `key` holds as the registry records it, without allocating (status,
    /// doctor, renders, `[on]` commands): its ports, and the names decided with them. A record
    /// written before compose names were kept has the name it was rendered with, which is the
    /// formula: this is the one place that falls back to it.
    pub fn recorded(reg: &Registry, key: &str, repo_name: &str) -> Holding {
        let record = reg.record(key);
        Holding {
            ports: reg.ports(key).map(Ports::to_map).unwrap_or_default(),
            compose_project_name: (record.as_ref())
                .and_then(|r| r.compose_project_name.clone())
                .unwrap_or_else(|| render::compose_project_name(repo_name, key)),
            slot: record.as_ref().and_then(|r| r.slot),
            fresh: false,
            hostname: record.and_then(|r| r.hostname),
            main_fresh: false,
        }
    }
}

/// Where a worktree's identity token lives, inside its own git dir (which git deletes with
/// the worktree, and never shares with a later worktree of the same name).
const ID_FILE: &str = "worktree-ports/id";

/// The identity token of a worktree, if it has one.
pub fn worktree_id(wt: &WorktreeInfo) -> Option<String> {
    let text = std::fs::read_to_string(wt.git_dir.join(ID_FILE)).ok()?;
    let id = text.trim();
    (!id.is_empty()).then(|| id.to_string())
}

/// Give a worktree a new identity token (time and pid: unique on this machine).
fn new_worktree_id(wt: &WorktreeInfo) -> anyhow::Result<String> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let id = format!("{nanos:x}-{:x}", std::process::id());
    fsio::write_atomic(
        &wt.git_dir.join(ID_FILE),
        format!("{id}\n").as_bytes(),
        WriteOptions {
            durability: Durability::File,
            mode: Mode::Fixed(0o644),
            label: "id",
        },
    )?;
    Ok(id)
}

impl Target {
    /// (service, port, env var) in config order, then services the config no longer has.
    pub fn ordered(&self, ports: &BTreeMap<String, u16>) -> Vec<(String, u16, String)> {
        let config = &self.config;
        let mut out: Vec<(String, u16, String)> = config
            .services
            .iter()
            .filter_map(|s| Some((s.name.clone(), *ports.get(&s.name)?, s.env.clone())))
            .collect();
        for (name, port) in ports {
            if config.service(name).is_none() {
                out.push((name.clone(), *port, config::default_env_name(name)));
            }
        }
        out
    }

    /// (`WEB_PORT`, 8081) in the same order.
    pub fn vars(&self, ports: &BTreeMap<String, u16>) -> Vec<(String, u16)> {
        self.ordered(ports)
            .into_iter()
            .map(|(_, port, env)| (env, port))
            .collect()
    }
}

impl Workspace {
    /// Open the repository of the current directory (or of `GIT_DIR`).
    pub fn open() -> anyhow::Result<Workspace> {
        let repo = Repo::discover()?;
        let paths = Paths::new(repo.common_dir());
        Ok(Workspace {
            repo,
            paths,
            reclaimed: Default::default(),
            worktrees: Default::default(),
        })
    }

    /// Open the repository whose common dir is `common` (another repository of the machine).
    pub fn open_at(common: &Path) -> anyhow::Result<Workspace> {
        let repo = Repo::open_at(common)?;
        let paths = Paths::new(repo.common_dir());
        Ok(Workspace {
            repo,
            paths,
            reclaimed: Default::default(),
            worktrees: Default::default(),
        })
    }

    /// The repository.
    pub fn repo(&self) -> &Repo {
        &self.repo
    }

    /// Its registry files.
    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    /// git's worktrees as seen from here, read once per command: the main one first, and a
    /// worktree moved with `mv` where it is when we stand in it (git lists it at its old path,
    /// as prunable). Every rule that asks which worktrees exist asks this list, so no command
    /// calls the worktree it stands in gone.
    pub fn worktrees(&self) -> anyhow::Result<&[WorktreeInfo]> {
        if let Some(list) = self.worktrees.get() {
            return Ok(list);
        }
        let list = worktrees_seen_from_here(&self.repo)?;
        Ok(self.worktrees.get_or_init(|| list))
    }

    /// [`Workspace::worktrees`] read again, after a git command changed them (`add`).
    pub fn worktrees_after_git(&mut self) -> anyhow::Result<&[WorktreeInfo]> {
        self.worktrees = Default::default();
        self.worktrees()
    }

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

    /// Take the registry lock, saying so when it takes a while.
    pub fn lock(&self) -> anyhow::Result<Lock> {
        Lock::acquire(&self.paths, lock::timeout_from_env()?, &say_waiting)
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
        if let Some(w) = lock.save(reg)? {
            warn(&w);
        }
        Ok(())
    }

    /// The registry without the lock (readers), printing recovery warnings.
    pub fn load_unlocked(&self) -> anyhow::Result<Registry> {
        let loaded = self.read()?;
        loaded.warnings.iter().for_each(|w| warn(w));
        Ok(loaded.registry)
    }

    /// The lock-free load as it is, warnings not yet printed (for fast paths that may go on
    /// to lock and reuse it).
    pub fn read(&self) -> anyhow::Result<Loaded> {
        registry::load_unlocked(&self.paths)
    }

    /// Registry key of the current worktree, without listing worktrees (cheap on every
    /// backend).
    pub fn current_key(&self) -> anyhow::Result<String> {
        self.repo.current_key().ok_or_else(|| self.bare_error())
    }

    fn bare_error(&self) -> anyhow::Error {
        Error::new(
            Code::BareRepository,
            format!(
                "{} is a bare repository with no working tree here; run this inside one of its worktrees, or name one (git worktree list shows them)",
                self.repo.common_dir().display()
            ),
        )
        .into()
    }

    /// The worktree named by `spec` (git name, `main`, or path), or the current one, as git
    /// knows it: its directory may be gone.
    pub fn worktree(&self, spec: Option<&str>) -> anyhow::Result<WorktreeInfo> {
        match spec {
            None => self.repo.current()?.ok_or_else(|| self.bare_error()),
            Some(spec) => {
                let worktrees = self.worktrees()?;
                find_worktree(spec, worktrees)
                    .cloned()
                    .ok_or_else(|| not_found(spec, worktrees))
            }
        }
    }

    /// The worktree named by `spec`, or the current one, to act on: it must exist. A worktree
    /// whose directory is gone is refused, never given the built-in services (its committed
    /// config cannot be read from a missing directory) and never re-created by a render.
    pub fn target(&self, spec: Option<&str>) -> anyhow::Result<Target> {
        self.target_of(self.worktree(spec)?)
    }

    /// [`Workspace::target`] for a worktree already resolved.
    pub fn target_of(&self, wt: WorktreeInfo) -> anyhow::Result<Target> {
        if !wt.path.is_dir() {
            return Err(missing_dir(&wt));
        }
        if let Some(old) = &wt.moved_from {
            warn(&moved_warning(&wt, old));
        }
        // Without a checkout the config is not on disk yet: take the one being checked out
        // (HEAD's), never the built-in services it would otherwise get and keep.
        let config = crate::sys::config_file::load_or(&wt.path, || {
            if self.repo.has_checkout(&wt) {
                return Ok(None);
            }
            let bytes = self.repo.file_at_head(&wt, config::CONFIG_PATH)?;
            Ok(bytes.map(|b| (b, PathBuf::from(format!("HEAD:{}", config::CONFIG_PATH)))))
        })?;
        let id = worktree_id(&wt);
        Ok(Target { wt, config, id })
    }

    /// The registry key `spec` names: the current worktree (None), a key in the registry, a
    /// git worktree (name or path), or the recorded path of a worktree git no longer has.
    /// Lists git's worktrees only when the key alone does not answer.
    pub fn registry_key(&self, reg: &Registry, spec: Option<&str>) -> anyhow::Result<String> {
        let Some(spec) = spec else {
            return self.current_key();
        };
        if reg.ports(spec).is_some() {
            return Ok(spec.to_string());
        }
        let worktrees = self.worktrees()?;
        if let Some(w) = find_worktree(spec, worktrees) {
            return Ok(w.key.clone());
        }
        reg.key_recorded_at(&absolute(spec))
            .map(str::to_string)
            .ok_or_else(|| not_found(spec, worktrees))
    }

    /// The target's ports, allocating what is missing (or pinned differently).
    ///
    /// Idempotent: a worktree that has all its ports keeps them, and then nothing is locked or
    /// written (the lock-free read answers). Otherwise: lock, reload, allocate (probing under
    /// the lock, so parallel runs cannot pick the same port), save, unlock.
    pub fn ensure_ports(
        &self,
        target: &Target,
        wants: &BTreeMap<String, Want>,
    ) -> anyhow::Result<Holding> {
        // A registry that does not load cleanly goes the locked way, which recovers it.
        let unlocked = self.read().ok();
        if let Some(held) = unlocked.as_ref().and_then(|l| held(l, target, wants)) {
            dispose(unlocked.expect("held had a registry").registry);
            return Ok(held);
        }

        let wt = &target.wt;
        let config = &target.config;
        self.reclaimed.borrow_mut().clear();
        // Lock order, always: the machine's lock, then the repository's.
        let mut machine = match config.coordinate {
            true => Some(self.machine_view()?),
            false => None,
        };
        let lock = self.lock()?;
        let mut reg = self.load_locked(&lock, unlocked)?;
        let others = match &machine {
            Some(m) => self.other_registries(&m.index),
            None => Elsewhere::default(),
        };
        // The repository's name as the machine knows it (unique among its repositories),
        // and its label in hostnames, decided once and kept in the registry and the index.
        let mut repo_name = self.repo_name();
        let mut label_changed = false;
        if let Some(m) = &mut machine {
            let me = self.canonical_common_dir();
            m.changed |= m.index.register(&me, &repo_name);
            repo_name = m.index.get(&me).map_or(repo_name, |e| e.name.clone());
            let label = match reg.host_label() {
                Some(l) => l,
                None => {
                    let taken: Vec<String> = (m.index.repositories.iter())
                        .filter(|(p, _)| **p != me)
                        .map(|(_, e)| e.host.clone().unwrap_or_else(|| names::dns_label(&e.name)))
                        .collect();
                    names::unique_label(&names::dns_label(&repo_name), &|l| {
                        taken.iter().any(|t| t == l)
                    })
                }
            };
            label_changed |= reg.set_host_label(&label);
            if let Some(e) = m.index.repositories.get_mut(&me)
                && e.host.as_deref() != Some(label.as_str())
            {
                e.host = Some(label);
                m.changed = true;
            }
        } else if reg.host_label().is_none() {
            label_changed |= reg.set_host_label(&names::dns_label(&repo_name));
        }
        // Its own entry before: none (or a dead worktree's of the same name) makes it fresh.
        let fresh = reg.ports(&wt.key).is_none_or(|p| p.is_empty())
            || reg
                .record(&wt.key)
                .and_then(|r| r.id)
                .is_some_and(|id| Some(id) != target.id);
        let mut changed = label_changed;
        let mut main_fresh = false;
        // The main worktree keeps the conventional base ports: an app started there without
        // reading `.env` uses its defaults, which are the base ports. So the first linked
        // worktree to allocate allocates the main worktree first, in this same locked
        // operation (no `.env` is written into main: only its registry entry).
        if !wt.is_main
            && reg.ports(crate::sys::git::MAIN_KEY).is_none()
            && let Some(main) = (self.worktrees()?.iter()).find(|w| w.is_main && w.path.is_dir())
        {
            let main = self.target_of(main.clone())?;
            let (_, c) = self.assign(
                &mut reg,
                &main,
                &BTreeMap::new(),
                &others,
                &repo_name,
                machine.as_mut(),
            )?;
            changed |= c;
            main_fresh = true;
        }
        let (ports, c) = self.assign(
            &mut reg,
            target,
            wants,
            &others,
            &repo_name,
            machine.as_mut(),
        )?;
        changed |= c;
        // Listed before the registry is written: a crash between the two leaves a listed
        // repository with nothing allocated (harmless), never an allocation unlisted.
        if let Some(m) = &machine
            && m.changed
        {
            m.machine.save(&m.index)?;
        }
        if changed {
            self.save(&lock, &mut reg)?;
        }
        drop(lock);
        // Worktrees whose ports a full range took back: their `[on] release`, now that the
        // registry says so and no lock is held.
        for job in self.reclaimed.take() {
            self.run_on(Event::Release, &job.cmd, &job.target, &job.held, &job.home);
        }
        let record = reg
            .record(&wt.key)
            .expect("update_metadata recorded the worktree");
        let compose_project_name = record
            .compose_project_name
            .expect("update_metadata recorded a compose project name");
        dispose(reg);
        Ok(Holding {
            ports,
            compose_project_name,
            slot: record.slot,
            fresh,
            hostname: record.hostname,
            main_fresh,
        })
    }

    /// Give `target` its ports in `reg` (under the locks): the identity check, the config's
    /// services, the allocation against this registry and `others`, the record. When a
    /// service's range is full, the ports of worktrees git reports as gone are reclaimed,
    /// oldest first, before giving up. Returns the ports and whether anything changed.
    fn assign(
        &self,
        reg: &mut Registry,
        target: &Target,
        wants: &BTreeMap<String, Want>,
        others: &Elsewhere,
        repo_name: &str,
        machine: Option<&mut MachineView>,
    ) -> anyhow::Result<(BTreeMap<String, u16>, bool)> {
        let wt = &target.wt;
        let config = &target.config;
        // Block strategy: the repository's block, claimed once, machine-wide.
        let claim_before = reg.claim();
        let claim = match config.strategy {
            Strategy::Block(b) => Some(self.claim_block(reg, b, machine, others)?),
            Strategy::Ranges => None,
        };
        // An entry made by a worktree with another identity belongs to a dead worktree whose
        // name git gave this one: its ports go back (never taken over unprobed), and this
        // worktree allocates as the new worktree it is.
        let mut changed = reg.claim() != claim_before;
        let owner = reg.record(&wt.key).and_then(|r| r.id);
        if owner.is_some() && owner != target.id {
            reg.remove_worktree(&wt.key);
            changed = true;
        }
        // Services the config no longer has go back (a worktree gets exactly its config's
        // services); set_ports logs their release.
        let mut current = reg.ports(&wt.key).map(Ports::to_map).unwrap_or_default();
        current.retain(|s, _| config.service(s).is_some());
        let held_before = reg.ports(&wt.key).map(Ports::to_map).unwrap_or_default();
        let avoid = probe::avoid_ranges();
        let attempt = |reg: &Registry| {
            let slots = reg.slot_holders_except(&wt.key);
            let block = claim.map(|c| BlockSite {
                start: c.start,
                slots: &slots,
                slot: reg.record(&wt.key).and_then(|r| r.slot),
            });
            let mut taken = reg.taken();
            others.add_to(&mut taken);
            allocate::allocate(
                &Request {
                    strategy: config.strategy,
                    worktree: &wt.key,
                    services: &config.services,
                    current: &current,
                    wants,
                    taken: &taken,
                    reserved: &config.reserved,
                    avoid: &avoid,
                    block,
                },
                &SystemProbe,
            )
        };
        let alloc = match attempt(reg) {
            Ok(a) => a,
            Err(e) if e.code == Code::RangeExhausted => {
                // Lazy reclaim, only now that ports are scarce: a worktree moved with `mv`
                // also reads as gone until `git worktree repair`, and must not lose its ports
                // while there are others.
                let mut reclaimed = Vec::new();
                let mut result = Err(e);
                for (key, why) in self.gone_worktrees(reg, &wt.key)? {
                    // Its `[on] release` runs once this allocation is saved (ensure_ports).
                    if let Some(job) = self.release_job(reg, &key) {
                        self.reclaimed.borrow_mut().push(job);
                    }
                    let ports = reg.remove_gone_worktree(&key);
                    let held = if ports.is_empty() {
                        "no ports".to_string()
                    } else {
                        ports_inline(&ports)
                    };
                    reclaimed.push(format!("{key} ({why}: {held})"));
                    result = attempt(reg);
                    if result.is_ok() {
                        break;
                    }
                }
                let alloc = result?;
                warn(&format!(
                    "the range was full: gave back the ports of worktrees that are gone, oldest first: {}",
                    reclaimed.join("; ")
                ));
                changed = true;
                alloc
            }
            Err(e) => return Err(name_the_reserved_range(e, config).into()),
        };
        alloc.warnings.iter().for_each(|w| warn(w));
        if alloc.ports != held_before {
            changed = true;
            reg.set_ports(&wt.key, &alloc.ports).map_err(|c| {
                Error::new(
                    Code::PortAllocated,
                    format!("{c}; nothing was changed (this is a bug: the allocator checked it)"),
                )
            })?;
        }
        let id = match &target.id {
            Some(id) => id.clone(),
            None => new_worktree_id(wt)?,
        };
        match claim {
            Some(c) => warn_off_block(target, &alloc.ports, c),
            None => warn_outside_changed_ranges(reg, target, &alloc.ports),
        }
        changed |= update_metadata(reg, target, &id, repo_name, alloc.slot)?;
        Ok((alloc.ports, changed))
    }

    /// The repository's block (under the locks): the one it claimed, while the config is the
    /// one it was claimed under; else the lowest free one, recorded in the registry and the
    /// machine index. Worktrees keep the ports of an earlier claim: said, with how to move.
    fn claim_block(
        &self,
        reg: &mut Registry,
        b: config::Block,
        machine: Option<&mut MachineView>,
        others: &Elsewhere,
    ) -> anyhow::Result<Claim> {
        let me = self.canonical_common_dir();
        let record = |m: Option<&mut MachineView>, c: &Claim| {
            if let Some(m) = m {
                m.changed |= m
                    .index
                    .set_block(&me, [*c.ports().start(), *c.ports().end()]);
            }
        };
        if let Some(c) = reg.claim().filter(|c| c.config() == b) {
            // An index rebuilt after damage learns the claim again here.
            record(machine, &c);
            return Ok(c);
        }
        let mut taken = Taken::new();
        others.add_to(&mut taken);
        let displays: Vec<(std::ops::RangeInclusive<u16>, PathBuf)> = match &machine {
            Some(m) => (m.index.claims_except(&me).into_iter())
                .map(|(r, p)| (r, names::display_path(p)))
                .collect(),
            None => Vec::new(),
        };
        let claims: Vec<(std::ops::RangeInclusive<u16>, &Path)> = (displays.iter())
            .map(|(r, p)| (r.clone(), p.as_path()))
            .collect();
        let start = allocate::choose_block(b, &claims, &taken)?;
        let claim = Claim {
            start,
            base: b.base,
            size: b.size,
            span: b.span,
        };
        if let Some(old) = reg.claim() {
            let kept: Vec<String> = reg
                .allocations()
                .map(|(k, p)| format!("{k} ({})", ports_inline(&p.to_map())))
                .collect();
            warn(&format!(
                "the block config changed ({} -> {}): new worktrees take slots of block {}-{}; {}",
                old.config().describe(),
                b.describe(),
                claim.ports().start(),
                claim.ports().end(),
                match kept.is_empty() {
                    true => "no worktree holds ports of the old block".to_string(),
                    false => format!(
                        "these keep their ports, which no longer follow the config, until you move them with `git worktree-ports release -w NAME && git worktree-ports allocate -w NAME`: {}",
                        kept.join("; ")
                    ),
                }
            ));
        }
        reg.set_claim(claim);
        record(machine, &claim);
        Ok(claim)
    }

    /// Registry entries whose worktree git no longer has, or reports prunable (directory
    /// gone, not locked), oldest allocation first, with why; never `except`.
    pub fn gone_worktrees(
        &self,
        reg: &Registry,
        except: &str,
    ) -> anyhow::Result<Vec<(String, &'static str)>> {
        let listed = self.worktrees()?;
        let mut gone: Vec<(String, String, &'static str)> = reg
            .keys()
            .into_iter()
            .filter(|k| *k != except)
            .filter_map(|k| {
                let why = match listed.iter().find(|w| w.key == k) {
                    None => "no longer a git worktree",
                    Some(w) if w.prunable => "directory deleted",
                    Some(_) => return None,
                };
                let at = reg.record(k).map(|r| r.allocated_at).unwrap_or_default();
                Some((at, k.to_string(), why))
            })
            .collect();
        gone.sort();
        Ok(gone.into_iter().map(|(_, k, why)| (k, why)).collect())
    }

    /// What worktree `key` holds as `reg` records it ([`Holding::recorded`]).
    pub fn holding(&self, reg: &Registry, key: &str) -> Holding {
        Holding::recorded(reg, key, &self.repo_name())
    }

    /// The repository's name, as templates see it.
    fn repo_name(&self) -> String {
        render::repo_name(self.repo.common_dir())
    }

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
            let other = Other::read(common);
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

    /// The post-checkout hook as it is: where, whether ours and current, who manages the
    /// directory. A hooks directory inside a work tree is the team's, tracked with the code:
    /// treated like a manager's, whichever worktree this runs in.
    pub fn hook_state(&self) -> anyhow::Result<crate::sys::hooks::State> {
        let dir = self.repo.hooks_dir()?;
        let mut state = crate::sys::hooks::inspect(&dir, self.repo.workdir());
        if state.manager.is_none() && !state.ours && self.inside_a_worktree(&dir) {
            state.manager = Some(crate::sys::hooks::Manager::WorkTree);
        }
        Ok(state)
    }

    fn inside_a_worktree(&self, dir: &Path) -> bool {
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

    /// After a worktree first got its ports (and its files were rendered): its
    /// `[on] allocate` command, outside every lock. A failure is said, and changes nothing.
    pub fn after_allocation(&self, target: &Target, held: &Holding) {
        if held.main_fresh
            && let Some(main) =
                (self.worktrees().unwrap_or_default().iter()).find(|w| w.is_main && w.path.is_dir())
            && let Ok(main) = self.target_of(main.clone())
            && let Some(cmd) = &main.config.on.allocate
            && let Ok(reg) = self.load_unlocked()
            && let Some(ports) = reg.ports(crate::sys::git::MAIN_KEY).map(Ports::to_map)
        {
            let main_held = Holding {
                ports,
                fresh: true,
                ..self.holding(&reg, crate::sys::git::MAIN_KEY)
            };
            self.run_on(Event::Allocate, cmd, &main, &main_held, &main.wt.path);
        }
        if !held.fresh {
            return;
        }
        if let Some(cmd) = &target.config.on.allocate {
            self.run_on(Event::Allocate, cmd, target, held, &target.wt.path);
        }
    }

    /// Before the ports of worktree `key` are given back (`remove`, `release`, `prune`): its
    /// `[on] release` command, outside every lock, in its directory, with the config there;
    /// for a worktree whose directory is gone, in and with the config of the current worktree
    /// (else the main one). A failure is said, and blocks nothing.
    pub fn before_release(&self, key: &str) {
        let Ok(reg) = self.load_unlocked() else {
            return;
        };
        if let Some(job) = self.release_job(&reg, key) {
            self.run_on(Event::Release, &job.cmd, &job.target, &job.held, &job.home);
        }
    }

    /// The `[on] release` command of worktree `key` as `reg` records it (its ports must
    /// still be there), or None when it has no ports or its config has no such command.
    fn release_job(&self, reg: &Registry, key: &str) -> Option<ReleaseJob> {
        let ports = reg
            .ports(key)
            .map(Ports::to_map)
            .filter(|p| !p.is_empty())?;
        let record = reg.record(key);
        let listed = self.worktrees().unwrap_or_default();
        let wt = listed.iter().find(|w| w.key == key).cloned().or_else(|| {
            let r = record.as_ref()?;
            Some(WorktreeInfo {
                key: key.to_string(),
                name: key.to_string(),
                path: PathBuf::from(&r.path),
                git_dir: self.repo.common_dir().join("worktrees").join(key),
                branch: r.branch.clone(),
                is_main: key == crate::sys::git::MAIN_KEY,
                locked: false,
                prunable: true,
                moved_from: None,
            })
        });
        let wt = wt?;
        // Where the command runs, and whose config names it.
        let home = match wt.path.is_dir() {
            true => Some(wt.path.clone()),
            false => (self.repo.current().ok().flatten().map(|w| w.path))
                .filter(|p| p.is_dir())
                .or_else(|| {
                    listed
                        .iter()
                        .find(|w| w.is_main && w.path.is_dir())
                        .map(|w| w.path.clone())
                }),
        };
        let home = home?;
        let config = crate::sys::config_file::load(&home).ok()?;
        let cmd = config.on.release.clone()?;
        let held = Holding {
            ports,
            ..self.holding(reg, key)
        };
        let target = Target {
            wt,
            config,
            id: None,
        };
        Some(ReleaseJob {
            cmd,
            target,
            held,
            home,
        })
    }

    fn run_on(&self, event: Event, cmd: &str, target: &Target, held: &Holding, dir: &Path) {
        let ctx = template_context(self, target, held);
        let mut vars = target.vars(&held.ports);
        vars.extend(slot_var(held.slot));
        if let Err(why) = lifecycle::run(event, cmd, &ctx, &vars, dir) {
            let consequence = match event {
                Event::Allocate => "the ports stay allocated",
                Event::Release => "the ports are given back all the same",
            };
            warn(&format!("worktree {}: {why}; {consequence}", target.wt.key));
        }
    }

    /// Every worktree of this repository a process may run in: git's (living or not), the
    /// registry's entries git no longer has, and the worktrees removed with their directory
    /// gone (`gone_worktrees`), for [`crate::model::attribution`].
    pub fn known_worktrees(&self, reg: &Registry) -> anyhow::Result<Vec<Known>> {
        let listed = self.worktrees()?;
        let mut out: Vec<Known> = listed
            .iter()
            .map(|w| Known {
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
    pub fn known_elsewhere(&self) -> Vec<Known> {
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
            let other = Other::read_whole(common);
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

    /// The machine index under its lock, with repositories whose common dir is gone dropped.
    fn machine_view(&self) -> anyhow::Result<MachineView> {
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
    fn other_registries(&self, index: &Index) -> Elsewhere {
        Elsewhere::read(index, Some(&self.canonical_common_dir()))
    }

    /// What rendering the target's templates with `ports` would write; writes nothing.
    pub fn plan_render(
        &self,
        target: &Target,
        held: &Holding,
        force: bool,
    ) -> anyhow::Result<Plan> {
        let wt = &target.wt;
        let tctx = template_context(self, target, held);
        render::plan(
            wt,
            &tctx,
            force,
            &|rels: &[PathBuf]| self.repo.tracked(wt, rels),
            &Workspace::peers,
        )
        .map_err(|e| {
            // `git worktree remove` takes no lock of ours: the directory may vanish mid-plan.
            if wt.path.is_dir() {
                return e;
            }
            Error::new(
                Code::WorktreeNotFound,
                format!(
                    "worktree {} ({}) was removed while rendering; nothing was written",
                    wt.key,
                    wt.path.display()
                ),
            )
            .into()
        })
    }

    /// Each file a render of the target would write, and how the file on disk compares; the
    /// one place that decides which files a worktree should have (`status`, `doctor`). The
    /// main worktree gets its ports with the first linked worktree's (main-first) but no files
    /// until it is itself allocated or rendered: until then its files are not expected, so
    /// never stale.
    pub fn file_states(
        &self,
        target: &Target,
        held: &Holding,
    ) -> anyhow::Result<Vec<(PathBuf, FileState)>> {
        let plan = self.plan_render(target, held, false)?;
        let expected = !target.wt.is_main || render::was_rendered(&target.wt);
        Ok(plan
            .files
            .into_iter()
            .map(|(path, action)| {
                let state = match action {
                    FileAction::Unchanged => FileState::UpToDate,
                    FileAction::SkippedTracked => FileState::Tracked,
                    FileAction::Written | FileAction::Removed if !expected => {
                        FileState::NotRendered
                    }
                    FileAction::Written | FileAction::Removed => FileState::Stale,
                };
                (path, state)
            })
            .collect())
    }

    /// Carry out a plan, keep its files out of `git status`, and print its warnings.
    ///
    /// A plan that writes takes the lock for its writes, so that they never interleave with a
    /// `remove` (which holds it while git deletes the worktree: a file written into a
    /// directory git is deleting made git fail with "Directory not empty") or with
    /// `render --all`. A plan with nothing to write takes no lock.
    pub fn apply_render(&self, plan: Plan) -> anyhow::Result<Rendered> {
        if plan.is_up_to_date() {
            return self.apply_render_with(plan, None);
        }
        let lock = self.lock()?;
        self.apply_render_with(plan, Some(&lock))
    }

    /// [`Workspace::apply_render`] for a caller that may hold the lock already (a second
    /// lock of the same file from this process would wait for itself).
    fn apply_render_with(&self, plan: Plan, held: Option<&Lock>) -> anyhow::Result<Rendered> {
        let rendered = render::apply(plan)?;
        rendered.warnings.iter().for_each(|w| warn(w));
        let wanted = render::exclude_patterns(&rendered.exclude);
        if !render::missing_excludes(self.repo.common_dir(), &wanted).is_empty() {
            // info/exclude is shared by every worktree: parallel renders must not lose lines.
            let _lock = match held {
                Some(_) => None,
                None => Some(self.lock()?),
            };
            render::add_excludes(self.repo.common_dir(), &wanted)?;
        }
        Ok(rendered)
    }

    /// Re-render every worktree that has ports, with the ports it has: decided and written
    /// under the lock, so a `release` or `remove` running meanwhile is seen, and never an
    /// allocation (a worktree released a moment ago gets nothing back; one whose directory is
    /// gone is skipped). Services the config has and the worktree does not are reported.
    pub fn render_all(&self, force: bool) -> anyhow::Result<Vec<(Target, Rendered)>> {
        let lock = self.lock()?;
        let reg = self.load_locked(&lock, None)?;
        let mut out = Vec::new();
        let worktrees = self.worktrees()?;
        let mut progress = crate::output::progress::Progress::new("render", worktrees.len());
        for (i, wt) in worktrees.iter().enumerate() {
            progress.step(i, &wt.key);
            if wt.prunable || !wt.path.is_dir() {
                continue;
            }
            let Some(ports) = reg.ports(&wt.key).map(Ports::to_map) else {
                continue;
            };
            // `git worktree remove` takes no lock of ours: a worktree may vanish while we render.
            // That one is skipped, the others are rendered.
            let vanished = |e: anyhow::Error, path: &Path| -> anyhow::Result<()> {
                if path.is_dir() {
                    return Err(e);
                }
                warn(&format!(
                    "skipped {}: it was removed while rendering",
                    path.display()
                ));
                Ok(())
            };
            let path = wt.path.clone();
            let target = match self.target_of(wt.clone()) {
                Ok(t) => t,
                Err(e) => {
                    vanished(e, &path)?;
                    continue;
                }
            };
            // An entry of another identity is a dead worktree's, not this one's to render.
            let owner = reg.record(&target.wt.key).and_then(|r| r.id);
            if owner.is_some() && owner != target.id {
                continue;
            }
            let missing: Vec<&str> = (target.config.services.iter())
                .filter(|s| !ports.contains_key(&s.name))
                .map(|s| s.name.as_str())
                .collect();
            if !missing.is_empty() {
                warn(&format!(
                    "worktree {} has no port for {} (the config gained services); run `git worktree-ports allocate` in it",
                    target.wt.key,
                    missing.join(", ")
                ));
            }
            let held = Holding {
                ports,
                ..self.holding(&reg, &target.wt.key)
            };
            let rendered = match self
                .plan_render(&target, &held, force)
                .and_then(|plan| self.apply_render_with(plan, Some(&lock)))
            {
                Ok(r) => r,
                Err(e) => {
                    vanished(e, &path)?;
                    continue;
                }
            };
            out.push((target, rendered));
        }
        Ok(out)
    }

    /// Plan, then apply.
    pub fn render(&self, target: &Target, held: &Holding, force: bool) -> anyhow::Result<Rendered> {
        let plan = self.plan_render(target, held, force)?;
        self.apply_render(plan)
    }
}

/// A path as the kernel reports a process's cwd: canonical where it exists (a missing one
/// through its parent).
/// `wt` as the worktree a command runs for, for [`crate::model::attribution::classify`]'s `this`.
pub fn known_this(wt: &WorktreeInfo) -> Known {
    Known {
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
fn recorded_worktrees(
    reg: &Registry,
    repository: Option<&Path>,
    skip: &dyn Fn(&str) -> bool,
) -> Vec<Known> {
    let mut out = Vec::new();
    for key in reg.keys() {
        if skip(key) {
            continue;
        }
        if let Some(r) = reg.record(key) {
            let path = PathBuf::from(&r.path);
            out.push(Known {
                exists: path.is_dir(),
                path: canonical(&path),
                repository: repository.map(Path::to_path_buf),
                name: key.to_string(),
            });
        }
    }
    for g in reg.gone_worktrees() {
        let path = PathBuf::from(&g.path);
        out.push(Known {
            exists: false,
            path: canonical(&path),
            repository: repository.map(Path::to_path_buf),
            name: g.key,
        });
    }
    out
}

/// What a lock-free read already holds for the target when allocating would change nothing:
/// no lock, no write. None when the read needed recovery, a save is unfinished, or anything
/// (a service, a pin, the worktree's record, the ranges) is missing or different.
fn held(loaded: &Loaded, target: &Target, wants: &BTreeMap<String, Want>) -> Option<Holding> {
    let reg = &loaded.registry;
    let ports = reg.ports(&target.wt.key)?;
    let config = &target.config;
    let services_ok =
        config
            .services
            .iter()
            .all(|s| match (ports.get(&s.name), wants.get(&s.name)) {
                (None, _) => false,
                (Some(p), Some(Want::Pin(pin))) => u32::from(p) == *pin,
                (Some(_), Some(Want::Move)) => false,
                (Some(_), _) => true,
            });
    // Unknown services in --port must reach the allocator to be reported; services the
    // config dropped must be released.
    let wants_ok = wants.keys().all(|k| config.service(k).is_some())
        && ports.iter().all(|(s, _)| config.service(s).is_some());
    let id_ok = target.id.is_some();
    (loaded.is_clean()
        && services_ok
        && wants_ok
        && id_ok
        && metadata_is_current(reg, target, target.id.as_deref().unwrap_or_default(), None))
    .then(|| {
        let record = reg.record(&target.wt.key)?;
        Some(Holding {
            ports: ports.to_map(),
            compose_project_name: record.compose_project_name?,
            slot: record.slot,
            fresh: false,
            hostname: record.hostname,
            main_fresh: false,
        })
    })
    .flatten()
}

/// A port kept outside its service's range after the config changed the range: kept, as a
/// running server may use it, and reported (once: by the allocation that notices the change,
/// before `port_ranges` records the new range) with the way to move it. A pin outside the
/// range, with the range unchanged, is the user's choice and not reported.
fn warn_outside_changed_ranges(reg: &Registry, target: &Target, ports: &BTreeMap<String, u16>) {
    for s in &target.config.services {
        let Some(&port) = ports.get(&s.name) else {
            continue;
        };
        let changed = reg
            .port_range(&s.name)
            .is_some_and(|old| old != [s.range.0, s.range.1]);
        if changed && !(s.range.0..=s.range.1).contains(&port) {
            warn(&format!(
                "{}: port {port} of worktree {} is outside its configured range {}-{} ({}); to move it: `git worktree-ports release --service {} && git worktree-ports allocate`",
                s.name,
                target.wt.key,
                s.range.0,
                s.range.1,
                target.config.location(),
                s.name
            ));
        }
    }
}

/// Ports outside the repository's block (kept from an earlier block config, or pinned):
/// kept, and said with the way to move them.
fn warn_off_block(target: &Target, ports: &BTreeMap<String, u16>, claim: Claim) {
    let outside: Vec<String> = (target.config.services.iter())
        .filter_map(|s| Some((s, *ports.get(&s.name)?)))
        .filter(|(_, p)| !claim.ports().contains(p))
        .map(|(s, p)| format!("{} {p}", s.name))
        .collect();
    if !outside.is_empty() {
        warn(&format!(
            "worktree {} keeps {}, outside the repository's block {}-{} ({}): they no longer follow the config; to move them: `git worktree-ports release -w {} && git worktree-ports allocate -w {}`",
            target.wt.key,
            outside.join(", "),
            claim.ports().start(),
            claim.ports().end(),
            claim.config().describe(),
            target.wt.key,
            target.wt.key
        ));
    }
}

/// The worktree's hostname: `<repo label>.localhost` for the main worktree, else
/// `<label>.<repo label>.localhost` with the label from the config's `hostname` template (a
/// collision refused, naming the holder) or the worktree's name (made unique with a suffix).
fn worktree_hostname(
    reg: &Registry,
    target: &Target,
    slot: u32,
    repo: &str,
) -> anyhow::Result<String> {
    let host_label = reg.host_label().unwrap_or_else(|| names::dns_label(repo));
    let wt = &target.wt;
    if wt.is_main {
        return Ok(names::hostname(&host_label, None));
    }
    let others = reg.hostnames_except(&wt.key);
    let host_of = |label: &str| names::hostname(&host_label, Some(label));
    let Some(template) = &target.config.hostname else {
        let label = names::unique_label(&names::dns_label(&wt.key), &|l| {
            others.iter().any(|(h, _)| *h == host_of(l))
        });
        return Ok(host_of(&label));
    };
    let mut tera = tera::Tera::default();
    let mut context = tera::Context::new();
    context.insert(
        "worktree",
        &json!({"name": wt.key, "branch": wt.branch.clone().unwrap_or_default()}),
    );
    context.insert("slot", &slot);
    context.insert("repo", &json!({"name": repo}));
    let label = tera
        .add_raw_template("hostname", template)
        .and_then(|_| tera.render("hostname", &context))
        .map_err(|e| {
            Error::new(
                Code::ConfigInvalid,
                format!(
                    "{}: hostname could not be rendered: {e}",
                    target.config.location()
                ),
            )
        })?;
    let host = host_of(&names::dns_label(&label));
    if let Some((_, holder)) = others.iter().find(|(h, _)| *h == host) {
        return Err(Error::new(
            Code::HostnameTaken,
            format!(
                "hostname {host} (from the config's hostname template) is worktree {holder}'s already; hostnames are never shared: change the template in {} so that it gives each worktree its own (such as one using {{{{ slot }}}})",
                target.config.location()
            ),
        )
        .with_details(json!({"hostname": host, "holder": holder}))
        .into());
    }
    Ok(host)
}

fn record_for(
    reg: &Registry,
    target: &Target,
    id: &str,
    repo: &str,
    slot: Option<u32>,
) -> anyhow::Result<WorktreeRecord> {
    let wt = &target.wt;
    let path = wt.path.to_string_lossy().into_owned();
    let record = reg.record(&wt.key);
    let compose = record
        .as_ref()
        .and_then(|r| r.compose_project_name.clone())
        .unwrap_or_else(|| unique_compose_name(reg, &wt.key, repo));
    let slot = slot
        .or_else(|| record.as_ref().and_then(|r| r.slot))
        .unwrap_or_else(|| free_slot(reg, target));
    let hostname = match record.as_ref().and_then(|r| r.hostname.clone()) {
        Some(h) => h,
        None => worktree_hostname(reg, target, slot, repo)?,
    };
    // Keep allocated_at and any keys a newer version added.
    Ok(match record {
        Some(r) => WorktreeRecord {
            path,
            branch: wt.branch.clone(),
            id: Some(id.to_string()),
            compose_project_name: Some(compose),
            slot: Some(slot),
            hostname: Some(hostname),
            ..r
        },
        None => WorktreeRecord {
            path,
            branch: wt.branch.clone(),
            allocated_at: now_rfc3339(),
            id: Some(id.to_string()),
            compose_project_name: Some(compose),
            slot: Some(slot),
            hostname: Some(hostname),
            extra: Default::default(),
        },
    })
}

/// The main worktree's slot is 0; any other takes the lowest free one from 1 (0 stays the
/// main worktree's, also in a bare repository).
fn free_slot(reg: &Registry, target: &Target) -> u32 {
    if target.wt.is_main {
        return 0;
    }
    let used = reg.slots_except(&target.wt.key);
    (1..).find(|s| !used.contains(s)).expect("a free slot")
}

/// `<repo>-<worktree>` as compose accepts it, unless another worktree of the repository has
/// that name already (`feat.x`, `Feat-X` and `feat--x` all give `repo-feat-x`): then the
/// first free `-2`, `-3`... A record written before names were kept counts with the name it
/// was rendered with, which is this formula, so existing stacks keep their names.
fn unique_compose_name(reg: &Registry, key: &str, repo: &str) -> String {
    let base = render::compose_project_name(repo, key);
    let legacy_is = |k: &str, name: &str| render::compose_project_name_is(repo, k, name);
    if !reg.compose_name_used(key, &base, &legacy_is) {
        return base;
    }
    // Rare: collect every name once, then find a free suffix.
    let used = reg.compose_names_except(key, &|k| render::compose_project_name(repo, k));
    (2..)
        .map(|n| format!("{base}-{n}"))
        .find(|name| !used.contains(name))
        .expect("a free suffix")
}

fn metadata_is_current(reg: &Registry, target: &Target, id: &str, slot: Option<u32>) -> bool {
    let wt = &target.wt;
    let record_ok = reg.record(&wt.key).is_some_and(|r| {
        r.path == wt.path.to_string_lossy()
            && r.branch == wt.branch
            && r.id.as_deref() == Some(id)
            && r.compose_project_name.is_some()
            && r.slot.is_some()
            && r.hostname.is_some()
            && (slot.is_none() || r.slot == slot)
    });
    let claim_ok = match target.config.strategy {
        Strategy::Block(b) => reg.claim().is_some_and(|c| c.config() == b),
        Strategy::Ranges => true,
    };
    record_ok
        && claim_ok
        && target
            .config
            .services
            .iter()
            .all(|s| reg.port_range(&s.name) == Some([s.range.0, s.range.1]))
}

/// Refresh the worktree record and `port_ranges`; true when something changed.
fn update_metadata(
    reg: &mut Registry,
    target: &Target,
    id: &str,
    repo: &str,
    slot: Option<u32>,
) -> anyhow::Result<bool> {
    if metadata_is_current(reg, target, id, slot) {
        return Ok(false);
    }
    let record = record_for(reg, target, id, repo, slot)?;
    reg.set_record(&target.wt.key, &record);
    for s in &target.config.services {
        reg.set_port_range(&s.name, [s.range.0, s.range.1]);
    }
    Ok(true)
}

/// What to say about a worktree moved without git knowing.
pub fn moved_warning(wt: &WorktreeInfo, old: &Path) -> String {
    format!(
        "worktree {} was moved from {} to {} without git knowing; run `git worktree repair` in it (until then `git worktree prune` would unregister it, and `git worktree-ports prune` run elsewhere would give its ports away)",
        wt.key,
        old.display(),
        wt.path.display()
    )
}

/// The worktrees git lists, with the current one as it really is: a worktree moved with `mv`
/// is listed at its old path and as prunable, but we stand in it.
pub fn worktrees_seen_from_here(repo: &Repo) -> anyhow::Result<Vec<WorktreeInfo>> {
    let mut list = repo.worktrees()?;
    if let Ok(Some(here)) = repo.current()
        && here.moved_from.is_some()
        && let Some(w) = list.iter_mut().find(|w| w.key == here.key)
    {
        *w = here;
    }
    Ok(list)
}

/// WORKTREE_NOT_FOUND for a worktree git lists whose directory is gone.
fn missing_dir(wt: &WorktreeInfo) -> anyhow::Error {
    Error::new(
        Code::WorktreeNotFound,
        format!(
            "worktree {} has no directory any more ({}); nothing was changed. If it was deleted, run `git worktree prune`, then `git worktree-ports prune` to give its ports back; if it was moved, run `git worktree repair <new path>`",
            wt.key,
            wt.path.display()
        ),
    )
    .with_details(json!({"worktree": wt.key, "path": wt.path.to_string_lossy()}))
    .into()
}

/// Resolve `spec` among git's worktrees: registry key first, then a path (the innermost
/// worktree containing it, comparing canonical paths), then git's own name.
pub fn find_worktree<'a>(spec: &str, worktrees: &'a [WorktreeInfo]) -> Option<&'a WorktreeInfo> {
    if let Some(w) = worktrees.iter().find(|w| w.key == spec) {
        return Some(w);
    }
    if let Ok(target) = Path::new(spec).canonicalize() {
        let best = worktrees
            .iter()
            .filter_map(|w| {
                let p = w.path.canonicalize().ok()?;
                target
                    .starts_with(&p)
                    .then_some((p.components().count(), w))
            })
            .max_by_key(|(depth, _)| *depth);
        if let Some((_, w)) = best {
            return Some(w);
        }
    }
    worktrees.iter().find(|w| w.name == spec)
}

/// Absolute form of a path argument, without requiring it to exist.
pub fn absolute(spec: &str) -> PathBuf {
    let p = Path::new(spec);
    let abs = std::env::current_dir()
        .map(|d| d.join(p))
        .unwrap_or_else(|_| p.to_path_buf());
    abs.canonicalize().unwrap_or(abs)
}

/// WORKTREE_NOT_FOUND listing what exists.
pub fn not_found(spec: &str, worktrees: &[WorktreeInfo]) -> anyhow::Error {
    let names: Vec<&str> = worktrees.iter().map(|w| w.key.as_str()).collect();
    Error::new(
        Code::WorktreeNotFound,
        format!(
            "no worktree named or containing {spec:?}; worktrees: {} (name one by its name or path)",
            if names.is_empty() { "none".to_string() } else { names.join(", ") }
        ),
    )
    .with_details(json!({"worktree": spec, "worktrees": names}))
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wt(key: &str, name: &str, path: &Path) -> WorktreeInfo {
        WorktreeInfo {
            key: key.into(),
            name: name.into(),
            path: path.to_path_buf(),
            git_dir: path.join(".git"),
            branch: None,
            is_main: key == "main",
            locked: false,
            prunable: false,
            moved_from: None,
        }
    }

    #[test]
    fn finds_by_key_path_innermost_and_git_name() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("repo");
        let nested = main.join("trees/feature");
        std::fs::create_dir_all(nested.join("src")).unwrap();
        let list = vec![
            wt("main", "main", &main),
            wt("feature", "feature", &nested),
            wt("worktrees/main", "main", &dir.path().join("other")),
        ];
        assert_eq!(find_worktree("main", &list).unwrap().key, "main");
        assert_eq!(find_worktree("feature", &list).unwrap().key, "feature");
        let deep = nested.join("src");
        assert_eq!(
            find_worktree(deep.to_str().unwrap(), &list).unwrap().key,
            "feature"
        );
        assert_eq!(
            find_worktree(main.to_str().unwrap(), &list).unwrap().key,
            "main"
        );
        assert_eq!(
            find_worktree("worktrees/main", &list).unwrap().path,
            dir.path().join("other")
        );
        assert!(find_worktree("nope", &list).is_none());
    }
}
