//! `exec [-w <worktree>] -- <command> [args...]`: run a command with the worktree's port
//! variables set, allocating first when it has none. On Unix the command replaces this
//! process, so its exit code and signals pass through untouched.

use std::collections::BTreeMap;
use std::process::Command;

use crate::cli::ExecArgs;
use crate::commands::{Report, slot_var};
use crate::model::error::{Code, Error};
use crate::workspace::{Workspace, template_context};

/// Run `exec`; returns only if the command could not be started (or, off Unix, when it ends).
pub fn run(args: &ExecArgs) -> anyhow::Result<Report> {
    let ws = Workspace::open()?;
    let target = ws.target(args.worktree.as_deref())?;
    let held = ws.ensure_ports(&target, &BTreeMap::new())?;
    ws.after_allocation(&target, &held);
    let mut vars = target.vars(&held.ports);
    vars.extend(slot_var(held.slot));
    let urls = template_context(&ws, &target, &held).url_vars();
    let (program, rest) = args.command.split_first().expect("clap requires a command");
    let mut cmd = Command::new(program);
    cmd.args(rest)
        .envs(vars.iter().map(|(k, v)| (k, v.to_string())))
        .envs(urls);
    let not_started = |e: std::io::Error| {
        Error::new(
            Code::ExecFailed,
            format!("could not run {program}: {e} (is it installed and on PATH?)"),
        )
        .into()
    };
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        Err(not_started(cmd.exec()))
    }
    #[cfg(not(unix))]
    {
        let status = cmd.status().map_err(not_started)?;
        std::process::exit(status.code().unwrap_or(1));
    }
}
