//! `hook post-checkout <old> <new> <flag>` (internal): what the installed hook runs.
//!
//! Only `git worktree add` (old HEAD = the null object id, branch checkout) does anything:
//! allocate and render for the new worktree, quietly (one summary line on stderr). It never
//! fails: every problem is one warning line and exit 0, because a failing post-checkout hook
//! makes `git worktree add` report failure for a worktree that was created anyway.

use std::collections::BTreeMap;

use crate::cli::{HookArgs, HookKind};
use crate::commands::{Report, ports_inline, written_files};
use crate::model::error::classify;
use crate::sys::hooks::INSIDE_ADD_ENV;
use crate::workspace::{Workspace, warn};

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
    // `git worktree-ports add` is running git: it allocates and renders itself, once.
    if std::env::var_os(INSIDE_ADD_ENV).is_some() {
        return Ok(());
    }
    // pre-commit passes the arguments in its own variables.
    let arg = |i: usize, var: &str| {
        args.get(i)
            .cloned()
            .or_else(|| std::env::var(var).ok())
            .unwrap_or_default()
    };
    let old = arg(0, "PRE_COMMIT_FROM_REF");
    let flag = arg(2, "PRE_COMMIT_CHECKOUT_TYPE");
    if !is_null_oid(&old) || flag != "1" {
        return Ok(());
    }
    let ws = Workspace::open()?;
    let target = ws.target(None)?;
    let held = ws.ensure_ports(&target, &BTreeMap::new())?;
    let rendered = ws.render(&target, &held, false)?;
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

/// All zeros, of SHA-1 (40) or SHA-256 (64) length.
fn is_null_oid(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b == b'0')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_oids_of_both_lengths() {
        assert!(is_null_oid(&"0".repeat(40)));
        assert!(is_null_oid(&"0".repeat(64)));
        assert!(!is_null_oid(&"0".repeat(39)));
        assert!(!is_null_oid(""));
        assert!(!is_null_oid(&format!("{}1", "0".repeat(39))));
    }
}
