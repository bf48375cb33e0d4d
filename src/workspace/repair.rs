//! `repair`: rebuild the registry from git's worktree list and every record that can still
//! be read, newest first (see `commands/repair.rs` for the rules); under the lock, writing
//! only without `dry_run`, keeping a damaged `ports.json` aside.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use crate::model::clock::now_rfc3339;
use crate::model::config::MIN_PORT;
use crate::model::error::{Code, Error};
use crate::model::salvage;
use crate::output::progress::Progress;
use crate::registry::{self, Event, Problem, Registry, WorktreeRecord};
use crate::sys::fsio;

use super::Workspace;

/// A record file as read: whole, or the entries salvaged from it.
struct Source {
    path: PathBuf,
    /// Parsed whole, when it could be.
    whole: Option<Registry>,
    entries: Vec<(String, String, u64)>,
}

/// One record file `repair` read.
#[derive(Debug)]
pub struct RepairSource {
    /// Its path.
    pub path: PathBuf,
    /// Whether it parsed as a whole registry.
    pub whole: bool,
    /// How many port entries came from it.
    pub entries: usize,
}

/// What `repair` did (or would do).
#[derive(Debug)]
pub struct Repaired {
    /// (worktree, its ports, the files they came from).
    pub kept: Vec<(String, BTreeMap<String, u16>, Vec<String>)>,
    /// Entries dropped, each with why.
    pub dropped: Vec<String>,
    /// Worktrees git no longer has, whose records were dropped.
    pub gone: Vec<String>,
    /// The files read, newest first.
    pub sources: Vec<RepairSource>,
    /// Files older than a whole record, not used.
    pub older: Vec<PathBuf>,
}

impl Workspace {
    /// Rebuild the registry (with `dry_run`, only say how).
    pub fn repair(&self, dry_run: bool) -> anyhow::Result<Repaired> {
        let lock = self.lock()?;
        let worktrees: Vec<_> = (self.worktrees()?.iter())
            .filter(|w| !w.prunable)
            .cloned()
            .collect();

        let mut sources: Vec<Source> = Vec::new();
        let mut older: Vec<PathBuf> = Vec::new();
        for path in registry::record_files(self.paths()) {
            if sources.iter().any(|s| s.whole.is_some()) {
                if path.exists() {
                    older.push(path);
                }
                continue;
            }
            // Never blocks on a FIFO; what is not a regular file holds no records.
            let Ok(Some(bytes)) = fsio::read_regular(&path) else {
                continue;
            };
            let source = match registry::parse_file_in(&self.paths().dir, &bytes) {
                Ok(reg) => Source {
                    entries: reg
                        .allocations()
                        .flat_map(|(w, ports)| {
                            ports
                                .iter()
                                .map(move |(s, p)| (w.to_owned(), s.to_owned(), u64::from(p)))
                        })
                        .collect(),
                    whole: Some(reg),
                    path,
                },
                Err(Problem::Newer(v)) => {
                    return Err(Error::new(
                    Code::RegistryCorrupt,
                    format!("{} has version {v}, newer than this git-worktree-ports understands; upgrade it instead of repairing", path.display()),
                )
                .into());
                }
                Err(_) => Source {
                    entries: salvage::allocated_ports(&bytes),
                    whole: None,
                    path,
                },
            };
            sources.push(source);
        }

        let base = sources
            .iter()
            .find_map(|s| s.whole.clone())
            .unwrap_or_default();
        let mut reg: Registry = base;
        reg.clear_allocations();
        let mut taken: HashMap<u16, (String, String)> = HashMap::new();
        let mut dropped: Vec<String> = Vec::new();
        let mut kept: Vec<(String, BTreeMap<String, u16>, Vec<String>)> = Vec::new();
        let mut progress = Progress::new("repair", worktrees.len());
        for (i, wt) in worktrees.iter().enumerate() {
            progress.step(i, &wt.key);
            let mut ports: BTreeMap<String, u16> = BTreeMap::new();
            let mut from: Vec<String> = Vec::new();
            for src in &sources {
                for (w, svc, port) in src.entries.iter().filter(|(w, _, _)| *w == wt.key) {
                    if ports.contains_key(svc) {
                        continue;
                    }
                    let Some(port) = u16::try_from(*port).ok().filter(|p| *p >= MIN_PORT) else {
                        dropped.push(format!(
                            "{w} {svc} {port} (outside 1024-65535, in {})",
                            src.path.display()
                        ));
                        continue;
                    };
                    if let Some((ow, os)) = taken.get(&port) {
                        if (ow, os) != (w, svc) {
                            dropped.push(format!(
                                "{w} {svc} {port} (already {ow} {os}'s, in {})",
                                src.path.display()
                            ));
                        }
                        continue;
                    }
                    taken.insert(port, (w.clone(), svc.clone()));
                    ports.insert(svc.clone(), port);
                    let name = src
                        .path
                        .file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned();
                    if !from.contains(&name) {
                        from.push(name);
                    }
                }
            }
            if ports.is_empty() {
                continue;
            }
            // Each field from the first source whose record has it (decoded once per source).
            let records: Vec<WorktreeRecord> = sources
                .iter()
                .filter_map(|s| s.whole.as_ref()?.record(&wt.key))
                .collect();
            let allocated_at = records
                .first()
                .map(|r| r.allocated_at.clone())
                .unwrap_or_else(now_rfc3339);
            reg.set_record(
                &wt.key,
                &WorktreeRecord {
                    path: wt.path.to_string_lossy().into_owned(),
                    branch: wt.branch.clone(),
                    allocated_at,
                    id: records.iter().find_map(|r| r.id.clone()),
                    compose_project_name: records
                        .iter()
                        .find_map(|r| r.compose_project_name.clone()),
                    slot: records.iter().find_map(|r| r.slot),
                    hostname: records.iter().find_map(|r| r.hostname.clone()),
                    extra: Default::default(),
                },
            );
            // `taken` above gave every port to one worktree only, so this cannot conflict.
            reg.restore_ports(&wt.key, &ports)
                .map_err(|c| Error::new(Code::RegistryCorrupt, format!("{c} (a bug in repair)")))?;
            kept.push((wt.key.clone(), ports, from));
        }
        let live: Vec<&str> = worktrees.iter().map(|w| w.key.as_str()).collect();
        let mut gone: Vec<String> = sources
            .iter()
            .flat_map(|s| s.entries.iter().map(|(w, _, _)| w.clone()))
            .filter(|w| !live.contains(&w.as_str()))
            .collect();
        gone.sort();
        gone.dedup();

        if !dry_run {
            let file = &self.paths().file;
            let damaged = match fsio::read_regular(file) {
                Ok(Some(b)) => registry::parse_file_in(&self.paths().dir, &b).is_err(),
                Ok(None) => false,
                Err(_) => std::fs::symlink_metadata(file).is_ok(),
            };
            if damaged {
                lock.keep_aside()?;
            }
            reg.log(Event::Repaired);
            self.save(&lock, &mut reg)?;
        }
        drop(lock);
        Ok(Repaired {
            kept,
            dropped,
            gone,
            sources: (sources.into_iter())
                .map(|s| RepairSource {
                    entries: s.entries.len(),
                    whole: s.whole.is_some(),
                    path: s.path,
                })
                .collect(),
            older,
        })
    }
}
