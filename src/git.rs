//! The repository as plain data: where the current worktree and the common dir are, and the
//! list of worktrees. Nothing above this module sees a git2 type.
//!
//! Discovery honours `GIT_DIR`/`GIT_WORK_TREE` (as git sets them for hooks and other callers)
//! and otherwise walks up from the current directory, so the innermost worktree wins when
//! worktrees are nested. Reads the repository; never writes to it.

use std::path::{Path, PathBuf};

use git2::{ErrorClass, ErrorCode, Repository};

use crate::error::{Code, Error};

/// Registry key of the main worktree.
pub const MAIN_KEY: &str = "main";

/// One worktree of the repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorktreeInfo {
    /// Registry key: git's worktree name, `main` for the main worktree, and
    /// `worktrees/main` for a linked worktree whose git name is `main`.
    pub key: String,
    /// Git's name (`.git/worktrees/<name>`), `main` for the main worktree.
    pub name: String,
    /// Absolute path of the working tree.
    pub path: PathBuf,
    /// Checked-out branch, None when detached.
    pub branch: Option<String>,
    /// The main worktree (the one that holds the common dir).
    pub is_main: bool,
    /// `git worktree lock`ed: never prunable.
    pub locked: bool,
    /// Its directory is gone and it is not locked: `git worktree prune` would drop it.
    pub prunable: bool,
}

/// Registry key for a linked worktree's git name: `main` stays free for the main worktree.
pub fn key_for_linked(name: &str) -> String {
    if name == MAIN_KEY {
        format!("worktrees/{name}")
    } else {
        name.to_string()
    }
}

/// An opened repository.
pub struct Repo {
    repo: Repository,
    common_dir: PathBuf,
}

impl std::fmt::Debug for Repo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repo")
            .field("common_dir", &self.common_dir)
            .finish()
    }
}

impl Repo {
    /// Find the repository of the current directory (or of `GIT_DIR`).
    pub fn discover() -> anyhow::Result<Repo> {
        let repo = Repository::open_from_env().map_err(|e| open_error(&e))?;
        let common_dir = strip_slash(repo.commondir());
        Ok(Repo { repo, common_dir })
    }

    /// The common dir, shared by all worktrees (`.git` of the main worktree, or the bare repo).
    pub fn common_dir(&self) -> &Path {
        &self.common_dir
    }

    /// A bare repository (its worktrees are all linked).
    pub fn is_bare(&self) -> bool {
        self.repo.is_bare()
    }

    /// The worktree the current directory is in, or None in a bare repository's git dir.
    pub fn current(&self) -> anyhow::Result<Option<WorktreeInfo>> {
        let Some(workdir) = self.repo.workdir() else {
            return Ok(None);
        };
        let path = strip_slash(workdir);
        let branch = head_branch(&self.repo);
        if self.repo.is_worktree() {
            let git_dir = strip_slash(self.repo.path());
            let name = file_name(&git_dir);
            Ok(Some(WorktreeInfo {
                key: key_for_linked(&name),
                locked: git_dir.join("locked").exists(),
                name,
                path,
                branch,
                is_main: false,
                prunable: false,
            }))
        } else {
            Ok(Some(WorktreeInfo {
                key: MAIN_KEY.to_string(),
                name: MAIN_KEY.to_string(),
                path,
                branch,
                is_main: true,
                locked: false,
                prunable: false,
            }))
        }
    }

    /// Every worktree git knows: the main one first (absent in a bare repository).
    pub fn worktrees(&self) -> anyhow::Result<Vec<WorktreeInfo>> {
        let mut out = Vec::new();
        let main = if self.repo.is_worktree() {
            Some(
                Repository::open(&self.common_dir)
                    .map_err(|e| git_error("open the main worktree", &e))?,
            )
        } else {
            None
        };
        let main = main.as_ref().unwrap_or(&self.repo);
        if let Some(workdir) = main.workdir() {
            out.push(WorktreeInfo {
                key: MAIN_KEY.to_string(),
                name: MAIN_KEY.to_string(),
                path: strip_slash(workdir),
                branch: head_branch(main),
                is_main: true,
                locked: false,
                prunable: false,
            });
        }
        let names = self
            .repo
            .worktrees()
            .map_err(|e| git_error("list worktrees", &e))?;
        for name in names.iter().filter_map(|n| n.ok().flatten()) {
            let admin = self.common_dir.join("worktrees").join(name);
            let wt = match self.repo.find_worktree(name) {
                Ok(wt) => wt,
                // An admin dir without its `gitdir` file: git lists it as prunable.
                Err(_) => {
                    out.push(WorktreeInfo {
                        key: key_for_linked(name),
                        name: name.to_string(),
                        path: PathBuf::new(),
                        branch: None,
                        is_main: false,
                        locked: admin.join("locked").exists(),
                        prunable: !admin.join("locked").exists(),
                    });
                    continue;
                }
            };
            let path = strip_slash(wt.path());
            let locked = admin.join("locked").exists();
            let branch = Repository::open_from_worktree(&wt)
                .ok()
                .and_then(|r| head_branch(&r));
            out.push(WorktreeInfo {
                key: key_for_linked(name),
                name: name.to_string(),
                prunable: !locked && !path.join(".git").exists(),
                path,
                branch,
                is_main: false,
                locked,
            });
        }
        Ok(out)
    }
}

/// The branch HEAD points at (also on an unborn branch), None when detached.
fn head_branch(repo: &Repository) -> Option<String> {
    let head = repo.find_reference("HEAD").ok()?;
    let target = head.symbolic_target().ok()??;
    target.strip_prefix("refs/heads/").map(str::to_string)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// git2 reports directories with a trailing slash; paths compare and print better without.
fn strip_slash(path: &Path) -> PathBuf {
    path.components().collect()
}

fn open_error(e: &git2::Error) -> anyhow::Error {
    if e.code() == ErrorCode::NotFound && e.class() == ErrorClass::Repository {
        let cwd = std::env::current_dir()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        return Error::new(
            Code::NotARepository,
            format!("not a git repository (or any parent up to the root): {cwd}; run this inside a worktree"),
        )
        .into();
    }
    git_error("open the repository", e)
}

fn git_error(what: &str, e: &git2::Error) -> anyhow::Error {
    Error::new(
        Code::GitFailed,
        format!("could not {what}: {}", e.message()),
    )
    .into()
}
