//! `add [<git worktree add options>] <path> [<commit-ish>] [--port S=P]... [--no-render]
//! [--json]`: the real `git worktree add`, then allocate, then render.
//!
//! Atomic from the user's view: if git fails, nothing is allocated; if allocation fails, the
//! new worktree (and a branch `-b` created) is removed again. If rendering fails, worktree and
//! ports stay and the error says how to re-render. The registry lock is never held while git
//! runs: git runs the post-checkout hook, which takes it.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};

use crate::allocate::Want;
use crate::cli::{AddArgs, AddOptions};
use crate::commands::{Ctx, Report, allocate, find_worktree, git_worktree, warn};
use crate::config::Config;
use crate::error::{Code, Error};

/// Set for the `git worktree add` this command runs, so our own post-checkout hook leaves
/// allocation and rendering to this command (one allocation, one render).
pub const INSIDE_ADD_ENV: &str = "GIT_WORKTREE_PORTS_INSIDE_ADD";

/// Run `add`.
pub fn run(args: &AddArgs) -> anyhow::Result<Report> {
    let opts = AddOptions::from_raw(&args.args).map_err(|m| Error::new(Code::GitFailed, m))?;
    let ctx = Ctx::open()?;
    let before: Vec<String> = ctx.repo.worktrees()?.into_iter().map(|w| w.key).collect();
    let branch_existed = opts.new_branch.as_deref().map(branch_exists);

    let mut args: Vec<std::ffi::OsString> = vec!["add".into()];
    args.extend(opts.git_args.iter().map(Into::into));
    let status = git_worktree(&args, Some((INSIDE_ADD_ENV, "1")))?;
    if !status.success() {
        return Err(Error::new(
            Code::GitFailed,
            format!("git worktree add failed ({status}); nothing was allocated"),
        )
        .into());
    }

    let path = opts.path.as_deref().expect("validated: add has a path");
    let after = ctx.repo.worktrees()?;
    let wt = find_worktree(path, &after)
        .filter(|w| !before.contains(&w.key))
        .or_else(|| {
            let new: Vec<_> = after.iter().filter(|w| !before.contains(&w.key)).collect();
            (new.len() == 1).then(|| new[0])
        })
        .cloned()
        .ok_or_else(|| {
            Error::new(
                Code::GitFailed,
                format!("git worktree add succeeded, but no new worktree is at {path}; run `git worktree-ports allocate` inside it"),
            )
        })?;

    let wants: BTreeMap<String, Want> = opts
        .ports
        .iter()
        .map(|p| (p.service.clone(), p.want))
        .collect();
    let allocated = Config::load(&wt.path).and_then(|config| {
        let ports = allocate::ensure(&ctx, &wt, &config, &wants)?;
        Ok((config, ports))
    });
    let (config, ports) = match allocated {
        Ok(v) => v,
        Err(err) => {
            rollback(
                &wt.path,
                opts.new_branch.as_deref(),
                branch_existed == Some(false),
            );
            return Err(err);
        }
    };
    allocate::render_and_report(&ctx, &wt, &config, &ports, !opts.no_render, opts.json)
}

fn branch_exists(name: &str) -> bool {
    Command::new("git")
        .args(["show-ref", "--verify", "--quiet"])
        .arg(format!("refs/heads/{name}"))
        .status()
        .is_ok_and(|s| s.success())
}

/// Undo `git worktree add` after a failed allocation.
fn rollback(path: &std::path::Path, branch: Option<&str>, delete_branch: bool) {
    let removed = Command::new("git")
        .args(["worktree", "remove", "--force"])
        .arg(path)
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !removed {
        warn(&format!(
            "could not remove the new worktree {} again; remove it with `git worktree remove --force {}`",
            path.display(),
            path.display()
        ));
        return;
    }
    let mut what = format!("removed the new worktree {} again", path.display());
    if let (Some(b), true) = (branch, delete_branch) {
        let deleted = Command::new("git")
            .args(["branch", "-D", "--quiet", b])
            .status()
            .is_ok_and(|s| s.success());
        if deleted {
            what.push_str(&format!(" and deleted its new branch {b}"));
        }
    }
    warn(&what);
}
