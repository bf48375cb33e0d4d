//! `exec [-w <worktree>] -- <command> [args...]`: run a command with the worktree's port
//! variables set. On Unix the command replaces this process, so its exit code and signals
//! pass through untouched.

use std::process::Command;

use crate::cli::ExecArgs;
use crate::commands::{Report, env};
use crate::error::{Code, Error};

/// Run `exec`; returns only if the command could not be started (or, off Unix, when it ends).
pub fn run(args: &ExecArgs) -> anyhow::Result<Report> {
    let vars = env::vars(args.worktree.as_deref())?;
    let (program, rest) = args.command.split_first().expect("clap requires a command");
    let mut cmd = Command::new(program);
    cmd.args(rest)
        .envs(vars.iter().map(|(k, v)| (k, v.to_string())));
    let not_started = |e: std::io::Error| {
        Error::new(Code::IoError, format!("could not run {program}: {e}")).into()
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
