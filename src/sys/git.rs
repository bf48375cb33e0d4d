//! The repository as plain data: where the current worktree and the common dir are, and the
//! list of worktrees. Nothing above this module sees a git2 type.
//!
//! Two backends behind one interface, chosen per repository from what libgit2 reports:
//! - libgit2 (no process spawned) when `Repository::open_from_env` opens the repository;
//! - the git CLI (`git rev-parse`, `git worktree list --porcelain -z`) when libgit2 refuses it:
//!   SHA-256 objects ("unknown object format"), reftable refs ("unsupported extension
//!   extensions.refstorage"), or any format a newer git knows and libgit2 does not.
//!
//! Linked worktrees are named by git's admin dirs (`<common>/worktrees/<name>`), read directly
//! by both backends, since `git worktree list` does not print names. Discovery honours
//! `GIT_DIR`/`GIT_WORK_TREE` and otherwise walks up from the current directory, so the
//! innermost of nested worktrees wins. Reads the repository; never writes to it.

use std::ffi::{OsStr, OsString};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use git2::{ErrorClass, ErrorCode, Repository};

use crate::model::error::{Code, Details, Error, Libgit2};

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
    /// The worktree's own git dir (`.git`, or `.git/worktrees/<name>`): private state that
    /// must not live in the working tree goes here.
    pub git_dir: PathBuf,
    /// Checked-out branch, None when detached.
    pub branch: Option<String>,
    /// The main worktree (the one that holds the common dir).
    pub is_main: bool,
    /// `git worktree lock`ed: never prunable.
    pub locked: bool,
    /// Its directory is gone and it is not locked: `git worktree prune` would drop it.
    pub prunable: bool,
    /// Where git believes it is, when that is not where it is: it was moved with `mv` (or a
    /// file manager) and git was not told. Set for the current worktree only (the one we
    /// stand in is the only one we can find): `git worktree repair` tells git.
    pub moved_from: Option<PathBuf>,
}

/// Registry key for a linked worktree's git name (the bytes of its admin dir's name):
/// - a UTF-8 name is its own key, except `main`, which is `worktrees/main` (the main worktree
///   is `main`);
/// - any other name is `bytes/` followed by the name, with `\` written `\\` and every byte
///   that is not part of valid UTF-8 written `\xNN` (lower-case hex).
///
/// Unique and stable for any name git accepts: a git name is one path component, so it never
/// holds a `/`, and no UTF-8 name's key can be `worktrees/main` or start with `bytes/`; the
/// escape is reversible, so two byte strings never share a key.
pub fn key_for_linked(name: &OsStr) -> String {
    match name.to_str() {
        Some(MAIN_KEY) => format!("worktrees/{MAIN_KEY}"),
        Some(utf8) => utf8.to_string(),
        None => {
            let mut key = String::from("bytes/");
            for chunk in name.as_encoded_bytes().utf8_chunks() {
                for c in chunk.valid().chars() {
                    if c == '\\' {
                        key.push_str("\\\\");
                    } else {
                        key.push(c);
                    }
                }
                for b in chunk.invalid() {
                    key.push_str(&format!("\\x{b:02x}"));
                }
            }
            key
        }
    }
}

/// Which implementation answers for a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// libgit2, in process.
    Libgit2,
    /// The git command line.
    GitCli,
}

enum Backend {
    Libgit2(Repository),
    GitCli,
}

/// An opened repository.
pub struct Repo {
    backend: Backend,
    git_dir: PathBuf,
    common_dir: PathBuf,
    workdir: Option<PathBuf>,
    /// Opened by path ([`Repo::open_at`]), not from the current directory: git commands are
    /// pointed at it with `--git-dir`.
    at: Option<PathBuf>,
}

impl std::fmt::Debug for Repo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repo")
            .field("backend", &self.backend_kind())
            .field("git_dir", &self.git_dir)
            .field("common_dir", &self.common_dir)
            .field("workdir", &self.workdir)
            .finish()
    }
}

