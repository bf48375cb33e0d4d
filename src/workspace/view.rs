//! The repository as seen from here: git's worktrees (read once per command; a worktree moved
//! with `mv` is where we stand, not gone), the target worktree a command acts on (it must
//! exist), which registry entries are gone, and what a worktree holds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::model::config::{self, Config};
use crate::model::error::{Code, Details, Error, NoSuchWorktree, WorktreeGone};
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

/// The repository as one command sees it, read once: git's worktrees as seen from here (a
/// worktree moved with `mv` that we stand in is where it is) and the registry (read without
/// the lock, or the one a caller holds the lock for). Every question a use case asks of
/// both is answered here, from those two reads: which entries are live, moved or gone and
/// why, what a worktree holds (one fallback for old records), which worktrees a process may
/// run in (attribution), and a worktree named by a user.
pub struct RepoView<'w> {
    ws: &'w Workspace,
    /// The registry as read.
    pub registry: Registry,
}

impl<'w> RepoView<'w> {
    /// git's worktrees as seen from here (read once per command: [`Workspace::worktrees`]).
    pub fn worktrees(&self) -> anyhow::Result<&'w [WorktreeInfo]> {
        self.ws.worktrees()
    }

    /// Every entry (a port or a record), in name order: where it is, whether its directory is
    /// there, moved, or gone and why ([`entries`]).
    pub fn entries(&self) -> anyhow::Result<Vec<Entry>> {
        let listed: Vec<(WorktreeInfo, bool)> = (self.worktrees()?.iter())
            .map(|w| (w.clone(), w.path.exists()))
            .collect();
        Ok(entries(&self.registry, &listed))
    }

    /// Entries whose worktree is gone, oldest allocation first, with why; never `except`
    /// ([`gone_entries`]).
    pub fn gone(&self, except: &str) -> anyhow::Result<Vec<(String, &'static str)>> {
        Ok(gone_entries(&self.registry, self.worktrees()?, except))
    }

    /// What worktree `key` holds as the registry records it ([`Holding::recorded`]).
    pub fn holding(&self, key: &str) -> Holding {
        Holding::recorded(&self.registry, key, &self.ws.repo_name())
    }

    /// The ports `key` holds, when it has an entry.
    pub fn ports(&self, key: &str) -> Option<BTreeMap<String, u16>> {
        self.registry.ports(key).map(Ports::to_map)
    }

    /// Every worktree of this repository a process may run in (attribution).
    pub fn known_worktrees(&self) -> anyhow::Result<Vec<crate::model::attribution::KnownWorktree>> {
        self.ws.known_worktrees(&self.registry)
    }

    /// The registry key of the worktree `spec` names (or the current one): git's worktrees,
    /// then a path an entry recorded.
    pub fn key(&self, spec: Option<&str>) -> anyhow::Result<String> {
        self.ws.registry_key(&self.registry, spec)
    }

    /// The workspace it was read from.
    pub fn workspace(&self) -> &'w Workspace {
        self.ws
    }
}

