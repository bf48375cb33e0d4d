//! `list`: the entries of this repository as seen from here (see [`super::entries`]), and
//! of every repository of the machine (`--all`), with whether anything listens on each port.

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::Serialize;

use crate::machine::Machine;
use crate::model::allocate::Probe;
use crate::model::config::{Config, Protocol};
use crate::model::names::display_path;
use crate::registry::Ports;
use crate::sys::probe::SystemProbe;
use crate::sys::procs;

use super::{OtherRepository, Workspace, warn};

/// Whether something listens on a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LiveState {
    /// A process of this user listens.
    Up,
    /// Nothing listens.
    Down,
    /// Another user's process listens.
    Foreign,
}

/// One repository of `list --all --json`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct RepoListing {
    /// Its name in the index.
    pub name: String,
    /// Its git common directory (shown as the repository's path).
    pub path: String,
    /// Whether it is gone from disk.
    pub gone: bool,
    /// Its worktrees with ports.
    pub worktrees: Vec<WorktreeListing>,
}

/// One worktree of `list --all --json`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct WorktreeListing {
    /// The worktree's name.
    pub name: String,
    /// Its recorded directory.
    pub path: String,
    /// Its branch when it allocated (None: detached).
    pub branch: Option<String>,
    /// Service -> port.
    pub ports: BTreeMap<String, u16>,
    /// Whether the directory exists.
    pub exists: bool,
    /// Its slot (recorded when it allocated).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slot: Option<u32>,
    /// Its hostname (recorded when it allocated).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Service -> URL, for the services that speak HTTP (the repository's main worktree's
    /// config says which; else `web` and `api`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub urls: BTreeMap<String, String>,
    /// Service -> whether anything listens (absent with --no-probe).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live: Option<BTreeMap<String, LiveState>>,
}

/// Which ports have a listening socket, and whether it is the user's own.
pub struct Live {
    /// Port -> socket owner uid; None where the tables cannot be read (then the probe).
    uids: Option<std::collections::HashMap<u16, u32>>,
    me: u32,
}

impl Live {
    /// Read the socket tables for `ports` (no process scan).
    pub fn read(ports: &[u16]) -> Live {
        Live {
            uids: procs::listening_uids(ports),
            me: procs::my_uid(),
        }
    }

    /// `up` (listening, a socket of ours), `foreign` (another user's), `down` (nothing).
    /// Each service's state.
    pub fn states(&self, ports: &BTreeMap<String, u16>) -> BTreeMap<String, LiveState> {
        (ports.iter())
            .map(|(s, p)| (s.clone(), self.state(*p)))
            .collect()
    }

    /// One port's state.
    pub fn state(&self, port: u16) -> LiveState {
        match &self.uids {
            Some(uids) => match uids.get(&port) {
                Some(uid) if *uid == self.me => LiveState::Up,
                Some(_) => LiveState::Foreign,
                None => LiveState::Down,
            },
            None => match SystemProbe.is_free(port, Protocol::Tcp) {
                true => LiveState::Down,
                false => LiveState::Up,
            },
        }
    }
}

/// `list --all`: every repository of the machine index, its worktrees and ports (from each
/// registry, read without its lock), gone repositories and worktrees marked, by name; and
/// the index file.
pub fn machine_listing() -> anyhow::Result<(Vec<RepoListing>, PathBuf)> {
    let machine = Machine::from_env()?;
    let (index, warnings) = machine.read();
    warnings.iter().for_each(|w| warn(w));
    // The repository this runs in, by identity: listed at a path where it no longer is, it
    // moved here (its entry follows it at its next allocation), and is shown where it is.
    // Asked only when an entry is gone (its registry is read again below).
    let here = (index.gone().next().is_some())
        .then(|| {
            let ws = Workspace::open().ok()?;
            let id = ws.view().ok()?.registry.repository_id()?;
            Some((ws.canonical_common_dir(), id))
        })
        .flatten();
    let mut repos: Vec<RepoListing> = index
        .entries()
        .map(|(listed_at, entry, displaced)| {
            let common = match &here {
                Some((path, id))
                    if entry.id.as_deref() == Some(id.as_str())
                        && (displaced || !listed_at.is_dir()) =>
                {
                    path.as_path()
                }
                _ => listed_at,
            };
            let gone = !common.is_dir() || (displaced && common == listed_at);
            let other = if gone {
                None
            } else {
                Some(OtherRepository::read_whole(common))
            };
            let shown = display_path(common);
            // Which services speak HTTP: the config of the repository's main worktree, read
            // once per repository (worktrees share it).
            let config = (!gone)
                .then(|| crate::sys::config_file::load(&shown).ok())
                .flatten();
            let is_http = |s: &str| match &config {
                Some(c) => c.services.iter().any(|h| h.http && h.name == s),
                None => crate::model::config::default_http(s),
            };
            let worktrees = other
                .as_ref()
                .map(|o| {
                    o.registry
                        .keys()
                        .into_iter()
                        .map(|key| {
                            let record = o.registry.record(key);
                            let mut path =
                                record.as_ref().map(|r| r.path.clone()).unwrap_or_default();
                            // The main worktree is where the repository is (it moves with it).
                            if key == crate::sys::git::MAIN_KEY && shown != common {
                                path = shown.to_string_lossy().into_owned();
                            }
                            let ports =
                                o.registry.ports(key).map(Ports::to_map).unwrap_or_default();
                            let hostname = record.as_ref().and_then(|r| r.hostname.clone());
                            let urls = match &hostname {
                                Some(host) => (ports.iter())
                                    .filter(|(s, _)| is_http(s))
                                    .map(|(s, p)| (s.clone(), format!("http://{host}:{p}")))
                                    .collect(),
                                None => BTreeMap::new(),
                            };
                            WorktreeListing {
                                name: key.to_string(),
                                exists: !path.is_empty() && std::path::Path::new(&path).is_dir(),
                                path,
                                branch: record.as_ref().and_then(|r| r.branch.clone()),
                                ports,
                                slot: record.as_ref().and_then(|r| r.slot),
                                hostname,
                                urls,
                                live: None,
                            }
                        })
                        .collect()
                })
                .unwrap_or_default();
            RepoListing {
                name: entry.name.clone(),
                path: shown.to_string_lossy().into_owned(),
                gone,
                worktrees,
            }
        })
        .collect();
    repos.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((repos, machine.file.clone()))
}

impl Workspace {
    /// The current worktree's config, when there is one and it reads (`list`'s columns); in
    /// a bare repository (no current worktree), the first living worktree's, so its columns
    /// follow the config's order there too.
    pub fn current_config(&self) -> Option<Config> {
        let wt = match self.repo.current().ok().flatten() {
            Some(wt) => wt,
            None => (self.worktrees().ok()?.iter())
                .find(|w| !w.prunable && w.path.is_dir())?
                .clone(),
        };
        crate::sys::config_file::load(&wt.path).ok()
    }
}