impl Repo {
    /// Find the repository of the current directory (or of `GIT_DIR`).
    pub fn discover() -> anyhow::Result<Repo> {
        // A deleted current directory is outside every repository (git itself fails there
        // with an error of its own).
        if std::env::var_os("GIT_DIR").is_none() && std::env::current_dir().is_err() {
            return Err(not_a_repository());
        }
        let git2_err = match Repository::open_from_env() {
            Ok(repo) => {
                let git_dir = normalize(repo.path());
                let common_dir = normalize(repo.commondir());
                let mut workdir = repo.workdir().map(normalize);
                // libgit2 takes a linked worktree's root from git's record (the admin dir's
                // `gitdir`), which still names the old place of a worktree moved with `mv`.
                // We stand in it: its root is where its `.git` file is.
                if git_dir != common_dir
                    && std::env::var_os("GIT_WORK_TREE").is_none()
                    && let Some(here) = root_pointing_at(&git_dir)
                {
                    workdir = Some(here);
                }
                return Ok(Repo {
                    git_dir,
                    common_dir,
                    workdir,
                    backend: Backend::Libgit2(repo),
                    at: None,
                });
            }
            Err(e) => e,
        };
        // libgit2 cannot read this repository (or found none): git is the authority.
        match cli_discover() {
            Ok(repo) => Ok(repo),
            Err(CliDiscover::Refused(_))
                if git2_err.code() == ErrorCode::NotFound
                    && git2_err.class() == ErrorClass::Repository
                    && !git_runs() =>
            {
                Err(not_a_repository())
            }
            Err(CliDiscover::NotARepository) => Err(not_a_repository()),
            Err(CliDiscover::Refused(msg)) => Err(Error::new(
                Code::GitFailed,
                format!("git refuses this repository: {msg}"),
            )
            .with(Details::Libgit2(Libgit2 {
                libgit2: git2_err.message().to_string(),
            }))
            .into()),
        }
    }

    /// Open the repository whose common dir is `common_dir` (another repository of the
    /// machine index), not the one of the current directory.
    pub fn open_at(common_dir: &Path) -> anyhow::Result<Repo> {
        if let Ok(repo) = Repository::open(common_dir) {
            let git_dir = normalize(repo.path());
            return Ok(Repo {
                common_dir: normalize(repo.commondir()),
                workdir: repo.workdir().map(normalize),
                git_dir,
                backend: Backend::Libgit2(repo),
                at: Some(common_dir.to_path_buf()),
            });
        }
        if !common_dir.is_dir() {
            return Err(git_failed(format!(
                "{} is not a git repository any more",
                common_dir.display()
            )));
        }
        Ok(Repo {
            backend: Backend::GitCli,
            git_dir: common_dir.to_path_buf(),
            common_dir: common_dir.to_path_buf(),
            workdir: match common_dir.file_name() {
                Some(n) if n == ".git" => common_dir.parent().map(Path::to_path_buf),
                _ => None,
            },
            at: Some(common_dir.to_path_buf()),
        })
    }

    /// Which backend answers for this repository.
    pub fn backend_kind(&self) -> BackendKind {
        match self.backend {
            Backend::Libgit2(_) => BackendKind::Libgit2,
            Backend::GitCli => BackendKind::GitCli,
        }
    }

    /// The common dir, shared by all worktrees (`.git` of the main worktree, or the bare repo).
    pub fn common_dir(&self) -> &Path {
        &self.common_dir
    }

    /// Registry key of the worktree the current directory is in, without listing worktrees
    /// (None in a bare repository's git dir).
    pub fn current_key(&self) -> Option<String> {
        self.workdir.as_ref()?;
        Some(if self.is_linked() {
            key_for_linked(self.git_dir.file_name().unwrap_or_default())
        } else {
            MAIN_KEY.to_string()
        })
    }

    fn is_linked(&self) -> bool {
        self.git_dir != self.common_dir
    }

    /// The worktree the current directory is in, or None in a bare repository's git dir.
    pub fn current(&self) -> anyhow::Result<Option<WorktreeInfo>> {
        let Some(workdir) = &self.workdir else {
            return Ok(None);
        };
        match &self.backend {
            Backend::Libgit2(repo) => {
                let branch = head_branch(repo);
                Ok(Some(if self.is_linked() {
                    let name = file_name(&self.git_dir);
                    let admin = AdminEntry::read(&self.git_dir);
                    WorktreeInfo {
                        key: key_for_linked(self.git_dir.file_name().unwrap_or_default()),
                        name,
                        path: workdir.clone(),
                        git_dir: self.git_dir.clone(),
                        branch,
                        is_main: false,
                        locked: admin.locked,
                        prunable: false,
                        moved_from: admin
                            .path
                            .filter(|p| !p.join(".git").exists() && !same_path(p, workdir)),
                    }
                } else {
                    main_info(workdir.clone(), self.git_dir.clone(), branch)
                }))
            }
            Backend::GitCli => {
                let key = self.current_key();
                // git lists where it believes the worktree is; we stand where it is.
                let found = self
                    .worktrees()?
                    .into_iter()
                    .find(|w| Some(&w.key) == key.as_ref())
                    .map(|w| WorktreeInfo {
                        moved_from: (!same_path(&w.path, workdir)).then(|| w.path.clone()),
                        path: workdir.clone(),
                        prunable: false,
                        ..w
                    });
                found.map(Some).ok_or_else(|| {
                    git_failed(format!(
                        "`git worktree list` does not list the current worktree {}",
                        workdir.display()
                    ))
                })
            }
        }
    }