impl Workspace {
    /// The repository as this command sees it ([`RepoView`]), the registry read without the
    /// lock (a rename gives a whole file).
    pub fn view(&self) -> anyhow::Result<RepoView<'_>> {
        Ok(self.view_of(self.load_unlocked()?))
    }

    /// [`RepoView`] over a registry the caller read (under its lock).
    pub fn view_of(&self, registry: Registry) -> RepoView<'_> {
        RepoView { ws: self, registry }
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
    .with(Details::WorktreeGone(WorktreeGone {
        worktree: wt.key.clone(),
        path: wt.path.to_string_lossy().into_owned(),
    }))
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
    .with(Details::NoSuchWorktree(NoSuchWorktree {
        worktree: spec.to_string(),
        worktrees: names.iter().map(|n| n.to_string()).collect(),
    }))
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

    /// The worktrees a git command (`add`) made: those whose keys were not in `before`
    /// ([`crate::sys::git::Repo::worktree_keys`], taken before it ran). Only theirs are read
    /// where the backend allows (200 worktrees read cost `add` 2-3 ms); the whole list is read
    /// again when next asked.
    pub fn worktrees_new_since(&mut self, before: &[String]) -> anyhow::Result<Vec<WorktreeInfo>> {
        self.worktrees = Default::default();
        if let Some(new) = self.repo.linked_worktrees_except(before) {
            return Ok(new);
        }
        Ok((self.worktrees()?.iter())
            .filter(|w| !before.contains(&w.key))
            .cloned()
            .collect())
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
                "{} is a bare repository with no working tree here; run this inside one of its worktrees, or name one (`git worktree list` shows them)",
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

    /// The registry key of the worktree `spec` names (or the current one) and its ports, for a
    /// reader of one worktree (`get`): a registry key or the current worktree is answered
    /// from a scan of `ports.json` that builds no other entry
    /// ([`crate::registry::ports_of_unlocked`]);
    /// anything else (a path, a branch, a file the scan is unsure of) reads the registry whole,
    /// as [`Workspace::view`] does.
    pub fn ports_of(
        &self,
        spec: Option<&str>,
    ) -> anyhow::Result<(String, Option<BTreeMap<String, u16>>)> {
        use crate::registry::one::One;
        let key = match spec {
            Some(s) => s.to_string(),
            None => self.current_key()?,
        };
        match (crate::registry::ports_of_unlocked(&self.paths, &key), spec) {
            (Some(One::Ports(ports)), _) => return Ok((key, Some(ports))),
            // The current worktree, not in a sound registry: it has none.
            (Some(One::Absent), None) => return Ok((key, None)),
            _ => {}
        }
        let view = self.view()?;
        let key = view.key(spec)?;
        let held = view.ports(&key);
        super::dispose(view.registry);
        Ok((key, held))
    }

    /// The repository's name, as templates see it.
    pub(super) fn repo_name(&self) -> String {
        render::repo_name(self.repo.common_dir())
    }
}

/// Why a registry entry's worktree is gone.
pub fn gone_reason(listed: Option<&WorktreeInfo>) -> Option<&'static str> {
    match listed {
        None => Some("no longer a git worktree"),
        Some(w) if w.prunable => Some("directory deleted"),
        Some(_) => None,
    }
}

/// The entries of `reg` whose worktree is gone (git no longer has it, or reports it prunable:
/// directory deleted, not locked), oldest allocation first, with why; never `except`. PURE:
/// `listed` is git's list as seen from here (a worktree moved with `mv` that we stand in is
/// not prunable there).
pub fn gone_entries(
    reg: &Registry,
    listed: &[WorktreeInfo],
    except: &str,
) -> Vec<(String, &'static str)> {
    let mut gone: Vec<(String, String, &'static str)> = (reg.keys().into_iter())
        .filter(|k| *k != except)
        .filter_map(|k| {
            let why = gone_reason(listed.iter().find(|w| w.key == k))?;
            let at = reg.record(k).map(|r| r.allocated_at).unwrap_or_default();
            Some((at, k.to_string(), why))
        })
        .collect();
    gone.sort();
    gone.into_iter().map(|(_, k, why)| (k, why)).collect()
}

/// One registry entry as seen from here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its registry key.
    pub key: String,
    /// Where the worktree is (git's path, else the recorded one).
    pub path: String,
    /// Its branch (git's, else the recorded one).
    pub branch: Option<String>,
    /// Its slot.
    pub slot: Option<u32>,
    /// Its hostname.
    pub hostname: Option<String>,
    /// Service -> port.
    pub ports: BTreeMap<String, u16>,
    /// Its directory is there (git has it, not prunable, and the path exists).
    pub exists: bool,
    /// Moved with `mv` without git knowing (we stand in it).
    pub moved: bool,
    /// Gone, and why (what `prune` drops).
    pub gone: Option<&'static str>,
}

