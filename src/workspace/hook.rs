//! The post-checkout hook's use case: ports and files for a worktree `git worktree add` just
//! made.

use std::collections::BTreeMap;

use crate::sys::hooks::INSIDE_ADD_ENV;

use super::{Holding, Rendered, Target, Workspace};

/// A worktree the hook gave ports and files.
pub struct Checkout {
    /// Its repository.
    pub ws: Workspace,
    /// The worktree.
    pub target: Target,
    /// What it holds now.
    pub held: Holding,
    /// What was rendered.
    pub rendered: Rendered,
}

/// What the installed post-checkout hook does: for `git worktree add` only (old HEAD = the
/// null object id, a branch checkout), not inside our own `add`, the new worktree's ports and
/// files. None when there is nothing to do. `args` as git passes them (pre-commit passes
/// them in its own variables).
pub fn post_checkout(args: &[String]) -> anyhow::Result<Option<Checkout>> {
    // `git worktree-ports add` is running git: it allocates and renders itself, once.
    if std::env::var_os(INSIDE_ADD_ENV).is_some() {
        return Ok(None);
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
        return Ok(None);
    }
    let ws = Workspace::open()?;
    let target = ws.target(None)?;
    let held = ws.ensure_ports(&target, &BTreeMap::new())?;
    let rendered = ws.render(&target, &held, false)?;
    Ok(Some(Checkout {
        ws,
        target,
        held,
        rendered,
    }))
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
