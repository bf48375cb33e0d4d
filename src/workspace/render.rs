//! Rendering a worktree's templates: the template context, which files a worktree should have,
//! plan and apply (under the lock when it writes), `render --all`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::machine::Machine;
use crate::model::error::{Code, Error};
use crate::registry::Lock;
use crate::render::{self, Plan, TemplateContext};
pub use crate::render::{FileAction, Rendered};

use super::{Holding, Target, Workspace, warn};

/// The proxy's port, once the proxy was set up on this machine (`proxy run` or `start`
/// records it in the state dir): templates then get proxy URLs.
pub fn proxy_port() -> Option<u16> {
    Machine::from_env().ok()?.proxy_port()
}

/// The template context of a worktree and what it holds (names and URLs included).
pub fn template_context(ws: &Workspace, target: &Target, held: &Holding) -> TemplateContext {
    let mut ctx = TemplateContext::new(
        &target.wt,
        ws.repo.common_dir(),
        &target.config,
        &held.ports,
        &held.compose_project_name,
    );
    ctx.slot = held.slot;
    ctx.with_hostname(held.hostname.as_deref(), proxy_port())
}

/// `WORKTREE_SLOT`, beside a worktree's port variables (`env`, `exec`, `[on]` commands).
pub fn slot_var(slot: Option<u32>) -> Option<(String, u16)> {
    Some(("WORKTREE_SLOT".to_string(), u16::try_from(slot?).ok()?))
}

/// A rendered file compared with what a render would write ([`Workspace::file_states`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FileState {
    /// It has the content a render would give it.
    UpToDate,
    /// A render would change (or remove) it.
    Stale,
    /// git tracks it: never written.
    Tracked,
    /// The main worktree was given ports by a linked worktree's allocation (main-first) and
    /// has not been rendered yet: `render` writes it.
    NotRendered,
}

impl Workspace {
    /// What rendering the target's templates with `ports` would write; writes nothing.
    pub fn plan_render(
        &self,
        target: &Target,
        held: &Holding,
        force: bool,
    ) -> anyhow::Result<Plan> {
        let wt = &target.wt;
        let tctx = template_context(self, target, held);
        render::plan(
            wt,
            &tctx,
            force,
            &|rels: &[PathBuf]| self.repo.tracked(wt, rels),
            &Workspace::peers,
        )
        .map_err(|e| {
            // `git worktree remove` takes no lock of ours: the directory may vanish mid-plan.
            if wt.path.is_dir() {
                return e;
            }
            Error::new(
                Code::WorktreeNotFound,
                format!(
                    "worktree {} ({}) was removed while rendering; nothing was written",
                    wt.key,
                    wt.path.display()
                ),
            )
            .into()
        })
    }

    /// Each file a render of the target would write, and how the file on disk compares; the
    /// one place that decides which files a worktree should have (`status`, `doctor`). The
    /// main worktree gets its ports with the first linked worktree's (main-first) but no files
    /// until it is itself allocated or rendered: until then its files are not expected, so
    /// never stale.
    pub fn file_states(
        &self,
        target: &Target,
        held: &Holding,
    ) -> anyhow::Result<Vec<(PathBuf, FileState)>> {
        let plan = self.plan_render(target, held, false)?;
        let expected = !target.wt.is_main || render::was_rendered(&target.wt);
        Ok(plan
            .files
            .into_iter()
            .map(|(path, action)| {
                let state = match action {
                    FileAction::Unchanged => FileState::UpToDate,
                    FileAction::SkippedTracked => FileState::Tracked,
                    FileAction::Written | FileAction::Removed if !expected => {
                        FileState::NotRendered
                    }
                    FileAction::Written | FileAction::Removed => FileState::Stale,
                };
                (path, state)
            })
            .collect())
    }

    /// Carry out a plan, keep its files out of `git status`, and print its warnings.
    ///
    /// A plan that writes takes the lock for its writes, so that they never interleave with a
    /// `remove` (which holds it while git deletes the worktree: a file written into a
    /// directory git is deleting made git fail with "Directory not empty") or with
    /// `render --all`. A plan with nothing to write takes no lock.
    pub fn apply_render(&self, plan: Plan) -> anyhow::Result<Rendered> {
        if plan.is_up_to_date() {
            return self.apply_render_with(plan, None);
        }
        let lock = self.lock()?;
        self.apply_render_with(plan, Some(&lock))
    }

