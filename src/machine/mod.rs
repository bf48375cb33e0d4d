//! The machine index: every repository that allocates on this machine (for this user), so that
//! every allocation can treat every other repository's ports as taken. Each repository's own
//! `ports.json` stays the source of truth for its worktrees; the index only lists repositories.
//!
//! Files, in the state dir (`GIT_WORKTREE_PORTS_STATE_DIR`, else
//! `$XDG_STATE_HOME/git-worktree-ports`, else `~/.local/state/git-worktree-ports`):
//! - `index.json` (+ `index.json.bak`): `{"version": 1, "repositories": {"<common dir>":
//!   {"name": "<display name>", "added_at": "<RFC 3339>", "block": [30000, 30099]}}}` (the
//!   block only for a block-strategy repository) and `"leases": {"<id>": {"ports", "pid",
//!   "pid_start", "expires_at", "created_at", "command"}}`, written like the registry
//!   (temp file, fsync, rename; then the backup);
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
use crate::sys::fault;
use crate::sys::fsio::{self, Durability, Mode, WriteOptions};
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
    /// Lease id -> lease.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub leases: BTreeMap<String, Lease>,
}

impl Default for Index {
    fn default() -> Self {
        Index {
            version: VERSION,
            repositories: BTreeMap::new(),
            leases: BTreeMap::new(),
        }
    }
}

impl Index {
    /// The entry of the repository whose common dir is `common_dir`.
    pub fn get(&self, common_dir: &Path) -> Option<&Entry> {
        self.repositories.get(common_dir)
    }

    /// List a repository (no change when it is listed); true when the index changed. Its
    /// display name is `name`, or `name-2`, `name-3`... when another repository has it.
    pub fn register(&mut self, common_dir: &Path, name: &str) -> bool {
        if self.repositories.contains_key(common_dir) {
            return false;
        }
        let taken = |n: &str| self.repositories.values().any(|e| e.name == n);
        let unique = if taken(name) {
            (2..)
                .map(|i| format!("{name}-{i}"))
                .find(|n| !taken(n))
                .expect("a free suffix")
        } else {
            name.to_string()
        };
        self.repositories.insert(
            common_dir.to_path_buf(),
            Entry {
                name: unique,
                added_at: now_rfc3339(),
                block: None,
                host: None,
            },
        );
        true
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

    /// The blocks claimed by every repository but `except`.
    pub fn claims_except(&self, except: &Path) -> Vec<(std::ops::RangeInclusive<u16>, &Path)> {
        (self.repositories.iter())
            .filter(|(p, _)| p.as_path() != except)
            .filter_map(|(p, e)| {
                let [lo, hi] = e.block?;
                Some((lo..=hi, p.as_path()))
            })
            .collect()
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

    /// Drop repositories whose common dir no longer exists; returns them.
    pub fn drop_gone(&mut self) -> Vec<(PathBuf, Entry)> {
        let gone: Vec<PathBuf> = (self.repositories.keys())
            .filter(|p| !p.is_dir())
            .cloned()
            .collect();
        gone.into_iter()
            .filter_map(|p| self.repositories.remove(&p).map(|e| (p, e)))
            .collect()
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

    /// Write the index (then its backup).
    pub fn save(&self, index: &Index) -> anyhow::Result<()> {
        // Compact, like the registry: an index of 1,000 repositories stays under 100 KB.
        let mut bytes = serde_json::to_vec(index).expect("index serializes");
        bytes.push(b'\n');
        fsio::write_atomic(
            &self.file,
            &bytes,
            WriteOptions {
                durability: Durability::Full,
                mode: Mode::Fixed(0o600),
                label: "index",
            },
        )?;
        // The backup only matters if the index is damaged later; a failure here is not one of
        // the committed change.
        let _ = fsio::write_atomic(
            &self.backup,
            &bytes,
            WriteOptions {
                durability: Durability::Lazy,
                mode: Mode::Fixed(0o600),
                label: "index-backup",
            },
        );
        Ok(())
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

    #[test]
    fn display_names_are_unique_and_registering_twice_changes_nothing() {
        let mut i = Index::default();
        assert!(i.register(Path::new("/a/app/.git"), "app"));
        assert!(!i.register(Path::new("/a/app/.git"), "app"));
        assert!(i.register(Path::new("/b/app/.git"), "app"));
        assert!(i.register(Path::new("/c/app/.git"), "app"));
        let names: Vec<&str> = i.repositories.values().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["app", "app-2", "app-3"]);
        assert_eq!(i.repositories[Path::new("/b/app/.git")].name, "app-2");
    }

    #[test]
    fn an_index_of_a_thousand_repositories_stays_under_100_kb() {
        let dir = tempfile::tempdir().unwrap();
        let m = Machine::at(dir.path());
        let mut i = Index::default();
        for r in 0..1000 {
            i.register(
                &PathBuf::from(format!("/home/dev/src/project-{r:04}/.git")),
                &format!("project-{r:04}"),
            );
        }
        m.save(&i).unwrap();
        let size = std::fs::metadata(&m.file).unwrap().len();
        assert!(size < 100 * 1024, "{size} bytes");
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
        i.register(Path::new("/x/.git"), "x");
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