    /// Every worktree git knows: the main one first (absent in a bare repository).
    pub fn worktrees(&self) -> anyhow::Result<Vec<WorktreeInfo>> {
        match &self.backend {
            Backend::Libgit2(repo) => self.git2_worktrees(repo),
            Backend::GitCli => self.cli_worktrees(),
        }
    }

    /// The registry keys of the worktrees git has now, from the names of its admin dirs
    /// alone (one readdir, on either backend): what `add` compares against afterwards to
    /// find the worktree git made, without reading every worktree twice.
    pub fn worktree_keys(&self) -> Vec<String> {
        let mut keys = vec![MAIN_KEY.to_string()];
        keys.extend(
            AdminEntry::dirs(&self.common_dir)
                .into_iter()
                .map(|dir| key_for_linked(dir.file_name().unwrap_or_default())),
        );
        keys
    }

    /// The hooks directory git uses here: `core.hooksPath` (relative paths resolved as git
    /// resolves them) or `<common-dir>/hooks`. Asks git, which is the authority on both.
    pub fn hooks_dir(&self) -> anyhow::Result<PathBuf> {
        let mut cmd = Command::new("git");
        if let Some(w) = &self.workdir {
            cmd.arg("-C").arg(w);
        } else {
            cmd.arg("--git-dir").arg(&self.git_dir);
        }
        let out = cmd
            .args(["rev-parse", "--path-format=absolute", "--git-path", "hooks"])
            .output()
            .map_err(|e| git_failed(format!("could not run git: {e}")))?;
        if !out.status.success() {
            return Err(git_failed(format!(
                "`git rev-parse --git-path hooks` failed: {}",
                one_line(&String::from_utf8_lossy(&out.stderr))
            )));
        }
        let text = out.stdout.strip_suffix(b"\n").unwrap_or(&out.stdout);
        Ok(normalize(&path_from_bytes(text)))
    }

    /// The repository's `core.sharedRepository`, as written; None when it is not set. Read
    /// in process where libgit2 reads the repository, else from git.
    pub fn shared_repository(&self) -> anyhow::Result<Option<String>> {
        if let Backend::Libgit2(repo) = &self.backend {
            let config = repo
                .config()
                .map_err(|e| git_failed(format!("could not read the git config: {e}")))?;
            return match config.get_string("core.sharedRepository") {
                Ok(v) => Ok(Some(v)),
                Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(None),
                // A boolean written as such (`sharedRepository = true`) reads as a string too;
                // anything else is said.
                Err(e) => Err(git_failed(format!(
                    "could not read core.sharedRepository: {}",
                    e.message()
                ))),
            };
        }
        let out = Command::new("git")
            .arg("--git-dir")
            .arg(&self.git_dir)
            .args(["config", "--get", "core.sharedRepository"])
            .output()
            .map_err(|e| git_failed(format!("could not run git: {e}")))?;
        match out.status.code() {
            Some(0) => Ok(Some(
                String::from_utf8_lossy(&out.stdout).trim_end().to_string(),
            )),
            Some(1) => Ok(None),
            _ => Err(git_failed(format!(
                "`git config --get core.sharedRepository` failed: {}",
                one_line(&String::from_utf8_lossy(&out.stderr))
            ))),
        }
    }

    /// The current worktree's root, if there is one.
    pub fn workdir(&self) -> Option<&Path> {
        self.workdir.as_deref()
    }

    /// True when the worktree has been checked out: it has an index. `git worktree add
    /// --no-checkout` makes one without (and runs no hook).
    pub fn has_checkout(&self, wt: &WorktreeInfo) -> bool {
        wt.git_dir.join("index").exists()
    }

    /// The bytes of `rel` in the commit the worktree's HEAD names; None when HEAD names no
    /// commit yet or the commit has no such file.
    pub fn file_at_head(&self, wt: &WorktreeInfo, rel: &str) -> anyhow::Result<Option<Vec<u8>>> {
        if let Backend::Libgit2(_) = self.backend
            && let Ok(repo) = Repository::open(&wt.git_dir)
        {
            let Ok(tree) = repo.head().and_then(|h| h.peel_to_tree()) else {
                return Ok(None);
            };
            let Ok(entry) = tree.get_path(Path::new(rel)) else {
                return Ok(None);
            };
            return Ok(entry
                .to_object(&repo)
                .ok()
                .and_then(|o| o.as_blob().map(|b| b.content().to_vec())));
        }
        let out = Command::new("git")
            .arg("--git-dir")
            .arg(&wt.git_dir)
            .args(["cat-file", "blob", &format!("HEAD:{rel}")])
            .output()
            .map_err(|e| git_failed(format!("could not run git: {e}")))?;
        Ok(out.status.success().then_some(out.stdout))
    }

