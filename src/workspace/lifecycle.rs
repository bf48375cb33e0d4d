//! `[on] allocate` and `[on] release`: the user's commands around a worktree's ports
//! (`createdb app_{{ worktree.name }}`, `docker compose -p {{ compose_project_name }} down`).
//! The command is a tera template rendered with the template context, run by `sh -c` in the
//! worktree's directory with its port variables set. Its output goes to stderr (stdout is the
//! command's answer: `env`, `--json`). Callers run it outside every lock; a failure is
//! returned as a message, and undoes or blocks nothing.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::render::TemplateContext;

/// Which moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A worktree got its ports.
    Allocate,
    /// A worktree's ports are about to be given back.
    Release,
}

impl Event {
    /// `allocate`, `release`.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Allocate => "allocate",
            Event::Release => "release",
        }
    }
}

/// Render `template` with `ctx` and run it in `dir` with `vars` (and `WORKTREE_NAME`,
/// `WORKTREE_PATH`, `COMPOSE_PROJECT_NAME`, `WORKTREE_PORTS_EVENT`). Err: what to tell the
/// user.
pub fn run(
    event: Event,
    template: &str,
    ctx: &TemplateContext,
    vars: &[(String, u16)],
    dir: &Path,
) -> Result<(), String> {
    let context = tera::Context::from_serialize(ctx).map_err(|e| e.to_string())?;
    let mut tera = tera::Tera::default();
    let command = tera
        .add_raw_template("command", template)
        .and_then(|_| tera.render("command", &context))
        .map_err(|e| format!("[on] {} could not be rendered: {e}", event.as_str()))?;
    let stdout = {
        use std::os::fd::AsFd;
        (std::io::stderr().as_fd().try_clone_to_owned()).map_or_else(|_| Stdio::null(), Stdio::from)
    };
    let status = Command::new("sh")
        .arg("-c")
        .arg(&command)
        .current_dir(dir)
        .envs(vars.iter().map(|(k, v)| (k, v.to_string())))
        .env("WORKTREE_NAME", &ctx.worktree.name)
        .env("WORKTREE_PATH", &ctx.worktree.path)
        .env("COMPOSE_PROJECT_NAME", &ctx.compose_project_name)
        .env("WORKTREE_PORTS_EVENT", event.as_str())
        .stdin(Stdio::null())
        .stdout(stdout)
        .status()
        .map_err(|e| format!("[on] {} could not run `{command}`: {e}", event.as_str()))?;
    match status.code() {
        Some(0) => Ok(()),
        Some(code) => Err(format!(
            "[on] {} command `{command}` failed with exit code {code}",
            event.as_str()
        )),
        None => Err(format!(
            "[on] {} command `{command}` was killed by a signal",
            event.as_str()
        )),
    }
}
