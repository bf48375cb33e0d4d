//! One file per subcommand; the only layer that combines git, config, registry, allocator and
//! probe. Commands return a [`Report`] (what goes to stdout, and whether it is a failure);
//! warnings go to stderr as they happen.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::error::{Code, Error};
use crate::git::{Repo, WorktreeInfo};
use crate::registry::{self, Loaded, Lock, Paths, Registry};

pub mod add;
pub mod allocate;
pub mod check;
pub mod env;
pub mod exec;
pub mod get;
pub mod hook;
pub mod hooks;
pub mod init;
pub mod list;
pub mod prune;
pub mod release;
pub mod remove;
pub mod render;
pub mod repair;

/// What a command produced.
#[derive(Debug, Default)]
pub struct Report {
    /// Text for stdout.
    pub stdout: String,
    /// False when the command ran but its answer is "no" (`check` of a busy port): exit 1.
    pub success: bool,
}

impl Report {
    /// A successful report.
    pub fn ok(stdout: String) -> Report {
        Report {
            stdout,
            success: true,
        }
    }

    /// Pretty JSON followed by a newline.
    pub fn json(value: &serde_json::Value) -> Report {
        Report::ok(format!(
            "{}\n",
            serde_json::to_string_pretty(value).expect("json")
        ))
    }
}

/// Run `git worktree <args>` as the user would, its output on our stderr: git's chatter must
/// not mix into our stdout (JSON with --json). Never call it holding the registry lock: git
/// runs the post-checkout hook, which takes it.
pub fn git_worktree(
    args: &[std::ffi::OsString],
    env: Option<(&str, &str)>,
) -> anyhow::Result<std::process::ExitStatus> {
    use std::os::fd::AsFd;
    let stderr = std::io::stderr().as_fd().try_clone_to_owned()?;
    let mut cmd = std::process::Command::new("git");
    cmd.arg("worktree").args(args).stdout(stderr);
    if let Some((k, v)) = env {
        cmd.env(k, v);
    }
    cmd.status()
        .map_err(|e| Error::new(Code::GitFailed, format!("could not run git: {e}")).into())
}

/// Print a warning on stderr.
pub fn warn(msg: &str) {
    eprintln!("git-worktree-ports: warning: {msg}");
}

/// Let go of a registry the command is done with. A large one is freed on another thread: a
/// 10,000-worktree registry is 40,000 allocations, 1.6 ms to free, and the process is about
/// to exit. Small ones (a thread costs more than they do) are freed here.
pub fn dispose(registry: Registry) {
    if registry.allocated_ports.len() + registry.worktrees.len() > 2_000 {
        // A thread that cannot start drops the registry here instead.
        let _ = std::thread::Builder::new().spawn(move || drop(registry));
    }
}

/// The repository a command works on and its registry files.
pub struct Ctx {
    /// The repository.
    pub repo: Repo,
    /// Its registry.
    pub paths: Paths,
}

impl Ctx {
    /// Open the repository of the current directory.
    pub fn open() -> anyhow::Result<Ctx> {
        let repo = Repo::discover()?;
        let paths = Paths::new(repo.common_dir());
        Ok(Ctx { repo, paths })
    }

    /// Take the registry lock, saying so when it takes a while.
    pub fn lock(&self) -> anyhow::Result<Lock> {
        let timeout = registry::lock_timeout()?;
        Lock::acquire(&self.paths, timeout, &|path| {
            eprintln!("git-worktree-ports: waiting for lock on {}", path.display());
        })
    }

    /// The registry under `lock`, printing recovery warnings: `unlocked` itself when the
    /// file it was read from is still the registry (`Lock::reload`), else a fresh load.
    pub fn load_locked(&self, lock: &Lock, unlocked: Option<Loaded>) -> anyhow::Result<Registry> {
        let loaded = match unlocked {
            Some(loaded) => lock.reload(loaded)?,
            None => lock.load()?,
        };
        loaded.warnings.iter().for_each(|w| warn(w));
        Ok(loaded.registry)
    }

    /// Load the registry without the lock (readers), printing recovery warnings.
    pub fn load_unlocked(&self) -> anyhow::Result<Registry> {
        let loaded = registry::load_unlocked(&self.paths)?;
        loaded.warnings.iter().for_each(|w| warn(w));
        Ok(loaded.registry)
    }

    /// Registry key of the current worktree, without listing worktrees (cheap on every
    /// backend).
    pub fn current_key(&self) -> anyhow::Result<String> {
        self.repo.current_key().ok_or_else(|| self.bare_error())
    }

    fn bare_error(&self) -> anyhow::Error {
        Error::new(
            Code::WorktreeNotFound,
            format!(
                "{} is a bare repository with no working tree here; run this inside one of its worktrees, or name one (git worktree list shows them)",
                self.repo.common_dir().display()
            ),
        )
        .into()
    }

    /// The worktree named by `spec` (git name, `main`, or path), or the current one.
    pub fn target(&self, spec: Option<&str>) -> anyhow::Result<WorktreeInfo> {
        match spec {
            None => self.repo.current()?.ok_or_else(|| self.bare_error()),
            Some(spec) => {
                let worktrees = self.repo.worktrees()?;
                find_worktree(spec, &worktrees)
                    .cloned()
                    .ok_or_else(|| not_found(spec, &worktrees))
            }
        }
    }
}

/// The registry key `spec` names: the current worktree (None), a key in the registry, a git
/// worktree (name or path), or the recorded path of a worktree git no longer has. Lists git's
/// worktrees only when the key alone does not answer.
pub fn registry_key(ctx: &Ctx, reg: &Registry, spec: Option<&str>) -> anyhow::Result<String> {
    let Some(spec) = spec else {
        return ctx.current_key();
    };
    if reg.allocated_ports.contains_key(spec) {
        return Ok(spec.to_string());
    }
    let worktrees = ctx.repo.worktrees()?;
    if let Some(w) = find_worktree(spec, &worktrees) {
        return Ok(w.key.clone());
    }
    reg.key_recorded_at(&absolute(spec))
        .map(str::to_string)
        .ok_or_else(|| not_found(spec, &worktrees))
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

/// Left-aligned columns separated by two spaces; trailing spaces trimmed.
pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if c + 1 < row.len() {
                let pad = widths[c] - cell.chars().count() + 2;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `web 8081, db 5433`.
pub fn ports_inline(ports: &std::collections::BTreeMap<String, u16>) -> String {
    let parts: Vec<String> = ports.iter().map(|(s, p)| format!("{s} {p}")).collect();
    parts.join(", ")
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

    #[test]
    fn table_aligns_columns() {
        let rows = vec![
            vec!["A".to_string(), "BB".to_string(), "C".to_string()],
            vec!["long".to_string(), "x".to_string(), "".to_string()],
        ];
        assert_eq!(table(&rows), "A     BB  C\nlong  x\n");
    }
}