    /// Which of `rels` (relative to the worktree) git tracks in that worktree's index.
    pub fn tracked(
        &self,
        wt: &WorktreeInfo,
        rels: &[PathBuf],
    ) -> anyhow::Result<std::collections::BTreeSet<PathBuf>> {
        if let Backend::Libgit2(_) = self.backend
            && let Ok(repo) = Repository::open(&wt.path)
            && let Ok(index) = repo.index()
        {
            return Ok(rels
                .iter()
                .filter(|r| index.get_path(r, 0).is_some())
                .cloned()
                .collect());
        }
        let mut cmd = Command::new("git");
        cmd.arg("--literal-pathspecs")
            .arg("-C")
            .arg(&wt.path)
            .args(["ls-files", "-z", "--"])
            .args(rels);
        let out = cmd
            .output()
            .map_err(|e| git_failed(format!("could not run git: {e}")))?;
        if !out.status.success() {
            return Err(git_failed(format!(
                "`git ls-files` failed in {}: {}",
                wt.path.display(),
                one_line(&String::from_utf8_lossy(&out.stderr))
            )));
        }
        Ok(out
            .stdout
            .split(|b| *b == 0)
            .filter(|p| !p.is_empty())
            .map(path_from_bytes)
            .collect())
    }

    fn git2_worktrees(&self, repo: &Repository) -> anyhow::Result<Vec<WorktreeInfo>> {
        let mut out = Vec::new();
        let main = if self.is_linked() {
            Some(Repository::open(&self.common_dir).map_err(|e| {
                git_failed(format!("could not open the main worktree: {}", e.message()))
            })?)
        } else {
            None
        };
        let main = main.as_ref().unwrap_or(repo);
        if let Some(workdir) = main.workdir() {
            out.push(main_info(
                normalize(workdir),
                self.common_dir.clone(),
                head_branch(main),
            ));
        }
        out.extend(
            AdminEntry::list(&self.common_dir)
                .into_iter()
                .map(linked_info),
        );
        Ok(out)
    }

    /// The linked worktrees whose keys are not in `keys`, only their admin dirs read; None on
    /// the git CLI backend, whose branch names come from git's own list.
    pub fn linked_worktrees_except(&self, keys: &[String]) -> Option<Vec<WorktreeInfo>> {
        let Backend::Libgit2(_) = &self.backend else {
            return None;
        };
        let new = |name: &OsStr| !keys.contains(&key_for_linked(name));
        let admins = AdminEntry::list_where(&self.common_dir, new);
        Some(admins.into_iter().map(linked_info).collect())
    }

    fn cli_worktrees(&self) -> anyhow::Result<Vec<WorktreeInfo>> {
        let mut args: Vec<String> = Vec::new();
        if let Some(at) = &self.at {
            args.push(format!("--git-dir={}", at.display()));
        }
        args.extend(["worktree", "list", "--porcelain", "-z"].map(String::from));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run_git(&args)?;
        let records = parse_porcelain(&out);
        let admins = AdminEntry::list(&self.common_dir);
        let mut list = Vec::new();
        for (i, rec) in records.into_iter().enumerate() {
            if rec.bare {
                continue;
            }
            // git lists the main worktree first; every other one has an admin dir.
            if i == 0 {
                list.push(WorktreeInfo {
                    locked: false,
                    prunable: false,
                    ..main_info(rec.path, self.common_dir.clone(), rec.branch)
                });
                continue;
            }
            let admin = admins
                .iter()
                .find(|a| a.path.as_ref().is_some_and(|p| same_path(p, &rec.path)))
                .ok_or_else(|| {
                    git_failed(format!(
                        "could not find the name of worktree {} under {}",
                        rec.path.display(),
                        self.common_dir.join("worktrees").display()
                    ))
                })?;
            let name = admin.name.to_string_lossy().into_owned();
            list.push(WorktreeInfo {
                key: key_for_linked(&admin.name),
                name,
                path: rec.path,
                git_dir: admin.dir.clone(),
                branch: rec.branch,
                is_main: false,
                locked: rec.locked,
                prunable: rec.prunable,
                moved_from: None,
            });
        }
        Ok(list)
    }
}

fn main_info(path: PathBuf, git_dir: PathBuf, branch: Option<String>) -> WorktreeInfo {
    WorktreeInfo {
        key: MAIN_KEY.to_string(),
        name: MAIN_KEY.to_string(),
        path,
        git_dir,
        branch,
        is_main: true,
        locked: false,
        prunable: false,
        moved_from: None,
    }
}

