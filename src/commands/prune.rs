//! `prune [--dry-run] [--json]`: drop the allocations of worktrees git no longer has, or whose
//! directory is gone and that are not locked. The worktree list is read under the registry
//! lock, so a worktree that allocates meanwhile is never mistaken for a dead one.
//!
//! `--reap [--yes]`: list the processes whose working directory is inside a worktree that no
//! longer exists (a dev server left running by a deleted worktree), with pid, command and
//! ports; with `--yes` stop them (SIGTERM, then SIGKILL after a grace period). Never a process
//! with a controlling terminal, never another user's, never anything outside a deleted
//! worktree.

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Serialize;

use crate::cli::PruneArgs;
use crate::commands::{Report, ports_inline};
use crate::machine::Machine;
use crate::model::attribution::{self, Whose};
use crate::model::names::display_path;
use crate::output::progress::Progress;
use crate::registry::{Ports, Registry};
use crate::sys::procs;
use crate::workspace::{Workspace, lock_machine, warn};

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

/// `prune --json`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct PruneAnswer {
    /// --dry-run: nothing was changed.
    pub dry_run: bool,
    /// The worktrees pruned (or that would be).
    pub pruned: Vec<Pruned>,
    /// `--all`: repositories gone from disk, dropped from the machine index.
    pub repositories_gone: Vec<GoneRepository>,
    /// `--reap`: processes still running in deleted worktrees.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub orphans: Option<Vec<Orphan>>,
}

/// A repository of the machine index that is gone from disk.
#[derive(Debug, Serialize, JsonSchema)]
pub struct GoneRepository {
    /// Its name in the index.
    pub name: String,
    /// Its git directory.
    pub path: String,
    /// The block it had claimed (`strategy = "block"`): first and last port.
    pub block: Option<[u16; 2]>,
}

/// Prune one repository.
fn prune(ws: &Workspace, dry_run: bool, repo: Option<&str>) -> anyhow::Result<Vec<Pruned>> {
    if !dry_run {
        // `[on] release` of each, outside the lock; the locked pass below decides again.
        let reg = ws.load_unlocked()?;
        for p in dead(ws, &reg)? {
            ws.before_release(&p.key);
        }
    }
    let mut pruned = if dry_run {
        let reg = ws.load_unlocked()?;
        dead(ws, &reg)?
    } else {
        let lock = ws.lock()?;
        let mut reg = ws.load_locked(&lock, None)?;
        let pruned = dead(ws, &reg)?;
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

/// Run `prune`.
pub fn run(args: &PruneArgs) -> anyhow::Result<Report> {
    let mut pruned = Vec::new();
    let mut gone_repos: Vec<(String, String, Option<[u16; 2]>)> = Vec::new();
    // The repositories to look for orphaned processes in (`--reap`), after their prune.
    let mut reap_in: Vec<(Workspace, Option<String>)> = Vec::new();
    if args.all {
        let machine = Machine::from_env()?;
        // Index entries of gone repositories are dropped under the machine lock, which comes
        // before any repository's.
        let lock = if args.dry_run {
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
                gone_repos.push((
                    entry.name.clone(),
                    display_path(common).display().to_string(),
                    entry.block,
                ));
                continue;
            }
            match Workspace::open_at(common) {
                Ok(ws) => {
                    pruned.extend(prune(&ws, args.dry_run, Some(&entry.name))?);
                    reap_in.push((ws, Some(entry.name.clone())));
                }
                Err(e) => warn(&format!(
                    "skipped repository {} ({}): {e:#}",
                    entry.name,
                    common.display()
                )),
            }
        }
        if lock.is_some() && !index.drop_gone().is_empty() {
            machine.save(&index)?;
        }
    } else {
        let ws = Workspace::open()?;
        pruned = prune(&ws, args.dry_run, None)?;
        reap_in.push((ws, None));
    }
    let reaped = match args.reap {
        true => reap(&reap_in, args.yes && !args.dry_run)?,
        false => Vec::new(),
    };

    if args.json {
        let repositories_gone = (gone_repos.into_iter())
            .map(|(name, path, block)| GoneRepository { name, path, block })
            .collect();
        return Ok(Report::answer(PruneAnswer {
            dry_run: args.dry_run,
            pruned,
            repositories_gone,
            orphans: args.reap.then_some(reaped),
        }));
    }
    let reap_text: String = reaped.iter().map(|o| o.to_text(args.yes)).collect();
    if pruned.is_empty() && gone_repos.is_empty() {
        let mut out = match args.reap {
            true => String::new(),
            false => "nothing to prune\n".to_string(),
        };
        if args.reap && reaped.is_empty() {
            out.push_str("nothing to prune, and no process runs in a deleted worktree\n");
        }
        out.push_str(&reap_text);
        return Ok(Report::ok(out));
    }
    let verb = if args.dry_run {
        "would prune"
    } else {
        "pruned"
    };
    let mut out = String::new();
    for (name, path, block) in &gone_repos {
        out.push_str(&format!(
            "{} repository {name} ({path}, gone): its ports{} are free again\n",
            if args.dry_run {
                "would drop"
            } else {
                "dropped"
            },
            block
                .map(|[lo, hi]| format!(" and its block {lo}-{hi}"))
                .unwrap_or_default()
        ));
    }
    for p in &pruned {
        let of = p
            .repo
            .as_ref()
            .map(|r| format!(" of {r}"))
            .unwrap_or_default();
        out.push_str(&format!(
            "{verb} {}{of} ({}, {}): {}\n",
            p.key,
            p.path,
            p.reason,
            if p.ports.is_empty() {
                "no ports".into()
            } else {
                ports_inline(&p.ports)
            }
        ));
    }
    out.push_str(&reap_text);
    Ok(Report::ok(out))
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

impl Orphan {
    fn to_text(&self, acting: bool) -> String {
        let of = self
            .repo
            .as_ref()
            .map(|r| format!(" of {r}"))
            .unwrap_or_default();
        let ports = match self.ports.is_empty() {
            true => String::new(),
            false => format!(
                ", listening on {}",
                self.ports
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let what = format!(
            "pid {} ({}) in deleted worktree {}{of} ({}){ports}",
            self.pid, self.command, self.worktree, self.path
        );
        match (acting, self.stopped) {
            (_, Some(true)) => format!("stopped {what}\n"),
            (_, Some(false)) => format!("could not stop {what}\n"),
            (_, None) => format!(
                "would stop {what}; run `git worktree-ports prune --reap --yes` to stop it\n"
            ),
        }
    }
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
        let reg = ws.load_unlocked()?;
        let known = ws.known_worktrees(&reg)?;
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
fn dead(ws: &Workspace, reg: &Registry) -> anyhow::Result<Vec<Pruned>> {
    let mut gone = ws.gone_worktrees(reg, "")?;
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