    /// [`Workspace::apply_render`] for a caller that may hold the lock already (a second
    /// lock of the same file from this process would wait for itself).
    pub(super) fn apply_render_with(
        &self,
        mut plan: Plan,
        lock_taken: Option<&Lock>,
    ) -> anyhow::Result<Rendered> {
        plan.manifest_mode = self.git_dir_mode()?;
        let rendered = render::apply(plan)?;
        rendered.warnings.iter().for_each(|w| warn(w));
        let wanted = render::exclude_patterns(&rendered.exclude);
        // A deleted template's output was removed here: its line goes too, once no other
        // worktree's last render wrote that path (info/exclude is shared by all of them).
        let removed: Vec<PathBuf> = (rendered.files.iter())
            .filter(|(_, a)| *a == render::FileAction::Removed)
            .map(|(rel, _)| rel.clone())
            .collect();
        let mut unwanted = BTreeSet::new();
        if !removed.is_empty() {
            // (This worktree's manifest no longer lists them.)
            let elsewhere: BTreeSet<PathBuf> = (self.worktrees()?.iter())
                .flat_map(render::rendered_paths)
                .collect();
            let gone: Vec<PathBuf> = (removed.into_iter())
                .filter(|rel| !elsewhere.contains(rel))
                .collect();
            unwanted =
                render::present_excludes(self.repo.common_dir(), &render::exclude_patterns(&gone));
            unwanted.remove(render::TEMP_EXCLUDE);
        }
        if !render::missing_excludes(self.repo.common_dir(), &wanted).is_empty()
            || !unwanted.is_empty()
        {
            // info/exclude is shared by every worktree: parallel renders must not lose lines.
            let _lock = match lock_taken {
                Some(_) => None,
                None => Some(self.lock()?),
            };
            render::update_excludes(self.repo.common_dir(), &wanted, &unwanted)?;
        }
        Ok(rendered)
    }

    /// Re-render every worktree that has ports, with the ports it has: decided and written
    /// under the lock, so a `release` or `remove` running meanwhile is seen, and never an
    /// allocation (a worktree released a moment ago gets nothing back; one whose directory is
    /// gone is skipped). Services the config has and the worktree does not are reported.
    pub fn render_every_worktree(&self, force: bool) -> anyhow::Result<Vec<(Target, Rendered)>> {
        let lock = self.lock()?;
        let view = self.view_of(self.load_locked(&lock, None)?);
        let mut out = Vec::new();
        let worktrees = view.worktrees()?;
        let mut progress = crate::output::progress::Progress::new("render", worktrees.len());
        for (i, wt) in worktrees.iter().enumerate() {
            progress.step(i, &wt.key);
            if wt.prunable || !wt.path.is_dir() {
                continue;
            }
            let Some(ports) = view.ports(&wt.key) else {
                continue;
            };
            // `git worktree remove` takes no lock of ours: a worktree may vanish while we render.
            // That one is skipped, the others are rendered.
            let vanished = |e: anyhow::Error, path: &Path| -> anyhow::Result<()> {
                if path.is_dir() {
                    return Err(e);
                }
                warn(&format!(
                    "skipped {}: it was removed while rendering",
                    path.display()
                ));
                Ok(())
            };
            let path = wt.path.clone();
            let target = match self.target_of(wt.clone()) {
                Ok(t) => t,
                Err(e) => {
                    vanished(e, &path)?;
                    continue;
                }
            };
            // An entry of another identity is a dead worktree's, not this one's to render.
            let owner = view.registry.record(&target.wt.key).and_then(|r| r.id);
            if owner.is_some() && owner != target.id {
                continue;
            }
            let missing: Vec<&str> = (target.config.services.iter())
                .filter(|s| !ports.contains_key(&s.name))
                .map(|s| s.name.as_str())
                .collect();
            if !missing.is_empty() {
                warn(&format!(
                    "worktree {} has no port for {} (the config gained services); run `git worktree-ports allocate` in it",
                    target.wt.key,
                    missing.join(", ")
                ));
            }
            let held = Holding {
                ports,
                ..view.holding(&target.wt.key)
            };
            let rendered = match self
                .plan_render(&target, &held, force)
                .and_then(|plan| self.apply_render_with(plan, Some(&lock)))
            {
                Ok(r) => r,
                Err(e) => {
                    vanished(e, &path)?;
                    continue;
                }
            };
            out.push((target, rendered));
        }
        Ok(out)
    }

    /// Plan, then apply.
    pub fn render(&self, target: &Target, held: &Holding, force: bool) -> anyhow::Result<Rendered> {
        let plan = self.plan_render(target, held, force)?;
        self.apply_render(plan)
    }
}
