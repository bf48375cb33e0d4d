//! The repository as seen from here: git's worktrees (read once per command; a worktree moved
//! with `mv` is where we stand, not gone), the target worktree a command acts on (it must
//! exist), which registry entries are gone, and what a worktree holds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::model::config::{self, Config};
use crate::model::error::{Code, Error};
use crate::registry::{Ports, Registry};
use crate::render;
use crate::sys::git::{Repo, WorktreeInfo};

use super::{Workspace, warn};

/// A worktree a command acts on: it exists (its directory is there), and its config is read.
#[derive(Debug, Clone)]
pub struct Target {
    /// The worktree.
    pub wt: WorktreeInfo,
    /// Its `.worktree-ports/config.toml` (or the built-in services).
    pub config: Config,
    /// Its identity token ([`worktree_id`]), None before its first allocation.
    pub id: Option<String>,
}

/// What a worktree holds: its ports, and the names decided with them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holding {
    /// Service -> port.
    pub ports: BTreeMap<String, u16>,
    /// Its docker compose project name (kept in its record).
    pub compose_project_name: String,
    /// Its slot (kept in its record); None only for a record from before slots that a
    /// render-only command read.
    pub slot: Option<u32>,
    /// The worktree had no ports before this command gave them (its `[on] allocate` runs).
    pub fresh: bool,
    /// Its hostname (kept in its record); None only for a record from before hostnames.
    pub hostname: Option<String>,
    /// The main worktree got its first ports along with this one's (main-first): its
    /// `[on] allocate` runs too.
    pub main_fresh: bool,
}

impl Holding {
    /// What worktree `key` holds as the registry records it, without allocating (status,
    /// doctor, renders, `[on]` commands): its ports, and the names decided with them. A record
    /// written before compose names were kept has the name it was rendered with, which is the
    /// formula: this is the one place that falls back to it.
    pub fn recorded(reg: &Registry, key: &str, repo_name: &str) -> Holding {
        let record = reg.record(key);
        Holding {
            ports: reg.ports(key).map(Ports::to_map).unwrap_or_default(),
            compose_project_name: (record.as_ref())
                .and_then(|r| r.compose_project_name.clone())
                .unwrap_or_else(|| render::compose_project_name(repo_name, key)),
            slot: record.as_ref().and_then(|r| r.slot),
            fresh: false,
            hostname: record.and_then(|r| r.hostname),
            main_fresh: false,
        }
    }
}

/// Where a worktree's identity token lives, inside its own git dir (which git deletes with
/// the worktree, and never shares with a later worktree of the same name).
pub(super) const ID_FILE: &str = "worktree-ports/id";

/// The identity token of a worktree, if it has one.
pub fn worktree_id(wt: &WorktreeInfo) -> Option<String> {
    let text = std::fs::read_to_string(wt.git_dir.join(ID_FILE)).ok()?;
    let id = text.trim();
    (!id.is_empty()).then(|| id.to_string())
}

impl Target {
    /// (service, port, env var) in config order, then services the config no longer has.
    pub fn ordered(&self, ports: &BTreeMap<String, u16>) -> Vec<(String, u16, String)> {
        let config = &self.config;
        let mut out: Vec<(String, u16, String)> = config
            .services
            .iter()
            .filter_map(|s| Some((s.name.clone(), *ports.get(&s.name)?, s.env.clone())))
            .collect();
        for (name, port) in ports {
            if config.service(name).is_none() {
                out.push((name.clone(), *port, config::default_env_name(name)));
            }
        }
        out
    }

    /// (`WEB_PORT`, 8081) in the same order.
    pub fn vars(&self, ports: &BTreeMap<String, u16>) -> Vec<(String, u16)> {
        self.ordered(ports)
            .into_iter()
            .map(|(_, port, env)| (env, port))
            .collect()
    }
}

/// What to say about a worktree moved without git knowing.
pub fn moved_warning(wt: &WorktreeInfo, old: &Path) -> String {
    format!(
        "worktree {} was moved from {} to {} without git knowing; run `git worktree repair` in it (until then `git worktree prune` would unregister it, and `git worktree-ports prune` run elsewhere would give its ports away)",
        wt.key,
        old.display(),
        wt.path.display()
    )
}

/// The worktrees git lists, with the current one as it really is: a worktree moved with `mv`
/// is listed at its old path and as prunable, but we stand in it.
pub fn worktrees_seen_from_here(repo: &Repo) -> anyhow::Result<Vec<WorktreeInfo>> {
    let mut list = repo.worktrees()?;
    if let Ok(Some(here)) = repo.current()
        && here.moved_from.is_some()
        && let Some(w) = list.iter_mut().find(|w| w.key == here.key)
    {
        *w = here;
    }
    Ok(list)
}