/// `<common>/worktrees/<name>`: what git itself keeps about a linked worktree.
struct AdminEntry {
    name: OsString,
    dir: PathBuf,
    /// The worktree's path (from the `gitdir` file, without `/.git`).
    path: Option<PathBuf>,
    /// The `.git` file the `gitdir` file points at exists.
    gitfile_exists: bool,
    locked: bool,
}

impl AdminEntry {
    fn list(common_dir: &Path) -> Vec<AdminEntry> {
        AdminEntry::list_where(common_dir, |_| true)
    }

    /// The admin dirs whose names `keep` accepts, read, in name order.
    fn list_where(common_dir: &Path, keep: impl Fn(&OsStr) -> bool) -> Vec<AdminEntry> {
        let mut out: Vec<AdminEntry> = (AdminEntry::dirs(common_dir).iter())
            .filter(|dir| keep(dir.file_name().unwrap_or_default()))
            .map(|dir| AdminEntry::read(dir))
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// `<common>/worktrees/*` that are directories, each type from the directory listing (no
    /// stat per worktree), a symlink followed as `is_dir` does.
    fn dirs(common_dir: &Path) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(common_dir.join("worktrees")) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| match e.file_type() {
                Ok(t) if t.is_symlink() => e.path().is_dir(),
                Ok(t) => t.is_dir(),
                Err(_) => e.path().is_dir(),
            })
            .map(|e| e.path())
            .collect()
    }

    fn read(dir: &Path) -> AdminEntry {
        let gitfile = std::fs::read(dir.join("gitdir")).ok().map(|bytes| {
            let text = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
            let p = path_from_bytes(text);
            // git >= 2.48 may write it relative to the admin dir (worktree.useRelativePaths).
            if p.is_absolute() {
                p
            } else {
                normalize(&dir.join(p))
            }
        });
        AdminEntry {
            name: dir.file_name().unwrap_or_default().to_os_string(),
            dir: dir.to_path_buf(),
            gitfile_exists: gitfile.as_ref().is_some_and(|g| g.exists()),
            path: gitfile.map(|g| match g.file_name() {
                Some(n) if n == ".git" => g.parent().map(Path::to_path_buf).unwrap_or(g),
                _ => g,
            }),
            locked: dir.join("locked").exists(),
        }
    }
}

enum CliDiscover {
    NotARepository,
    Refused(String),
}

fn cli_discover() -> Result<Repo, CliDiscover> {
    let out = Command::new("git")
        .args([
            "rev-parse",
            "--path-format=absolute",
            "--git-dir",
            "--git-common-dir",
            "--is-bare-repository",
            "--show-toplevel",
        ])
        .output()
        .map_err(|e| CliDiscover::Refused(format!("could not run git: {e}")))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&[u8]> = out
        .stdout
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    // In a bare repository (or inside .git), --show-toplevel fails after the rest printed.
    let no_worktree = stderr.contains("must be run in a work tree");
    let answered = out.status.success() || (no_worktree && lines.len() >= 3);
    if !answered {
        if stderr.contains("not a git repository") {
            return Err(CliDiscover::NotARepository);
        }
        return Err(CliDiscover::Refused(one_line(&stderr)));
    }
    let [git_dir, common_dir, ..] = lines[..] else {
        return Err(CliDiscover::Refused(format!(
            "unexpected output from git rev-parse: {}",
            String::from_utf8_lossy(&out.stdout)
        )));
    };
    Ok(Repo {
        backend: Backend::GitCli,
        at: None,
        git_dir: normalize(&path_from_bytes(git_dir)),
        common_dir: normalize(&path_from_bytes(common_dir)),
        workdir: if no_worktree {
            None
        } else {
            lines.get(3).map(|l| normalize(&path_from_bytes(l)))
        },
    })
}

fn not_a_repository() -> anyhow::Error {
    // Name what was looked at: GIT_DIR when it is set, else the current directory.
    let message = match std::env::var_os("GIT_DIR") {
        Some(dir) => format!(
            "GIT_DIR={} is not a git repository; unset GIT_DIR or point it at one",
            Path::new(&dir).display()
        ),
        None => match std::env::current_dir() {
            Ok(cwd) => format!(
                "not a git repository (or any parent up to the root): {}; run this inside a worktree",
                cwd.display()
            ),
            Err(_) => {
                "the current directory no longer exists (deleted?); cd into a worktree".to_string()
            }
        },
    };
    Error::new(Code::NotARepository, message).into()
}

