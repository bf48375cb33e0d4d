//! `prune`: drop the allocations of worktrees git no longer has, or whose directory is gone
//! and that are not locked (the worktree list is read under the registry lock, so a worktree
//! that allocates meanwhile is never mistaken for a dead one); `--all`: every repository of
//! the machine, and the index entries of repositories gone from disk; `--reap`: the processes
//! running in a deleted worktree, stopped with `stop`.

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Serialize;

use crate::machine::Machine;
use crate::model::attribution::{self, Whose};
use crate::model::names::display_path;
use crate::output::progress::Progress;
use crate::registry::Ports;
use crate::sys::procs;

use super::{RepoView, Workspace, lock_machine, warn};

/// A worktree entry pruned (or that a dry run would prune).
#[derive(Debug, Serialize, JsonSchema)]
pub struct Pruned {
    /// `prune --all`: the repository's name.
    #[serde(rename = "repository")]
    pub repo: Option<String>,
    /// The worktree's name.
    #[serde(rename = "name")]
    pub key: String,
    /// Its recorded directory.
    pub path: String,
    /// Why it was pruned.
    pub reason: &'static str,
    /// Service -> the port given back.
    pub ports: BTreeMap<String, u16>,
}

/// A repository of the machine index that is gone from where it was listed (moved or
/// deleted), or whose path another repository took.
#[derive(Debug, Serialize, JsonSchema)]
pub struct GoneRepository {
    /// Its name in the index.
    pub name: String,
    /// Its git directory.
    pub path: String,
    /// The block it had claimed (`strategy = "block"`): first and last port.
    pub block: Option<[u16; 2]>,
    /// The ports it kept while gone, lowest first.
    pub ports: Vec<u16>,
}

/// A process whose working directory is inside a worktree that no longer exists.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Orphan {
    /// Its pid.
    pub pid: u32,
    /// Its command line.
    pub command: String,
    /// Its working directory.
    pub cwd: String,
    /// The deleted worktree's name.
    pub worktree: String,
    /// The deleted worktree's directory.
    pub path: String,
    /// `--all`: the repository's name.
    #[serde(rename = "repository")]
    pub repo: Option<String>,
    /// The ports it listens on.
    pub ports: Vec<u16>,
    /// With `--yes`: whether it is gone now.
    pub stopped: Option<bool>,
}

/// What `prune` did (or, with `dry_run`, would do).
pub struct PruneDone {
    /// The worktree entries pruned.
    pub pruned: Vec<Pruned>,
    /// `all`: repositories gone from disk, dropped from the machine index.
    pub repositories_gone: Vec<GoneRepository>,
    /// `reap_too`: processes running in deleted worktrees.
    pub orphans: Vec<Orphan>,
}

/// Prune this repository (`all`: every repository of the machine index, and the index's
/// gone repositories); with `reap_too`, find the processes running in deleted worktrees, and
/// with `stop`, stop them.
pub fn prune(all: bool, dry_run: bool, reap_too: bool, stop: bool) -> anyhow::Result<PruneDone> {
    let mut pruned = Vec::new();
    let mut gone_repos: Vec<GoneRepository> = Vec::new();
    // The repositories to look for orphaned processes in (`--reap`), after their prune.
    let mut reap_in: Vec<(Workspace, Option<String>)> = Vec::new();
    if all {
        let machine = Machine::from_env()?;
        // Index entries of gone repositories are dropped under the machine lock, which comes
        // before any repository's.
        let lock = if dry_run {
            None
        } else {
            Some(lock_machine(&machine)?)
        };
        let (mut index, warnings) = match &lock {
            Some(l) => machine.load(l)?,
            None => machine.read(),
        };
        warnings.iter().for_each(|w| warn(w));
        let mut progress = Progress::new("prune", index.repositories.len());
        for (i, (common, entry)) in index.repositories.iter().enumerate() {
            progress.step(i, &entry.name);
            if !common.is_dir() {
                continue;
            }
            match Workspace::open_at(common) {
                Ok(ws) => {
                    pruned.extend(prune_one(&ws, dry_run, Some(&entry.name))?);
                    reap_in.push((ws, Some(entry.name.clone())));
                }
                Err(e) => warn(&format!(
                    "skipped repository {} ({}): {e:#}",
                    entry.name,
                    common.display()
                )),
            }
        }
        // Gone (moved or deleted) and displaced repositories, and the ports they kept.
        for (common, entry, _) in index.gone() {
            gone_repos.push(GoneRepository {
                name: entry.name.clone(),
                path: display_path(common).display().to_string(),
                block: entry.block,
                ports: entry.held().collect(),
            });
        }
        if lock.is_some() && !index.drop_gone().is_empty() {
            machine.save(&index)?;
        }
    } else {
        let ws = Workspace::open()?;
        pruned = prune_one(&ws, dry_run, None)?;
        reap_in.push((ws, None));
    }
    let orphans = match reap_too {
        true => reap(&reap_in, stop)?,
        false => Vec::new(),
    };
    Ok(PruneDone {
        pruned,
        repositories_gone: gone_repos,
        orphans,
    })
}