/// WORKTREE_NOT_FOUND for a worktree git lists whose directory is gone.
pub(super) fn missing_dir(wt: &WorktreeInfo) -> anyhow::Error {
    Error::new(
        Code::WorktreeNotFound,
        format!(
            "worktree {} has no directory any more ({}); nothing was changed. If it was deleted, run `git worktree prune`, then `git worktree-ports prune` to give its ports back; if it was moved, run `git worktree repair <new path>`",
            wt.key,
            wt.path.display()
        ),
    )
    .with_details(json!({"worktree": wt.key, "path": wt.path.to_string_lossy()}))
    .into()
}

/// Resolve `spec` among git's worktrees: registry key first, then a path (the innermost
/// worktree containing it, comparing canonical paths), then git's own name.
pub fn find_worktree<'a>(spec: &str, worktrees: &'a [WorktreeInfo]) -> Option<&'a WorktreeInfo> {
    if let Some(w) = worktrees.iter().find(|w| w.key == spec) {
        return Some(w);
    }
    if let Ok(target) = Path::new(spec).canonicalize() {
        let best = worktrees
            .iter()
            .filter_map(|w| {
                let p = w.path.canonicalize().ok()?;
                target
                    .starts_with(&p)
                    .then_some((p.components().count(), w))
            })
            .max_by_key(|(depth, _)| *depth);
        if let Some((_, w)) = best {
            return Some(w);
        }
    }
    worktrees.iter().find(|w| w.name == spec)
}

/// Absolute form of a path argument, without requiring it to exist.
pub fn absolute(spec: &str) -> PathBuf {
    let p = Path::new(spec);
    let abs = std::env::current_dir()
        .map(|d| d.join(p))
        .unwrap_or_else(|_| p.to_path_buf());
    abs.canonicalize().unwrap_or(abs)
}

/// WORKTREE_NOT_FOUND listing what exists.
pub fn not_found(spec: &str, worktrees: &[WorktreeInfo]) -> anyhow::Error {
    let names: Vec<&str> = worktrees.iter().map(|w| w.key.as_str()).collect();
    Error::new(
        Code::WorktreeNotFound,
        format!(
            "no worktree named or containing {spec:?}; worktrees: {} (name one by its name or path)",
            if names.is_empty() { "none".to_string() } else { names.join(", ") }
        ),
    )
    .with_details(json!({"worktree": spec, "worktrees": names}))
    .into()
}

impl Workspace {
    /// git's worktrees as seen from here, read once per command: the main one first, and a
    /// worktree moved with `mv` where it is when we stand in it (git lists it at its old path,
    /// as prunable). Every rule that asks which worktrees exist asks this list, so no command
    /// calls the worktree it stands in gone.
    pub fn worktrees(&self) -> anyhow::Result<&[WorktreeInfo]> {
        if let Some(list) = self.worktrees.get() {
            return Ok(list);
        }
        let list = worktrees_seen_from_here(&self.repo)?;
        Ok(self.worktrees.get_or_init(|| list))
    }

    /// [`Workspace::worktrees`] read again, after a git command changed them (`add`).
    pub fn worktrees_after_git(&mut self) -> anyhow::Result<&[WorktreeInfo]> {
        self.worktrees = Default::default();
        self.worktrees()
    }

    /// Registry key of the current worktree, without listing worktrees (cheap on every
    /// backend).
    pub fn current_key(&self) -> anyhow::Result<String> {
        self.repo.current_key().ok_or_else(|| self.bare_error())
    }

    pub(super) fn bare_error(&self) -> anyhow::Error {
        Error::new(
            Code::BareRepository,
            format!(
                "{} is a bare repository with no working tree here; run this inside one of its worktrees, or name one (git worktree list shows them)",
                self.repo.common_dir().display()
            ),
        )
        .into()
    }

    /// The worktree named by `spec` (git name, `main`, or path), or the current one, as git
    /// knows it: its directory may be gone.
    pub fn worktree(&self, spec: Option<&str>) -> anyhow::Result<WorktreeInfo> {
        match spec {
            None => self.repo.current()?.ok_or_else(|| self.bare_error()),
            Some(spec) => {
                let worktrees = self.worktrees()?;
                find_worktree(spec, worktrees)
                    .cloned()
                    .ok_or_else(|| not_found(spec, worktrees))
            }
        }
    }

