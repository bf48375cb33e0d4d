//! The machine index: every repository that allocates on this machine (for this user), so that
//! every allocation can treat every other repository's ports as taken. Each repository's own
//! `ports.json` stays the source of truth for its worktrees; the index only lists repositories.
//!
//! Files, in the state dir (`GIT_WORKTREE_PORTS_STATE_DIR`, else
//! `$XDG_STATE_HOME/git-worktree-ports`, else `~/.local/state/git-worktree-ports`):
//! - `index.json` (+ `index.json.bak`): `{"version": 1, "repositories": {"<common dir>":
//!   {"name": "<display name>", "added_at": "<RFC 3339>", "id": "<repository_id>", "ports":
//!   [[8080, 8083]], "seen": {"ino", "len", "mtime": [s, ns]}, "block": [30000, 30099],
//!   "host": "<label>"}}}` (`seen`: the stamp of the registry file `ports` came from; the block only for a
//!   block-strategy repository), `"displaced": [{"path", ...entry}]` (repositories whose path
//!   another took) and `"leases": {"<id>": {"ports", "pid", "pid_start", "expires_at",
//!   "created_at", "command"}}`. A change to what it lists writes the backup, then the
//!   index (temp file, fsync, rename, the directory fsynced); a change to kept ports alone
//!   writes the index without fsync ([`Machine::save_ports`] says why that is safe). An
//!   older version reads it (unknown keys are ignored) and drops the new keys when it
//!   writes; they are learned again at the next allocation;
//! - `machine.lock`: locked by every operation that may take a new port, before the
//!   repository's lock; never renamed or deleted.
//!
//! Reads and writes only those files; never prints (warnings are returned).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::model::clock::now_rfc3339;
use crate::model::error::{Code, Error};
use crate::model::names;
use crate::model::portset::PortSet;
use crate::sys::fault;
use crate::sys::fsio::{self, Durability, Mode, Stamp, WriteOptions};
use crate::sys::lock::{self, FileLock};

/// Overrides where the index lives (a dev container or a second login can share one).
pub const STATE_DIR_ENV: &str = "GIT_WORKTREE_PORTS_STATE_DIR";

/// The index format version this build writes.
pub const VERSION: u64 = 1;

/// One listed repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Display name, unique in the index (`app`, `app-2` for a second repository named `app`).
    pub name: String,
    /// When it was listed.
    pub added_at: String,
    /// The block it claimed (block strategy): first and last port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block: Option<[u16; 2]>,
    /// Its label in hostnames (`app` in `feature.app.localhost`), unique on the machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Its identity token (the registry's `repository_id`): the same repository after a
    /// `mv`, and not the same one when another is made at its path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The ports its registry held when an allocation under the machine lock last read it, as
    /// runs `[first, last]`: what stays taken while the repository is gone (moved, deleted),
    /// until `prune --all` or a full range takes them back. A release (which does not take
    /// the machine lock) may leave ports here: only ever more than it holds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<[u16; 2]>,
    /// The [`Stamp`] of the registry file `ports` was taken from (or is about to be written
    /// as): while `ports.json` still has it, `ports` holds every port the registry does, and
    /// an allocation elsewhere takes them from here after one stat instead of reading the
    /// registry (a 10,000-worktree one is 2.4 MB). Any other save of the registry (a release,
    /// which does not take the machine lock; a hand edit; an older version) changes the stamp,
    /// and the registry is read again. An older version drops it when it writes the index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen: Option<Stamp>,
}