/// Prune one repository.
fn prune_one(ws: &Workspace, dry_run: bool, repo: Option<&str>) -> anyhow::Result<Vec<Pruned>> {
    if !dry_run {
        // `[on] release` of each, outside the lock; the locked pass below decides again.
        for p in dead(&ws.view()?)? {
            ws.before_release(&p.key);
        }
    }
    let mut pruned = if dry_run {
        dead(&ws.view()?)?
    } else {
        let lock = ws.lock()?;
        let view = ws.view_of(ws.load_locked(&lock, None)?);
        let pruned = dead(&view)?;
        let mut reg = view.registry;
        if !pruned.is_empty() {
            for p in &pruned {
                reg.remove_gone_worktree(&p.key);
            }
            ws.save(&lock, &mut reg)?;
        }
        pruned
    };
    for p in &mut pruned {
        p.repo = repo.map(str::to_string);
    }
    Ok(pruned)
}

/// How long a process gets between SIGTERM and SIGKILL.
fn grace() -> Duration {
    std::env::var("GIT_WORKTREE_PORTS_REAP_GRACE")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map_or(Duration::from_secs(5), Duration::from_secs_f64)
}

/// The processes running in a deleted worktree of these repositories: never one with a
/// terminal (controlling, or open: a pty master such as script or tmux), never another
/// user's, never anything outside a deleted worktree.
/// With `stop`, each gets SIGTERM, then SIGKILL after the grace period.
fn reap(repos: &[(Workspace, Option<String>)], stop: bool) -> anyhow::Result<Vec<Orphan>> {
    let me = procs::my_uid();
    let own = std::process::id();
    let candidates: Vec<crate::model::attribution::Process> = procs::processes()
        .into_iter()
        .filter(|p| p.uid == Some(me) && !p.tty && p.pid != own && p.cwd.is_some())
        .collect();
    let mut orphans: Vec<Orphan> = Vec::new();
    for (ws, label) in repos {
        let known = ws.view()?.known_worktrees()?;
        for p in &candidates {
            if orphans.iter().any(|o| o.pid == p.pid) {
                continue;
            }
            if let Whose::Orphan { name, path, .. } = attribution::classify(Some(p), &known, None)
                && !procs::uses_terminal(p.pid)
            {
                orphans.push(Orphan {
                    pid: p.pid,
                    command: p.command.clone(),
                    cwd: p
                        .cwd
                        .as_ref()
                        .map(|c| c.display().to_string())
                        .unwrap_or_default(),
                    worktree: name,
                    path: path.display().to_string(),
                    repo: label.clone(),
                    ports: Vec::new(),
                    stopped: None,
                });
            }
        }
    }
    let pids: Vec<u32> = orphans.iter().map(|o| o.pid).collect();
    let ports = procs::ports_of(&pids);
    for o in &mut orphans {
        o.ports = ports.get(&o.pid).cloned().unwrap_or_default();
        o.ports.sort();
    }
    if stop {
        let grace = grace();
        for o in &mut orphans {
            o.stopped = Some(procs::stop(o.pid, grace));
        }
    }
    Ok(orphans)
}

/// Registry entries whose worktree is gone.
fn dead(view: &RepoView) -> anyhow::Result<Vec<Pruned>> {
    let reg = &view.registry;
    let mut gone = view.gone("")?;
    gone.sort();
    Ok(gone
        .into_iter()
        .map(|(key, reason)| Pruned {
            repo: None,
            path: reg.record(&key).map(|r| r.path).unwrap_or_default(),
            reason,
            ports: reg.ports(&key).map(Ports::to_map).unwrap_or_default(),
            key,
        })
        .collect())
}