/// Every entry of `reg` (a port or a record), in name order, against `listed`: git's
/// worktrees as seen from here, each with whether its directory exists. PURE.
pub fn entries(reg: &Registry, listed: &[(WorktreeInfo, bool)]) -> Vec<Entry> {
    (reg.keys().into_iter())
        .map(|key| {
            let live = listed.iter().find(|(w, _)| w.key == key);
            let record = reg.record(key);
            Entry {
                key: key.to_string(),
                path: live
                    .map(|(w, _)| w.path.to_string_lossy().into_owned())
                    .or_else(|| record.as_ref().map(|r| r.path.clone()))
                    .unwrap_or_default(),
                branch: match live {
                    Some((w, _)) => w.branch.clone(),
                    None => record.as_ref().and_then(|r| r.branch.clone()),
                },
                slot: record.as_ref().and_then(|r| r.slot),
                hostname: record.as_ref().and_then(|r| r.hostname.clone()),
                ports: reg.ports(key).map(Ports::to_map).unwrap_or_default(),
                exists: live.is_some_and(|(w, there)| !w.prunable && *there),
                moved: live.is_some_and(|(w, _)| w.moved_from.is_some()),
                gone: gone_reason(live.map(|(w, _)| w)),
            }
        })
        .collect()
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

    fn registry(entries: &[(&str, u16, &str)]) -> Registry {
        let mut reg = Registry::default();
        for (key, port, at) in entries {
            reg.set_record(
                key,
                &crate::registry::WorktreeRecord {
                    path: format!("/recorded/{key}"),
                    branch: Some(format!("{key}-branch")),
                    allocated_at: at.to_string(),
                    id: None,
                    compose_project_name: None,
                    slot: None,
                    hostname: None,
                    extra: Default::default(),
                },
            );
            reg.set_ports(key, &[("web".to_string(), *port)].into())
                .unwrap();
        }
        reg
    }

    /// The read model decided on data built in memory: live, moved, locked with its
    /// directory missing (kept), prunable and unlisted entries (gone, oldest first).
    #[test]
    fn entries_are_live_moved_or_gone_and_gone_ones_come_oldest_first() {
        let reg = registry(&[
            ("main", 8080, "2026-01-01T00:00:00Z"),
            ("moved", 8081, "2026-01-02T00:00:00Z"),
            ("locked", 8082, "2026-01-03T00:00:00Z"),
            ("deleted", 8083, "2026-01-05T00:00:00Z"),
            ("unlisted", 8084, "2026-01-04T00:00:00Z"),
        ]);
        let mut moved = wt("moved", "moved", Path::new("/here/moved"));
        moved.moved_from = Some(PathBuf::from("/old/moved"));
        let mut locked = wt("locked", "locked", Path::new("/usb/locked"));
        locked.locked = true;
        let mut deleted = wt("deleted", "deleted", Path::new("/x/deleted"));
        deleted.prunable = true;
        let listed = [
            (wt("main", "main", Path::new("/repo")), true),
            (moved, true),
            (locked, false),
            (deleted, false),
        ];
        let list: Vec<WorktreeInfo> = listed.iter().map(|(w, _)| w.clone()).collect();
        assert_eq!(
            gone_entries(&reg, &list, ""),
            [
                ("unlisted".to_string(), "no longer a git worktree"),
                ("deleted".to_string(), "directory deleted"),
            ]
        );
        assert_eq!(gone_entries(&reg, &list, "unlisted").len(), 1);
        let e = entries(&reg, &listed);
        let by = |k: &str| e.iter().find(|e| e.key == k).unwrap().clone();
        assert_eq!(
            e.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(),
            ["deleted", "locked", "main", "moved", "unlisted"]
        );
        assert!(by("main").exists && !by("main").moved && by("main").gone.is_none());
        assert_eq!(by("main").path, "/repo");
        assert!(by("moved").exists && by("moved").moved && by("moved").gone.is_none());
        assert!(!by("locked").exists && by("locked").gone.is_none());
        assert_eq!(by("deleted").gone, Some("directory deleted"));
        let unlisted = by("unlisted");
        assert_eq!(
            (unlisted.path.as_str(), unlisted.branch.as_deref()),
            ("/recorded/unlisted", Some("unlisted-branch"))
        );
        assert_eq!(unlisted.ports["web"], 8084);
    }
}