/// Run `git worktree <args>` as the user would, in the current directory, with git's own
/// output on our stderr: git's chatter must not mix into our stdout (JSON with --json).
/// `env` is added to git's environment. Never call it holding a registry lock: git runs the
/// post-checkout hook, which takes it.
pub fn run_worktree_command(
    args: &[OsString],
    env: &[(&str, &str)],
) -> anyhow::Result<std::process::ExitStatus> {
    use std::os::fd::AsFd;
    let stderr = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| git_failed(format!("could not pass stderr to git: {e}")))?;
    Command::new("git")
        .arg("worktree")
        .args(args)
        .envs(env.iter().copied())
        .stdout(stderr)
        .status()
        .map_err(|e| git_failed(format!("could not run git: {e}")))
}

/// The variables through which git names a repository whatever the current directory.
pub const REPOSITORY_VARIABLES: [&str; 7] = [
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_COMMON_DIR",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_PREFIX",
];

/// Forget [`REPOSITORY_VARIABLES`], for this process and what it runs: for a process told
/// which repository each request is about (the MCP server, started from wherever an agent
/// runs), where an inherited `GIT_DIR` would silently answer for another repository. Call it
/// before the process starts a thread.
pub fn forget_repository_environment() {
    for var in REPOSITORY_VARIABLES {
        // SAFETY: called first thing by a command that has started no thread yet (`mcp`,
        // before its runtime), so no other thread reads the environment while it changes.
        unsafe { std::env::remove_var(var) };
    }
}

/// `git worktree remove --force --force <path>` (twice: a locked worktree too), quietly;
/// true when git removed it.
pub fn force_remove_worktree(path: &Path) -> bool {
    Command::new("git")
        .args(["worktree", "remove", "--force", "--force"])
        .arg(path)
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The commit local branch `name` points at, None when there is no such branch.
pub fn branch_commit(name: &str) -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "--verify", "--quiet"])
        .arg(format!("refs/heads/{name}^{{commit}}"))
        .output()
        .ok()?;
    let sha = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !sha.trim().is_empty()).then(|| sha.trim().to_string())
}

/// `git branch --force <name> <commit>`, quietly; true when git did it.
pub fn reset_branch(name: &str, commit: &str) -> bool {
    Command::new("git")
        .args(["branch", "--force", "--quiet", name, commit])
        .status()
        .is_ok_and(|s| s.success())
}

/// `git branch -D <name>`, quietly; true when git deleted it.
pub fn delete_branch(name: &str) -> bool {
    Command::new("git")
        .args(["branch", "-D", "--quiet", name])
        .status()
        .is_ok_and(|s| s.success())
}

/// The nearest directory at or above the current one whose `.git` file points at `git_dir`.
fn root_pointing_at(git_dir: &Path) -> Option<PathBuf> {
    let cwd = std::env::current_dir().ok()?;
    for dir in cwd.ancestors() {
        let dotgit = dir.join(".git");
        let Ok(text) = std::fs::read(&dotgit) else {
            if dotgit.exists() {
                return None; // a directory: a main worktree or another repository
            }
            continue;
        };
        let text = text.strip_suffix(b"\n").unwrap_or(&text);
        let target = path_from_bytes(text.strip_prefix(b"gitdir: ")?);
        let target = if target.is_absolute() {
            target
        } else {
            dir.join(target)
        };
        return same_path(&normalize(&target), git_dir).then(|| normalize(dir));
    }
    None
}

/// git can be started at all (it may be missing from PATH).
fn git_runs() -> bool {
    Command::new("git").arg("--version").output().is_ok()
}

fn run_git(args: &[&str]) -> anyhow::Result<Vec<u8>> {
    let mut attempt = 0;
    let out = loop {
        let out = Command::new("git")
            .args(args)
            .output()
            .map_err(|e| git_failed(format!("could not run git: {e}")))?;
        // git (2.47) dies listing worktrees while a parallel `git worktree add` has created an
        // admin dir but not yet its files ("failed to read .git/worktrees/x/commondir"): a
        // moment later the list reads fine. Parallel hooks hit exactly that window.
        attempt += 1;
        if out.status.success()
            || attempt == 5
            || !String::from_utf8_lossy(&out.stderr).contains("failed to read")
        {
            break out;
        }
        std::thread::sleep(std::time::Duration::from_millis(10 * attempt));
    };
    if !out.status.success() {
        return Err(git_failed(format!(
            "`git {}` failed: {}",
            args.join(" "),
            one_line(&String::from_utf8_lossy(&out.stderr))
        )));
    }
    Ok(out.stdout)
}