impl Entry {
    /// Every port of [`Entry::ports`].
    pub fn held(&self) -> impl Iterator<Item = u16> + '_ {
        self.ports.iter().flat_map(|[lo, hi]| *lo..=*hi)
    }

    /// Keep `ports` (any order) as runs, read from the registry file with `seen` (None: not
    /// known); true when that changed.
    pub fn set_held(&mut self, ports: impl IntoIterator<Item = u16>, seen: Option<Stamp>) -> bool {
        self.set_held_runs(runs(ports), seen)
    }

    /// [`Entry::set_held`] of ports already as sorted runs ([`PortSet::runs`]).
    pub fn set_held_runs(&mut self, runs: Vec<[u16; 2]>, seen: Option<Stamp>) -> bool {
        if runs == self.ports && seen == self.seen {
            return false;
        }
        self.ports = runs;
        self.seen = seen;
        true
    }

    /// The ports its registry file at `file` holds, if it is still the file [`Entry::ports`]
    /// were taken from (one stat).
    pub fn held_if_unchanged(&self, file: &Path) -> Option<&[[u16; 2]]> {
        self.seen?.still(file).then_some(self.ports.as_slice())
    }
}

/// `ports` as sorted runs of consecutive ports: `[[8080, 8083], [5432, 5432]]` sorted. Through
/// a bitmap of every port (8 KB), not a sort: 50,000 ports (10,000 worktrees) take
/// microseconds.
pub fn runs(ports: impl IntoIterator<Item = u16>) -> Vec<[u16; 2]> {
    ports.into_iter().collect::<PortSet>().runs()
}

/// A repository whose path another repository took (a new clone where a moved or deleted one
/// was): kept, with its ports, until it lists itself again from where it is now or
/// `prune --all` drops it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Displaced {
    /// The common dir it had.
    pub path: PathBuf,
    /// Its entry as it was.
    #[serde(flatten)]
    pub entry: Entry,
}

/// What [`Index::register`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listed {
    /// Listed already, here.
    Already,
    /// Listed here before identities were kept: its identity is now known.
    Learned,
    /// Not listed before (a new repository, or one an index that was wiped did not know).
    New,
    /// Listed at another path, where it is no longer: it moved; its entry (name, ports,
    /// block) follows it.
    Moved {
        /// Its common dir before.
        from: PathBuf,
    },
    /// Listed at another path, where a repository with the same identity still is: a copy
    /// (`cp -r`). Nothing was changed: the copy needs an identity of its own first.
    Copy {
        /// The original's common dir.
        of: PathBuf,
    },
}

/// Ports lent for a while to a process (`lease`), outside any worktree: parallel test runs,
/// temporary services.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The ports, lowest first.
    pub ports: Vec<u16>,
    /// The process holding them (`lease -- COMMAND` itself): when it is gone, so is the lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// When that process started (`/proc/<pid>/stat` field 22), so a reused pid is not taken
    /// for the holder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_start: Option<u64>,
    /// Seconds since the epoch after which the ports go back; None: while the holder lives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    /// When it was made (RFC 3339).
    pub created_at: String,
    /// What it was made for (the command, when there is one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
}

/// The index document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    /// Format version.
    pub version: u64,
    /// Canonical common dir -> entry.
    pub repositories: BTreeMap<PathBuf, Entry>,
    /// Repositories whose path another one took, with their ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub displaced: Vec<Displaced>,
    /// Lease id -> lease.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub leases: BTreeMap<String, Lease>,
}

impl Default for Index {
    fn default() -> Self {
        Index {
            version: VERSION,
            repositories: BTreeMap::new(),
            displaced: Vec::new(),
            leases: BTreeMap::new(),
        }
    }
}

impl Index {
    /// The entry of the repository whose common dir is `common_dir`.
    pub fn get(&self, common_dir: &Path) -> Option<&Entry> {
        self.repositories.get(common_dir)
    }

