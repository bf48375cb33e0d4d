//! `hook post-checkout <old> <new> <flag>` (internal): what the installed hook runs.
//!
//! Only `git worktree add` (old HEAD = the null object id, branch checkout) does anything:
//! allocate and render for the new worktree, quietly (one summary line on stderr). It never
//! fails: every problem is one warning line and exit 0, because a failing post-checkout hook
//! makes `git worktree add` report failure for a worktree that was created anyway.

use crate::cli::{HookArgs, HookKind};
use crate::commands::{Report, ports_inline, written_files};
use crate::model::error::classify;
use crate::workspace::{self, warn};

/// Run `hook`; always succeeds.
pub fn run(args: &HookArgs) -> Report {
    let HookKind::PostCheckout { args } = &args.kind;
    if let Err(err) = post_checkout(args) {
        warn(&format!(
            "this worktree got no ports: {}; run `git worktree-ports allocate` in it",
            classify(&err).message
        ));
    }
    Report::ok(String::new())
}

fn post_checkout(args: &[String]) -> anyhow::Result<()> {
    let Some(workspace::Checkout {
        ws,
        target,
        held,
        rendered,
    }) = workspace::post_checkout(args)?
    else {
        return Ok(());
    };
    ws.after_allocation(&target, &held);
    let written: Vec<String> = written_files(&rendered)
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let files = if written.is_empty() {
        String::new()
    } else {
        format!("; wrote {}", written.join(", "))
    };
    eprintln!(
        "git-worktree-ports: {}: {}{files}",
        target.wt.key,
        ports_inline(&held.ports)
    );
    Ok(())
}