    /// The worktree named by `spec`, or the current one, to act on: it must exist. A worktree
    /// whose directory is gone is refused, never given the built-in services (its committed
    /// config cannot be read from a missing directory) and never re-created by a render.
    pub fn target(&self, spec: Option<&str>) -> anyhow::Result<Target> {
        self.target_of(self.worktree(spec)?)
    }

    /// [`Workspace::target`] for a worktree already resolved.
    pub fn target_of(&self, wt: WorktreeInfo) -> anyhow::Result<Target> {
        if !wt.path.is_dir() {
            return Err(missing_dir(&wt));
        }
        if let Some(old) = &wt.moved_from {
            warn(&moved_warning(&wt, old));
        }
        // Without a checkout the config is not on disk yet: take the one being checked out
        // (HEAD's), never the built-in services it would otherwise get and keep.
        let config = crate::sys::config_file::load_or(&wt.path, || {
            if self.repo.has_checkout(&wt) {
                return Ok(None);
            }
            let bytes = self.repo.file_at_head(&wt, config::CONFIG_PATH)?;
            Ok(bytes.map(|b| (b, PathBuf::from(format!("HEAD:{}", config::CONFIG_PATH)))))
        })?;
        let id = worktree_id(&wt);
        Ok(Target { wt, config, id })
    }

    /// The registry key `spec` names: the current worktree (None), a key in the registry, a
    /// git worktree (name or path), or the recorded path of a worktree git no longer has.
    /// Lists git's worktrees only when the key alone does not answer.
    pub fn registry_key(&self, reg: &Registry, spec: Option<&str>) -> anyhow::Result<String> {
        let Some(spec) = spec else {
            return self.current_key();
        };
        if reg.ports(spec).is_some() {
            return Ok(spec.to_string());
        }
        let worktrees = self.worktrees()?;
        if let Some(w) = find_worktree(spec, worktrees) {
            return Ok(w.key.clone());
        }
        reg.key_recorded_at(&absolute(spec))
            .map(str::to_string)
            .ok_or_else(|| not_found(spec, worktrees))
    }

    /// Registry entries whose worktree git no longer has, or reports prunable (directory
    /// gone, not locked), oldest allocation first, with why; never `except`.
    pub fn gone_worktrees(
        &self,
        reg: &Registry,
        except: &str,
    ) -> anyhow::Result<Vec<(String, &'static str)>> {
        let listed = self.worktrees()?;
        let mut gone: Vec<(String, String, &'static str)> = reg
            .keys()
            .into_iter()
            .filter(|k| *k != except)
            .filter_map(|k| {
                let why = match listed.iter().find(|w| w.key == k) {
                    None => "no longer a git worktree",
                    Some(w) if w.prunable => "directory deleted",
                    Some(_) => return None,
                };
                let at = reg.record(k).map(|r| r.allocated_at).unwrap_or_default();
                Some((at, k.to_string(), why))
            })
            .collect();
        gone.sort();
        Ok(gone.into_iter().map(|(_, k, why)| (k, why)).collect())
    }

    /// What worktree `key` holds as `reg` records it ([`Holding::recorded`]).
    pub fn holding(&self, reg: &Registry, key: &str) -> Holding {
        Holding::recorded(reg, key, &self.repo_name())
    }

    /// The repository's name, as templates see it.
    pub(super) fn repo_name(&self) -> String {
        render::repo_name(self.repo.common_dir())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wt(key: &str, name: &str, path: &Path) -> WorktreeInfo {
        WorktreeInfo {
            key: key.into(),
            name: name.into(),
            path: path.to_path_buf(),
            git_dir: path.join(".git"),
            branch: None,
            is_main: key == "main",
            locked: false,
            prunable: false,
            moved_from: None,
        }
    }

    #[test]
    fn finds_by_key_path_innermost_and_git_name() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("repo");
        let nested = main.join("trees/feature");
        std::fs::create_dir_all(nested.join("src")).unwrap();
        let list = vec![
            wt("main", "main", &main),
            wt("feature", "feature", &nested),
            wt("worktrees/main", "main", &dir.path().join("other")),
        ];
        assert_eq!(find_worktree("main", &list).unwrap().key, "main");
        assert_eq!(find_worktree("feature", &list).unwrap().key, "feature");
        let deep = nested.join("src");
        assert_eq!(
            find_worktree(deep.to_str().unwrap(), &list).unwrap().key,
            "feature"
        );
        assert_eq!(
            find_worktree(main.to_str().unwrap(), &list).unwrap().key,
            "main"
        );
        assert_eq!(
            find_worktree("worktrees/main", &list).unwrap().path,
            dir.path().join("other")
        );
        assert!(find_worktree("nope", &list).is_none());
    }
}