    /// List the repository whose common dir is `common_dir` and whose identity is `id`, by
    /// identity: a repository listed at another path where it no longer is (`id_at` reads the
    /// identity of the repository at a path: None when there is none) moved, and its entry
    /// follows it; one listed where a repository with the same identity still is, is a copy
    /// (nothing changes: it needs an identity of its own). An entry at `common_dir` with
    /// another identity belongs to a repository that was there before: kept as displaced. A
    /// new entry's display name is [`Index::unique_name`].
    pub fn register(
        &mut self,
        common_dir: &Path,
        name: &str,
        id: &str,
        id_at: &dyn Fn(&Path) -> Option<String>,
    ) -> Listed {
        if let Some(e) = self.repositories.get_mut(common_dir) {
            match e.id.as_deref() {
                Some(known) if known == id => return Listed::Already,
                // Listed before identities were kept: this is the repository it knew.
                None => {
                    e.id = Some(id.to_string());
                    return Listed::Learned;
                }
                Some(_) => {
                    let entry = self.repositories.remove(common_dir).expect("just seen");
                    self.displaced.push(Displaced {
                        path: common_dir.to_path_buf(),
                        entry,
                    });
                }
            }
        }
        let elsewhere = (self.repositories.iter())
            .find(|(_, e)| e.id.as_deref() == Some(id))
            .map(|(p, _)| p.clone());
        if let Some(from) = elsewhere {
            if id_at(&from).as_deref() == Some(id) {
                return Listed::Copy { of: from };
            }
            let entry = self.repositories.remove(&from).expect("just found");
            self.repositories.insert(common_dir.to_path_buf(), entry);
            return Listed::Moved { from };
        }
        if let Some(i) = (self.displaced.iter()).position(|d| d.entry.id.as_deref() == Some(id)) {
            let d = self.displaced.remove(i);
            self.repositories.insert(common_dir.to_path_buf(), d.entry);
            return Listed::Moved { from: d.path };
        }
        let unique = self.unique_name(common_dir, name);
        self.repositories.insert(
            common_dir.to_path_buf(),
            Entry {
                name: unique,
                added_at: now_rfc3339(),
                block: None,
                host: None,
                id: Some(id.to_string()),
                ports: Vec::new(),
                seen: None,
            },
        );
        Listed::New
    }

    /// A display name for the repository at `common_dir` that no other entry (listed, gone or
    /// displaced: a name is not reused before `prune --all`) has, and that is no trailing
    /// part of another one's path (so never another repository's directory name): `name`,
    /// else its parent directories before it (`y/app`, `src/y/app`...), which no directory
    /// name can be. `--repo` and `port(repo=...)` find a repository by such trailing paths.
    pub fn unique_name(&self, common_dir: &Path, name: &str) -> String {
        let shown = names::display_path(common_dir);
        let taken = |n: &str| {
            (self.entries()).any(|(p, e, _)| e.name == n || names::display_path(p).ends_with(n))
        };
        let parents: Vec<String> = (shown.parent().into_iter())
            .flat_map(|p| p.components())
            .filter_map(|c| match c {
                std::path::Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
                _ => None,
            })
            .collect();
        let mut candidate = name.to_string();
        for parent in parents.iter().rev() {
            if !taken(&candidate) {
                return candidate;
            }
            candidate = format!("{parent}/{candidate}");
        }
        // Every trailing path is taken (the same path listed twice cannot be): the whole path.
        if taken(&candidate) {
            candidate = shown.display().to_string();
        }
        candidate
    }

    /// Record the block `common_dir` claimed; true when the index changed.
    pub fn set_block(&mut self, common_dir: &Path, block: [u16; 2]) -> bool {
        match self.repositories.get_mut(common_dir) {
            Some(e) if e.block != Some(block) => {
                e.block = Some(block);
                true
            }
            _ => false,
        }
    }

    /// The blocks claimed by every repository but `except` (gone and displaced ones too: a
    /// block stays claimed until `prune --all`).
    pub fn claims_except(&self, except: &Path) -> Vec<(std::ops::RangeInclusive<u16>, &Path)> {
        self.entries()
            .filter(|(p, _, _)| *p != except)
            .filter_map(|(p, e, _)| {
                let [lo, hi] = e.block?;
                Some((lo..=hi, p))
            })
            .collect()
    }

    /// Every entry, listed then displaced, with the common dir it names and whether it is
    /// displaced (another repository took that path).
    pub fn entries(&self) -> impl Iterator<Item = (&Path, &Entry, bool)> {
        (self.repositories.iter())
            .map(|(p, e)| (p.as_path(), e, false))
            .chain(
                self.displaced
                    .iter()
                    .map(|d| (d.path.as_path(), &d.entry, true)),
            )
    }