/// git's multi-line advice as one line: `fatal: x\nTo fix:\n\n\tgit config ...` ->
/// `x; To fix: git config ...`.
fn one_line(stderr: &str) -> String {
    let parts: Vec<&str> = stderr
        .lines()
        .map(|l| l.trim())
        .map(|l| l.strip_prefix("fatal: ").unwrap_or(l))
        .map(|l| l.strip_prefix("error: ").unwrap_or(l))
        .filter(|l| !l.is_empty())
        .collect();
    let mut line = String::new();
    for part in parts {
        if !line.is_empty() {
            // "..., call:" runs into the command it introduces.
            line.push_str(if line.ends_with(':') { " " } else { "; " });
        }
        line.push_str(part);
    }
    if line.is_empty() {
        line.push_str("git exited with an error");
    }
    line
}

/// One record of `git worktree list --porcelain -z`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PorcelainRecord {
    /// `worktree <path>`.
    pub path: PathBuf,
    /// `branch refs/heads/<name>` -> `<name>`; None when detached or bare.
    pub branch: Option<String>,
    /// `bare`.
    pub bare: bool,
    /// `detached`.
    pub detached: bool,
    /// `locked [<reason>]`.
    pub locked: bool,
    /// The lock reason, if one was given.
    pub locked_reason: Option<String>,
    /// `prunable [<reason>]`.
    pub prunable: bool,
}

/// Parse `git worktree list --porcelain -z`: attributes end with NUL, records with an extra
/// NUL. With -z, paths and reasons are not quoted and may hold spaces and newlines.
pub fn parse_porcelain(out: &[u8]) -> Vec<PorcelainRecord> {
    let mut records = Vec::new();
    let mut cur: Option<PorcelainRecord> = None;
    for field in out.split(|b| *b == 0) {
        if field.is_empty() {
            records.extend(cur.take());
            continue;
        }
        let (key, value) = match field.iter().position(|b| *b == b' ') {
            Some(i) => (&field[..i], Some(&field[i + 1..])),
            None => (field, None),
        };
        if key == b"worktree" {
            records.extend(cur.take());
            cur = Some(PorcelainRecord {
                path: path_from_bytes(value.unwrap_or_default()),
                ..Default::default()
            });
            continue;
        }
        let Some(rec) = cur.as_mut() else { continue };
        let text = || value.map(|v| String::from_utf8_lossy(v).into_owned());
        match key {
            b"branch" => {
                rec.branch = text().map(|r| {
                    r.strip_prefix("refs/heads/")
                        .map(str::to_string)
                        .unwrap_or(r)
                });
            }
            b"bare" => rec.bare = true,
            b"detached" => rec.detached = true,
            b"locked" => {
                rec.locked = true;
                rec.locked_reason = text();
            }
            b"prunable" => rec.prunable = true,
            _ => {}
        }
    }
    records.extend(cur);
    records
}

/// A linked worktree as the libgit2 backend lists it, from its admin dir.
fn linked_info(admin: AdminEntry) -> WorktreeInfo {
    WorktreeInfo {
        key: key_for_linked(&admin.name),
        name: admin.name.to_string_lossy().into_owned(),
        prunable: !admin.locked && !admin.gitfile_exists,
        moved_from: None,
        branch: admin_head_branch(&admin.dir),
        path: admin.path.unwrap_or_default(),
        git_dir: admin.dir,
        is_main: false,
        locked: admin.locked,
    }
}

