//! `prune [--dry-run] [--json]`: drop the allocations of worktrees git no longer has, or whose
//! directory is gone and that are not locked. The worktree list is read under the registry
//! lock, so a worktree that allocates meanwhile is never mistaken for a dead one.
//!
//! `--reap [--yes]`: list the processes whose working directory is inside a worktree that no
//! longer exists (a dev server left running by a deleted worktree), with pid, command and
//! ports; with `--yes` stop them (SIGTERM, then SIGKILL after a grace period). Never a process
//! with a controlling terminal, never another user's, never anything outside a deleted
//! worktree.

use schemars::JsonSchema;
use serde::Serialize;

use crate::cli::PruneArgs;
use crate::commands::{Report, ports_inline};
use crate::workspace::{self, GoneRepository, Orphan, Pruned};

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

/// Run `prune`.
pub fn run(args: &PruneArgs) -> anyhow::Result<Report> {
    let done = workspace::prune(args.all, args.dry_run, args.reap, args.yes && !args.dry_run)?;
    let (pruned, gone_repos, reaped) = (done.pruned, done.repositories_gone, done.orphans);
    if args.json {
        return Ok(Report::answer(PruneAnswer {
            dry_run: args.dry_run,
            pruned,
            repositories_gone: gone_repos,
            orphans: args.reap.then_some(reaped),
        }));
    }
    let reap_text: String = reaped.iter().map(|o| orphan_text(o, args.yes)).collect();
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
    for GoneRepository {
        name,
        path,
        block,
        ports,
    } in &gone_repos
    {
        let held = match ports.is_empty() {
            true => String::new(),
            false => format!(
                " {}",
                (ports.iter().map(u16::to_string))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        out.push_str(&format!(
            "{} repository {name} ({path}, gone): its ports{held}{} are free again\n",
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

/// One orphan as a line of text.
fn orphan_text(o: &Orphan, acting: bool) -> String {
    let of = o
        .repo
        .as_ref()
        .map(|r| format!(" of {r}"))
        .unwrap_or_default();
    let ports = match o.ports.is_empty() {
        true => String::new(),
        false => format!(
            ", listening on {}",
            o.ports
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let what = format!(
        "pid {} ({}) in deleted worktree {}{of} ({}){ports}",
        o.pid, o.command, o.worktree, o.path
    );
    match (acting, o.stopped) {
        (_, Some(true)) => format!("stopped {what}\n"),
        (_, Some(false)) => format!("could not stop {what}\n"),
        (_, None) => {
            format!("would stop {what}; run `git worktree-ports prune --reap --yes` to stop it\n")
        }
    }
}