    /// The entries of repositories that are gone: listed where their common dir no longer
    /// is (moved or deleted), or displaced (`true`). What [`Index::drop_gone`] drops.
    pub fn gone(&self) -> impl Iterator<Item = (&Path, &Entry, bool)> {
        self.entries()
            .filter(|(p, _, displaced)| *displaced || !p.is_dir())
    }

    /// Drop leases whose TTL passed (`now`: seconds since the epoch) or whose holder process is
    /// gone (`alive(pid, start)`); returns them.
    pub fn reclaim_leases(
        &mut self,
        now: u64,
        alive: &dyn Fn(u32, Option<u64>) -> bool,
    ) -> Vec<(String, Lease)> {
        let dead: Vec<String> = (self.leases.iter())
            .filter(|(_, l)| {
                l.expires_at.is_some_and(|t| t <= now)
                    || l.pid.is_some_and(|pid| !alive(pid, l.pid_start))
            })
            .map(|(id, _)| id.clone())
            .collect();
        dead.into_iter()
            .filter_map(|id| self.leases.remove(&id).map(|l| (id, l)))
            .collect()
    }

    /// Every leased port with its lease id.
    pub fn leased_ports(&self) -> Vec<(u16, &str)> {
        (self.leases.iter())
            .flat_map(|(id, l)| l.ports.iter().map(move |p| (*p, id.as_str())))
            .collect()
    }

    /// Drop every [`Index::gone`] entry, and with it the ports it kept (`prune --all`; a full
    /// range drops one at a time, [`Index::drop_entry`]); returns them.
    pub fn drop_gone(&mut self) -> Vec<(PathBuf, Entry)> {
        let gone: Vec<PathBuf> = (self.gone())
            .filter(|(_, _, displaced)| !displaced)
            .map(|(p, _, _)| p.to_path_buf())
            .collect();
        let mut out: Vec<(PathBuf, Entry)> = gone
            .into_iter()
            .filter_map(|p| self.repositories.remove(&p).map(|e| (p, e)))
            .collect();
        out.extend(self.displaced.drain(..).map(|d| (d.path, d.entry)));
        out
    }

    /// Drop one gone or displaced entry (`path` as [`Index::entries`] names it, `id` its
    /// identity); true when it was there.
    pub fn drop_entry(&mut self, path: &Path, id: Option<&str>) -> bool {
        if let Some(i) =
            (self.displaced.iter()).position(|d| d.path == path && d.entry.id.as_deref() == id)
        {
            self.displaced.remove(i);
            return true;
        }
        self.repositories.remove(path).is_some()
    }
}

/// The state dir's files.
#[derive(Debug, Clone)]
pub struct Machine {
    /// The state dir.
    pub dir: PathBuf,
    /// `index.json`.
    pub file: PathBuf,
    /// `index.json.bak`.
    pub backup: PathBuf,
    /// `machine.lock`.
    pub lock: PathBuf,
}

