//! `repair [--dry-run] [--json]`: rebuild the registry from git's worktree list and every
//! record that can still be read: `ports.json`, `ports.json.bak`, then the kept
//! `ports.json.corrupt-*` files (newest first), salvaging complete entries from damaged ones.
//!
//! The newest record wins, always: records are read newest first, and reading stops at the
//! first one that parses whole, since everything older is either in it or was released since
//! (a kept `ports.json.corrupt-*` must never bring back a port a worktree gave up long ago).
//! Damaged records newer than that one add what can be salvaged from them. Each worktree git
//! still has (locked ones too, even with their directory absent: an unplugged disk) keeps, per
//! service, the port of the newest record that names one; a port two records give to different
//! worktrees goes to the first and is reported. Records of worktrees git no longer has are
//! dropped (as `prune` would). Nothing is deleted: a damaged `ports.json` is kept aside.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::Serialize;

use crate::cli::RepairArgs;
use crate::commands::{Report, ports_inline};
use crate::model::clock::now_rfc3339;
use crate::model::config::MIN_PORT;
use crate::model::error::{Code, Error};
use crate::model::salvage;
use crate::output::progress::Progress;
use crate::registry::{self, Event, Problem, Registry, WorktreeRecord};
use crate::sys::fsio;
use crate::workspace::Workspace;

struct Source {
    path: PathBuf,
    /// Parsed whole, when it could be.
    whole: Option<Registry>,
    entries: Vec<(String, String, u64)>,
}

/// `repair --json`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct RepairAnswer {
    /// --dry-run: nothing was changed.
    pub dry_run: bool,
    /// The worktrees whose ports were kept, and where they were read from.
    pub kept: Vec<Kept>,
    /// What was dropped, and why.
    pub dropped: Vec<String>,
    /// Worktrees of the sources git no longer has.
    pub gone: Vec<String>,
    /// The files read.
    pub sources: Vec<SourceAnswer>,
    /// Older copies found (kept aside, not read).
    pub older: Vec<String>,
}

/// One kept worktree of `repair --json`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Kept {
    /// The worktree's name.
    pub worktree: String,
    /// Service -> port.
    pub ports: BTreeMap<String, u16>,
    /// The sources its ports came from.
    pub from: Vec<String>,
}

/// One file `repair` read.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SourceAnswer {
    /// Its path.
    pub path: String,
    /// Whether it parsed as a whole registry.
    pub whole: bool,
    /// How many worktree entries were salvaged from it.
    pub entries: usize,
}

/// Run `repair`.
pub fn run(args: &RepairArgs) -> anyhow::Result<Report> {
    let ws = Workspace::open()?;
    let lock = ws.lock()?;
    let worktrees: Vec<_> = (ws.worktrees()?.iter())
        .filter(|w| !w.prunable)
        .cloned()
        .collect();

    let mut sources: Vec<Source> = Vec::new();
    let mut older: Vec<PathBuf> = Vec::new();
    for path in registry::record_files(ws.paths()) {
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
        let source = match registry::parse(&bytes) {
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
                compose_project_name: records.iter().find_map(|r| r.compose_project_name.clone()),
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

    if !args.dry_run {
        let file = &ws.paths().file;
        let damaged = match fsio::read_regular(file) {
            Ok(Some(b)) => registry::parse(&b).is_err(),
            Ok(None) => false,
            Err(_) => std::fs::symlink_metadata(file).is_ok(),
        };
        if damaged {
            lock.keep_aside()?;
        }
        reg.log(Event::Repaired);
        ws.save(&lock, &mut reg)?;
    }
    drop(lock);

    if args.json {
        return Ok(Report::answer(RepairAnswer {
            dry_run: args.dry_run,
            kept: (kept.into_iter())
                .map(|(worktree, ports, from)| Kept {
                    worktree,
                    ports,
                    from,
                })
                .collect(),
            dropped,
            gone,
            sources: (sources.iter())
                .map(|s| SourceAnswer {
                    path: s.path.to_string_lossy().into_owned(),
                    whole: s.whole.is_some(),
                    entries: s.entries.len(),
                })
                .collect(),
            older: (older.iter())
                .map(|p| p.to_string_lossy().into_owned())
                .collect(),
        }));
    }
    let mut out = String::new();
    for p in &older {
        out.push_str(&format!(
            "not used: {} (older than a whole record, which wins)\n",
            p.display()
        ));
    }
    for s in &sources {
        out.push_str(&format!(
            "read {}: {} ({} entries)\n",
            s.path.display(),
            if s.whole.is_some() {
                "whole"
            } else {
                "damaged, salvaged"
            },
            s.entries.len()
        ));
    }
    let verb = if args.dry_run { "would keep" } else { "kept" };
    for (w, p, from) in &kept {
        out.push_str(&format!(
            "{verb} {w}: {} (from {})\n",
            ports_inline(p),
            from.join(", ")
        ));
    }
    for d in &dropped {
        out.push_str(&format!("dropped {d}\n"));
    }
    if !gone.is_empty() {
        out.push_str(&format!(
            "dropped worktrees git no longer has: {}\n",
            gone.join(", ")
        ));
    }
    if kept.is_empty() {
        out.push_str(
            "no ports could be recovered; worktrees allocate anew on their next command\n",
        );
    }
    Ok(Report::ok(out))
}
