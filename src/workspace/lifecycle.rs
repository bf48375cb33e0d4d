//! `[on] allocate` and `[on] release`: the user's commands around a worktree's ports
//! (`createdb app_{{ worktree.name }}`, `docker compose -p {{ compose_project_name }} down`).
//! The command is a tera template rendered with the template context, run by `sh -c` in the
//! worktree's directory with its port variables set. Its output goes to stderr (stdout is the
//! command's answer: `env`, `--json`). Callers run it outside every lock; a failure is
//! returned as a message, and undoes or blocks nothing. Also `exec`: a program run with the
//! worktree's variables.

use std::path::{Path, PathBuf};

use crate::model::error::{Code, Error};
use crate::registry::{Ports, Registry};
use crate::render::TemplateContext;
use crate::sys::git::WorktreeInfo;
use crate::sys::shell;

use super::{Holding, Target, Workspace, slot_var, template_context, warn};

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
    // Every value reaches the shell quoted (`{{ worktree.name }}` of `x$(touch y)` is
    // `'x$(touch y)'`): git allows `$`, `(` and `)` in names. `| safe` pastes one raw.
    tera.set_escape_fn(shell::quote_into);
    tera.autoescape_on(["command"]);
    let command = tera
        .add_raw_template("command", template)
        .and_then(|_| tera.render("command", &context))
        .map_err(|e| format!("[on] {} could not be rendered: {e}", event.as_str()))?;
    let mut env: Vec<(String, String)> = (vars.iter())
        .map(|(k, v)| (k.clone(), v.to_string()))
        .collect();
    env.extend([
        ("WORKTREE_NAME".to_string(), ctx.worktree.name.clone()),
        ("WORKTREE_PATH".to_string(), ctx.worktree.path.clone()),
        (
            "COMPOSE_PROJECT_NAME".to_string(),
            ctx.compose_project_name.clone(),
        ),
        (
            "WORKTREE_PORTS_EVENT".to_string(),
            event.as_str().to_string(),
        ),
    ]);
    let status = shell::run_sh(&command, dir, &env)
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

/// An `[on] release` command to run: what it runs, for which worktree, with which ports,
/// where.
#[derive(Debug)]
pub(super) struct ReleaseJob {
    pub(super) cmd: String,
    pub(super) target: Target,
    pub(super) held: Holding,
    pub(super) home: PathBuf,
}

impl Workspace {
    /// After a worktree first got its ports (and its files were rendered): its
    /// `[on] allocate` command, outside every lock. A failure is said, and changes nothing.
    pub fn after_allocation(&self, target: &Target, held: &Holding) {
        if held.main_fresh
            && let Some(main) =
                (self.worktrees().unwrap_or_default().iter()).find(|w| w.is_main && w.path.is_dir())
            && let Ok(main) = self.target_of(main.clone())
            && let Some(cmd) = &main.config.on.allocate
            && let Ok(view) = self.view()
            && let Some(ports) = view.ports(crate::sys::git::MAIN_KEY)
        {
            let main_held = Holding {
                ports,
                fresh: true,
                ..view.holding(crate::sys::git::MAIN_KEY)
            };
            self.run_on(Event::Allocate, cmd, &main, &main_held, &main.wt.path);
        }
        if !held.fresh {
            return;
        }
        if let Some(cmd) = &target.config.on.allocate {
            self.run_on(Event::Allocate, cmd, target, held, &target.wt.path);
        }
    }

    /// Before the ports of worktree `key` are given back (`remove`, `release`, `prune`): its
    /// `[on] release` command, outside every lock, in its directory, with the config there;
    /// for a worktree whose directory is gone, in and with the config of the current worktree
    /// (else the main one). A failure is said, and blocks nothing.
    pub fn before_release(&self, key: &str) {
        let Ok(view) = self.view() else {
            return;
        };
        if let Some(job) = self.release_job(&view.registry, key) {
            self.run_on(Event::Release, &job.cmd, &job.target, &job.held, &job.home);
        }
    }

    /// The `[on] release` command of worktree `key` as `reg` records it (its ports must
    /// still be there), or None when it has no ports or its config has no such command.
    pub(super) fn release_job(&self, reg: &Registry, key: &str) -> Option<ReleaseJob> {
        let ports = reg
            .ports(key)
            .map(Ports::to_map)
            .filter(|p| !p.is_empty())?;
        let record = reg.record(key);
        let listed = self.worktrees().unwrap_or_default();
        let wt = listed.iter().find(|w| w.key == key).cloned().or_else(|| {
            let r = record.as_ref()?;
            Some(WorktreeInfo {
                key: key.to_string(),
                name: key.to_string(),
                path: PathBuf::from(&r.path),
                git_dir: self.repo.common_dir().join("worktrees").join(key),
                branch: r.branch.clone(),
                is_main: key == crate::sys::git::MAIN_KEY,
                locked: false,
                prunable: true,
                moved_from: None,
            })
        });
        let wt = wt?;
        // Where the command runs, and whose config names it.
        let home = match wt.path.is_dir() {
            true => Some(wt.path.clone()),
            false => (self.repo.current().ok().flatten().map(|w| w.path))
                .filter(|p| p.is_dir())
                .or_else(|| {
                    listed
                        .iter()
                        .find(|w| w.is_main && w.path.is_dir())
                        .map(|w| w.path.clone())
                }),
        };
        let home = home?;
        let config = crate::sys::config_file::load(&home).ok()?;
        let cmd = config.on.release.clone()?;
        let held = Holding {
            ports,
            ..Holding::recorded(reg, key, &self.repo_name())
        };
        let target = Target {
            wt,
            config,
            id: None,
        };
        Some(ReleaseJob {
            cmd,
            target,
            held,
            home,
        })
    }

    pub(super) fn run_on(
        &self,
        event: Event,
        cmd: &str,
        target: &Target,
        held: &Holding,
        dir: &Path,
    ) {
        let ctx = template_context(self, target, held);
        let mut vars = target.vars(&held.ports);
        vars.extend(slot_var(held.slot));
        if let Err(why) = run(event, cmd, &ctx, &vars, dir) {
            let consequence = match event {
                Event::Allocate => "the ports stay allocated",
                Event::Release => "the ports are given back all the same",
            };
            warn(&format!("worktree {}: {why}; {consequence}", target.wt.key));
        }
    }

    /// Replace this process with `argv`, with the target's port variables, `WORKTREE_SLOT`
    /// and URL variables set (`exec`); returns only the error that kept it from starting.
    pub fn exec(&self, target: &Target, held: &Holding, argv: &[String]) -> anyhow::Error {
        let mut vars = target.vars(&held.ports);
        vars.extend(slot_var(held.slot));
        let urls = template_context(self, target, held).text_vars();
        let env: Vec<(String, String)> = (vars.into_iter())
            .map(|(k, v)| (k, v.to_string()))
            .chain(urls)
            .collect();
        let e = shell::exec(argv, &env);
        Error::new(
            Code::ExecFailed,
            format!(
                "could not run {}: {e} (is it installed and on PATH?)",
                argv[0]
            ),
        )
        .into()
    }
}