impl Machine {
    /// The state dir from the environment; an error when none can be found (no HOME).
    pub fn from_env() -> anyhow::Result<Machine> {
        let dir = match std::env::var_os(STATE_DIR_ENV).filter(|v| !v.is_empty()) {
            // Resolved from each command's directory, a relative value (a `~/...` that systemd
            // or compose did not expand) would give every repository a "machine" of its own.
            Some(d) if !Path::new(&d).is_absolute() => {
                return Err(Error::new(
                    Code::ConfigInvalid,
                    format!(
                        "{STATE_DIR_ENV}={} is a relative path; set it to an absolute one (a `~` is expanded by a shell, not by systemd or compose); nothing was changed",
                        Path::new(&d).display()
                    ),
                )
                .into());
            }
            Some(d) => PathBuf::from(d),
            None => match std::env::var_os("XDG_STATE_HOME")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
            {
                Some(state) => state.join("git-worktree-ports"),
                None => match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
                    Some(home) => PathBuf::from(home).join(".local/state/git-worktree-ports"),
                    None => {
                        return Err(Error::new(
                            Code::IoError,
                            format!(
                                "no state directory for the machine index: set HOME, XDG_STATE_HOME or {STATE_DIR_ENV}"
                            ),
                        )
                        .into());
                    }
                },
            },
        };
        // A state dir that is a file (or anything but a folder) holds no index: saying
        // "nothing allocated" there would be a lie, and every allocation would fail later.
        if let Ok(meta) = std::fs::metadata(&dir)
            && !meta.is_dir()
        {
            return Err(Error::new(
                Code::ConfigInvalid,
                format!(
                    "the state dir {} is not a directory; point {STATE_DIR_ENV} (or XDG_STATE_HOME) at a directory, or move that file away",
                    dir.display()
                ),
            )
            .into());
        }
        Ok(Machine::at(&dir))
    }

    /// The index in `dir`.
    pub fn at(dir: &Path) -> Machine {
        Machine {
            file: dir.join("index.json"),
            backup: dir.join("index.json.bak"),
            lock: dir.join("machine.lock"),
            dir: dir.to_path_buf(),
        }
    }

    /// `proxy.json`: the proxy's settings on this machine.
    pub fn proxy_file(&self) -> PathBuf {
        self.dir.join("proxy.json")
    }

    /// The proxy's port, once the proxy was set up (`proxy.json` exists).
    pub fn proxy_port(&self) -> Option<u16> {
        let bytes = fsio::read_regular(&self.proxy_file()).ok()??;
        let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        u16::try_from(v.get("port")?.as_u64()?).ok()
    }

    /// Take the machine lock (always before a repository's lock).
    pub fn lock(&self, timeout: Duration, on_wait: &dyn Fn(&Path)) -> anyhow::Result<FileLock> {
        // Made private: the index lists the user's repositories and lease command lines.
        fsio::create_private_dir(&self.dir)
            .map_err(anyhow::Error::from)
            .and_then(|()| lock::acquire(&self.lock, timeout, on_wait))
            .with_context(|| {
            format!(
                "could not use the machine index in {} (set {STATE_DIR_ENV} to a writable directory)",
                self.dir.display()
            )
        })
    }

    /// Read the index without the lock (a rename gives a whole file). A damaged or missing
    /// file is read from its backup (a recovery that stopped between keeping a damaged index
    /// aside and writing its replacement leaves it missing: its backup still lists every
    /// repository); both damaged give what could be read, with warnings.
    pub fn read(&self) -> (Index, Vec<String>) {
        match parse_file(&self.file) {
            Ok(Some(index)) => (index, Vec::new()),
            Ok(None) => match parse_file(&self.backup) {
                Ok(Some(index)) => (
                    index,
                    vec![format!(
                        "{} is missing; using its backup {}",
                        self.file.display(),
                        self.backup.display()
                    )],
                ),
                _ => (Index::default(), Vec::new()),
            },
            Err(problem) => match parse_file(&self.backup) {
                Ok(Some(index)) => (
                    index,
                    vec![format!(
                        "{} is unusable ({problem}); using its backup {}",
                        self.file.display(),
                        self.backup.display()
                    )],
                ),
                _ => (
                    Index::default(),
                    vec![format!(
                        "{} and its backup are unusable ({problem}); the repositories it listed are not seen until they allocate again (run `git worktree-ports allocate` in them)",
                        self.file.display()
                    )],
                ),
            },
        }
    }

    /// Read the index under the machine lock, recovering a damaged or missing one: a damaged
    /// file is copied aside as `index.json.corrupt-<time>`, then replaced (atomically) by its
    /// backup (or, with no usable backup, by an empty index that the repositories refill as
    /// they allocate: said loudly). The damaged file stays where it is until its replacement
    /// is in place: a failure or a crash at any step leaves the damaged file and the backup,
    /// from which the next command recovers again; never a missing index beside an unread
    /// backup.
    pub fn load(&self, _lock: &FileLock) -> anyhow::Result<(Index, Vec<String>)> {
        let (index, warnings) = self.read();
        if !warnings.is_empty() {
            if std::fs::symlink_metadata(&self.file).is_ok() {
                let aside = format!(
                    "{}.corrupt-{}",
                    self.file.display(),
                    now_rfc3339().replace(':', "")
                );
                fault::io_point("index-aside")
                    .and_then(|()| std::fs::copy(&self.file, &aside).map(drop))
                    .with_context(|| format!("could not keep {} aside", self.file.display()))?;
                fault::point("index.kept-aside");
            }
            self.save(&index)?;
        }
        Ok((index, warnings))
    }

    /// Write the index after a change to what it lists (repositories, blocks, leases): the
    /// backup first, then the index, both fsynced, and their directory once after both.
    /// The backup is what a damaged index is read from, and [`Machine::save_ports`] never
    /// writes it: it always lists what the last `save` committed. Written first so that a
    /// failure (a full disk) leaves the committed index as it was.
    pub fn save(&self, index: &Index) -> anyhow::Result<()> {
        let (bytes, bits) = self.encode(index);
        fsio::write_atomic(
            &self.backup,
            &bytes,
            WriteOptions {
                durability: Durability::File,
                mode: Mode::Fixed(bits),
                label: "index-backup",
            },
        )?;
        fsio::write_atomic(
            &self.file,
            &bytes,
            WriteOptions {
                durability: Durability::Full,
                mode: Mode::Fixed(bits),
                label: "index",
            },
        )
    }

    /// [`Machine::save`] when only the repositories' kept ports (and the stamps they were read
    /// with) changed, as on every fresh allocation: no fsync and no backup. What a crash can
    /// do to this write: bring back the previous file (its stamps name files that are gone:
    /// those registries are read again), or leave it damaged (it is read from the backup,
    /// which lists every repository [`Machine::save`] listed, with stamps as old or older:
    /// read again too). Only a repository that is also gone before anything reads it again
    /// keeps older ports than it holds, which its next allocation, at its new path, checks
    /// against the machine's (a moved repository's conflicts move). An fsync per fresh
    /// allocation bought nothing more.
    pub fn save_ports(&self, index: &Index) -> anyhow::Result<()> {
        let (bytes, bits) = self.encode(index);
        fsio::write_atomic(
            &self.file,
            &bytes,
            WriteOptions {
                durability: Durability::Lazy,
                mode: Mode::Fixed(bits),
                label: "index",
            },
        )
    }

    /// The index as written (compact, like the registry: an index of 1,000 repositories stays
    /// under 100 KB), and its permissions: private, unless the state dir was made
    /// group-writable on purpose (one index shared by the users of a machine).
    fn encode(&self, index: &Index) -> (Vec<u8>, u32) {
        let mut bytes = serde_json::to_vec(index).expect("index serializes");
        bytes.push(b'\n');
        let bits = match fsio::group_writable(&self.dir) {
            true => 0o660,
            false => 0o600,
        };
        (bytes, bits)
    }
}