/// The branch a linked worktree has checked out, read from its admin dir's `HEAD` as the
/// files ref backend writes it (`ref: refs/heads/<branch>`; linked worktrees came long after
/// symlinked HEADs went); None when detached or unreadable. What [`head_branch`] answers,
/// without libgit2 opening a repository per worktree: that was 150 µs each, 33 ms for 200
/// worktrees, and `add` lists them twice. Only for the libgit2 backend, which is the files
/// backend (a reftable repository goes through git).
fn admin_head_branch(dir: &Path) -> Option<String> {
    let bytes = std::fs::read(dir.join("HEAD")).ok()?;
    let target = std::str::from_utf8(&bytes)
        .ok()?
        .strip_prefix("ref:")?
        .trim();
    target.strip_prefix("refs/heads/").map(str::to_string)
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

/// Lexically clean a path: no trailing slash, no `.`, `..` resolved against what precedes it.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// Equal as strings, or as canonical paths (symlinks, `/tmp` -> `/private/tmp`).
fn same_path(a: &Path, b: &Path) -> bool {
    a == b
        || match (a.canonicalize(), b.canonicalize()) {
            (Ok(x), Ok(y)) => x == y,
            _ => false,
        }
}

#[cfg(unix)]
fn path_from_bytes(bytes: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    PathBuf::from(std::ffi::OsStr::from_bytes(bytes))
}

#[cfg(not(unix))]
fn path_from_bytes(bytes: &[u8]) -> PathBuf {
    PathBuf::from(String::from_utf8_lossy(bytes).into_owned())
}

fn git_failed(message: String) -> anyhow::Error {
    Error::new(Code::GitFailed, message).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(path: &str) -> PorcelainRecord {
        PorcelainRecord {
            path: PathBuf::from(path),
            ..Default::default()
        }
    }

    #[test]
    fn porcelain_main_linked_detached_locked_prunable() {
        let out = b"worktree /r\0HEAD 1111\0branch refs/heads/main\0\0\
worktree /r-det\0HEAD 2222\0detached\0\0\
worktree /r-lk\0HEAD 3333\0branch refs/heads/lk\0locked\0\0\
worktree /r-lkr\0HEAD 3333\0branch refs/heads/lkr\0locked on a usb disk\0\0\
worktree /r-gone\0HEAD 4444\0branch refs/heads/gone\0prunable gitdir file points to non-existent location\0\0";
        let recs = parse_porcelain(out);
        assert_eq!(recs.len(), 5);
        assert_eq!(
            recs[0],
            PorcelainRecord {
                branch: Some("main".into()),
                ..rec("/r")
            }
        );
        assert_eq!(
            recs[1],
            PorcelainRecord {
                detached: true,
                ..rec("/r-det")
            }
        );
        assert!(recs[2].locked && recs[2].locked_reason.is_none());
        assert_eq!(recs[3].locked_reason.as_deref(), Some("on a usb disk"));
        assert!(recs[4].prunable && !recs[4].locked);
        assert_eq!(recs[4].branch.as_deref(), Some("gone"));
    }

    #[test]
    fn porcelain_bare_and_odd_paths() {
        let out = b"worktree /srv/repo.git\0bare\0\0\
worktree /tmp/with space/and\nnewline\0HEAD 1\0branch refs/heads/x\0locked multi\nline reason\0\0";
        let recs = parse_porcelain(out);
        assert_eq!(
            recs[0],
            PorcelainRecord {
                bare: true,
                ..rec("/srv/repo.git")
            }
        );
        assert_eq!(recs[1].path, PathBuf::from("/tmp/with space/and\nnewline"));
        assert_eq!(recs[1].locked_reason.as_deref(), Some("multi\nline reason"));
    }

    #[test]
    fn porcelain_without_trailing_separator_keeps_the_last_record() {
        let recs = parse_porcelain(b"worktree /a\0HEAD 1\0branch refs/heads/a");
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].branch.as_deref(), Some("a"));
        assert!(parse_porcelain(b"").is_empty());
    }

    /// Regression (issue 15, item 1): names that differ only in non-UTF-8 bytes shared one
    /// lossy key (U+FFFD), so two worktrees got the same ports.
    #[test]
    fn keys_are_unique_for_names_that_differ_only_in_invalid_bytes() {
        use std::os::unix::ffi::OsStrExt;
        let key = |b: &[u8]| key_for_linked(OsStr::from_bytes(b));
        assert_eq!(key(b"feature-login"), "feature-login");
        assert_eq!(key(b"main"), "worktrees/main");
        assert_eq!(key("caf\u{e9}".as_bytes()), "caf\u{e9}");
        assert_eq!(key(b"caf\xe9"), "bytes/caf\\xe9");
        assert_eq!(key(b"caf\xe8"), "bytes/caf\\xe8");
        assert_eq!(key(b"\xff"), "bytes/\\xff");
        assert_ne!(key(b"\xff"), key(b"\xfe"));
        // A backslash is escaped in the bytes form, so no two byte strings meet.
        assert_eq!(key(b"a\\xff\xfe"), "bytes/a\\\\xff\\xfe");
        assert_ne!(key(b"a\\xff\xfe"), key(b"a\xff\xfe"));
        // A UTF-8 name that looks like an escape keeps its own, different key.
        assert_eq!(key(b"bytes-\\xff"), "bytes-\\xff");
    }

    #[test]
    fn git_advice_becomes_one_line() {
        let stderr = "fatal: detected dubious ownership in repository at '/x'\nTo add an exception for this directory, call:\n\n\tgit config --global --add safe.directory /x\n";
        assert_eq!(
            one_line(stderr),
            "detected dubious ownership in repository at '/x'; To add an exception for this directory, call: git config --global --add safe.directory /x"
        );
    }

    #[test]
    fn normalize_cleans_lexically() {
        assert_eq!(
            normalize(Path::new("/a/b/../c/./d/")),
            PathBuf::from("/a/c/d")
        );
        assert_eq!(
            normalize(Path::new("/r/.git/worktrees/x/../../../wt/.git")),
            PathBuf::from("/r/wt/.git")
        );
    }
}