fn parse_file(path: &Path) -> Result<Option<Index>, String> {
    let bytes = match fsio::read_regular(path) {
        Ok(None) => return Ok(None),
        Ok(Some(b)) => b,
        Err(e) => return Err(e.to_string()),
    };
    let index: Index = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    if index.version > VERSION {
        return Err(format!(
            "version {} is newer than this tool's {VERSION}; upgrade git-worktree-ports",
            index.version
        ));
    }
    Ok(Some(index))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nobody(_: &Path) -> Option<String> {
        None
    }

    #[test]
    fn display_names_are_unique_and_registering_twice_changes_nothing() {
        let mut i = Index::default();
        assert_eq!(
            i.register(Path::new("/a/app/.git"), "app", "A", &nobody),
            Listed::New
        );
        assert_eq!(
            i.register(Path::new("/a/app/.git"), "app", "A", &nobody),
            Listed::Already
        );
        assert_eq!(
            i.register(Path::new("/b/app/.git"), "app", "B", &nobody),
            Listed::New
        );
        assert_eq!(
            i.register(Path::new("/c/app/.git"), "app", "C", &nobody),
            Listed::New
        );
        let names: Vec<&str> = i.repositories.values().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["app", "b/app", "c/app"]);
        assert_eq!(i.repositories[Path::new("/b/app/.git")].name, "b/app");
    }

    #[test]
    fn a_display_name_is_never_another_repositorys_directory_name() {
        // Issue 26 item 7: with suffixes, x/app, y/app, y/app-2 were app, app-2, app-2-2.
        let mut i = Index::default();
        for (path, id) in [
            ("/x/app", "X"),
            ("/y/app", "Y"),
            ("/y/app-2", "Y2"),
            ("/z/y/app", "Z"),
        ] {
            i.register(
                &Path::new(path).join(".git"),
                path.rsplit('/').next().unwrap(),
                id,
                &nobody,
            );
        }
        let names: Vec<(&str, &str)> = (i.repositories.iter())
            .map(|(p, e)| (p.to_str().unwrap(), e.name.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("/x/app/.git", "app"),
                ("/y/app/.git", "y/app"),
                ("/y/app-2/.git", "app-2"),
                ("/z/y/app/.git", "z/y/app"),
            ]
        );
        // A bare repository's name is its own; a clash gets its parents too.
        assert_eq!(i.unique_name(Path::new("/w/app.git"), "app"), "w/app");
    }

    #[test]
    fn a_repository_that_moved_keeps_its_entry_and_a_copy_is_not_taken_for_it() {
        let mut i = Index::default();
        i.register(Path::new("/a/app/.git"), "app", "A", &nobody);
        i.repositories
            .get_mut(Path::new("/a/app/.git"))
            .unwrap()
            .set_held([8080, 8081, 5432], None);
        let before = i.repositories[Path::new("/a/app/.git")].clone();
        // Still at /a/app: the same identity at /b/app is a copy, and nothing changes.
        let still_there = |p: &Path| (p == Path::new("/a/app/.git")).then(|| "A".to_string());
        assert_eq!(
            i.register(Path::new("/b/app/.git"), "app", "A", &still_there),
            Listed::Copy {
                of: PathBuf::from("/a/app/.git")
            }
        );
        assert_eq!(i.repositories.len(), 1);
        // Gone from /a/app: it moved, and its entry (name, ports) follows it.
        assert_eq!(
            i.register(Path::new("/b/app/.git"), "app", "A", &nobody),
            Listed::Moved {
                from: PathBuf::from("/a/app/.git")
            }
        );
        assert_eq!(
            i.repositories.keys().collect::<Vec<_>>(),
            [Path::new("/b/app/.git")]
        );
        assert_eq!(i.repositories[Path::new("/b/app/.git")], before);
        assert_eq!(before.ports, [[5432, 5432], [8080, 8081]]);
    }

    #[test]
    fn a_repository_made_where_another_was_displaces_it_and_its_name_is_not_reused() {
        let mut i = Index::default();
        i.register(Path::new("/a/app/.git"), "app", "OLD", &nobody);
        i.repositories
            .get_mut(Path::new("/a/app/.git"))
            .unwrap()
            .set_held([8080], None);
        assert_eq!(
            i.register(Path::new("/a/app/.git"), "app", "NEW", &nobody),
            Listed::New
        );
        assert_eq!(i.displaced.len(), 1);
        assert_eq!(i.displaced[0].entry.name, "app");
        // Its path is the displaced one's: only the whole path names it apart.
        assert_eq!(i.repositories[Path::new("/a/app/.git")].name, "/a/app");
        // The displaced one lists itself from where it is now: its entry comes back.
        assert_eq!(
            i.register(Path::new("/z/app/.git"), "app", "OLD", &nobody),
            Listed::Moved {
                from: PathBuf::from("/a/app/.git")
            }
        );
        assert!(i.displaced.is_empty());
        assert_eq!(
            i.repositories[Path::new("/z/app/.git")]
                .held()
                .collect::<Vec<_>>(),
            [8080]
        );
        // An entry written before identities were kept learns its identity.
        i.repositories.get_mut(Path::new("/z/app/.git")).unwrap().id = None;
        assert_eq!(
            i.register(Path::new("/z/app/.git"), "app", "OLD", &nobody),
            Listed::Learned
        );
        assert_eq!(
            i.register(Path::new("/z/app/.git"), "app", "OLD", &nobody),
            Listed::Already
        );
    }

    #[test]
    fn held_ports_are_kept_as_runs() {
        assert_eq!(
            runs([8082, 8080, 8081, 5432, 65535, 8080]),
            [[5432, 5432], [8080, 8082], [65535, 65535]]
        );
        assert!(runs([]).is_empty());
    }

    #[test]
    fn an_index_of_a_thousand_repositories_stays_under_200_kb() {
        let dir = tempfile::tempdir().unwrap();
        let m = Machine::at(dir.path());
        let mut i = Index::default();
        for r in 0..1000u16 {
            i.register(
                &PathBuf::from(format!("/home/dev/src/project-{r:04}/.git")),
                &format!("project-{r:04}"),
                &format!("{:x}-{r:x}", 0x18a6_0000_0000_0000_u64 + u64::from(r)),
                &nobody,
            );
            // Ten worktrees of five services each, taken in order: five runs.
            let held = (0..10u16).flat_map(|w| [8080, 3000, 5432, 9000, 5555].map(|b| b + w));
            let key = PathBuf::from(format!("/home/dev/src/project-{r:04}/.git"));
            i.repositories.get_mut(&key).unwrap().set_held(held, None);
        }
        m.save(&i).unwrap();
        let size = std::fs::metadata(&m.file).unwrap().len();
        assert!(size < 200 * 1024, "{size} bytes");
    }

    #[test]
    fn leases_are_reclaimed_when_their_ttl_passed_or_their_holder_died() {
        let mut i = Index::default();
        let lease = |pid, expires_at| Lease {
            ports: vec![40000],
            pid,
            pid_start: Some(7),
            expires_at,
            created_at: String::new(),
            command: None,
        };
        i.leases.insert("ttl".into(), lease(None, Some(100)));
        i.leases.insert("later".into(), lease(None, Some(200)));
        i.leases.insert("dead".into(), lease(Some(1), None));
        i.leases.insert("live".into(), lease(Some(2), None));
        let alive = |pid: u32, start: Option<u64>| pid == 2 && start == Some(7);
        let mut gone: Vec<String> = i
            .reclaim_leases(100, &alive)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        gone.sort();
        assert_eq!(gone, ["dead", "ttl"]);
        assert_eq!(i.leases.keys().collect::<Vec<_>>(), ["later", "live"]);
        // An index without leases is written without the key (older readers see no change).
        assert!(
            !serde_json::to_string(&Index::default())
                .unwrap()
                .contains("leases")
        );
    }

    #[test]
    fn a_damaged_index_is_kept_aside_and_recovered_from_its_backup() {
        let dir = tempfile::tempdir().unwrap();
        let m = Machine::at(dir.path());
        let lock = m.lock(Duration::from_secs(5), &|_| {}).unwrap();
        let mut i = Index::default();
        i.register(Path::new("/x/.git"), "x", "X", &nobody);
        m.save(&i).unwrap();
        std::fs::write(&m.file, b"{broken").unwrap();
        let (got, warnings) = m.load(&lock).unwrap();
        assert_eq!(got, i);
        assert!(warnings[0].contains("using its backup"), "{warnings:?}");
        assert_eq!(parse_file(&m.file).unwrap().unwrap(), i);
        let aside = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains("corrupt-")
            })
            .count();
        assert_eq!(aside, 1);
    }
}
