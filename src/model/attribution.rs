//! Whose is a listening process: this worktree, another worktree (of this repository or of
//! another one on the machine), a worktree that no longer exists (an orphan), or none of them
//! (foreign). Decided from the process's working directory against every known worktree path:
//! the innermost worktree wins, as for nested worktrees. PURE: the caller reads the processes
//! (`procs`) and the worktrees (`workspace`).
//!
//! A dev server's children (esbuild, vite workers) share its working directory and are
//! attributed alike; a server that `chdir()`s out of its worktree reads as foreign.

use std::fmt;
use std::path::{Path, PathBuf};

/// A port's state as `status` reports it: the one vocabulary for "is something on it".
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PortState {
    /// A listener is known (its process, when readable).
    Listening,
    /// Taken (a bind fails), its holder unseen.
    Busy,
    /// A server could bind it.
    Free,
}

/// A port's state from what is known of it: a known listener makes it listening; else a bind
/// that fails (`bind_fails`, asked only then) makes it busy, whoever holds it.
pub fn port_state(listened: bool, bind_fails: impl FnOnce() -> bool) -> PortState {
    match listened {
        true => PortState::Listening,
        false if bind_fails() => PortState::Busy,
        false => PortState::Free,
    }
}

/// A process, as far as it could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    /// Process id.
    pub pid: u32,
    /// Its command line, arguments joined by spaces (the command name when the line is empty).
    pub command: String,
    /// Its real uid.
    pub uid: Option<u32>,
    /// Its working directory (without the kernel's ` (deleted)` suffix).
    pub cwd: Option<PathBuf>,
    /// The working directory was deleted (the kernel says ` (deleted)`).
    pub cwd_deleted: bool,
    /// It has a controlling terminal (someone's shell or editor: never reaped).
    pub tty: bool,
}

/// A listening socket and, when it can be read, its process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// Local port.
    pub port: u16,
    /// `tcp` or `udp`.
    pub protocol: &'static str,
    /// The socket's owner.
    pub uid: Option<u32>,
    /// Its process (None: another user's, not readable).
    pub process: Option<Process>,
}

/// A worktree a process may run in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownWorktree {
    /// Its path (canonical where it exists).
    pub path: PathBuf,
    /// Its repository as a user knows it; None for the repository being looked at.
    pub repository: Option<PathBuf>,
    /// Its registry key.
    pub name: String,
    /// False when its directory is gone.
    pub exists: bool,
}

/// Whose a process is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Whose {
    /// The worktree being looked at.
    This,
    /// Another living worktree.
    Worktree {
        /// Its repository (None: this one).
        repository: Option<PathBuf>,
        /// Its name.
        name: String,
    },
    /// A worktree whose directory is gone.
    Orphan {
        /// Its repository (None: this one).
        repository: Option<PathBuf>,
        /// Its name.
        name: String,
        /// Where it was.
        path: PathBuf,
    },
    /// Outside every known worktree.
    Foreign,
    /// The process could not be read (another user's).
    Unknown,
}

/// Whose a process is, as `status --json` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WhoseKind {
    /// The worktree being looked at.
    This,
    /// Another living worktree (of this or another repository).
    Worktree,
    /// A worktree whose directory is gone (the kernel says the process's cwd was deleted).
    Orphan,
    /// Outside every known worktree.
    Foreign,
    /// The process could not be read (another user's).
    Unknown,
}

impl Whose {
    /// Its kind, without the names.
    pub fn kind(&self) -> WhoseKind {
        match self {
            Whose::This => WhoseKind::This,
            Whose::Worktree { .. } => WhoseKind::Worktree,
            Whose::Orphan { .. } => WhoseKind::Orphan,
            Whose::Foreign => WhoseKind::Foreign,
            Whose::Unknown => WhoseKind::Unknown,
        }
    }
}

impl fmt::Display for Whose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let of = |r: &Option<PathBuf>| match r {
            Some(r) => format!(" of repository {}", r.display()),
            None => String::new(),
        };
        match self {
            Whose::This => f.write_str("this worktree"),
            Whose::Worktree { repository, name } => {
                write!(f, "worktree {name}{}", of(repository))
            }
            Whose::Orphan {
                repository,
                name,
                path,
            } => write!(
                f,
                "orphan of deleted worktree {name}{} ({})",
                of(repository),
                path.display()
            ),
            Whose::Foreign => f.write_str("foreign"),
            Whose::Unknown => f.write_str("unknown"),
        }
    }
}

/// Whose `process` is; `this` names the worktree being looked at (repository, name).
pub fn classify(
    process: Option<&Process>,
    known: &[KnownWorktree],
    this: Option<&KnownWorktree>,
) -> Whose {
    let Some(cwd) = process.and_then(|p| p.cwd.as_deref()) else {
        return Whose::Unknown;
    };
    let Some(k) = innermost(cwd, known) else {
        return Whose::Foreign;
    };
    // A remembered path is no proof: a new clone or any directory may stand there now.
    // Only the kernel's word that the working directory was deleted makes an orphan.
    if !k.exists && !process.is_some_and(|p| p.cwd_deleted) {
        return Whose::Foreign;
    }
    if !k.exists {
        return Whose::Orphan {
            repository: k.repository.clone(),
            name: k.name.clone(),
            path: k.path.clone(),
        };
    }
    match this {
        Some(t) if t.path == k.path => Whose::This,
        _ => Whose::Worktree {
            repository: k.repository.clone(),
            name: k.name.clone(),
        },
    }
}

/// The known worktree `cwd` is in, the innermost one; on equal paths a living one. A path
/// that is empty or relative (a hand edit, a bad merge) matches nothing: `Path::starts_with`
/// of an empty path is true for every path.
pub fn innermost<'k>(cwd: &Path, known: &'k [KnownWorktree]) -> Option<&'k KnownWorktree> {
    known
        .iter()
        .filter(|k| k.path.is_absolute() && cwd.starts_with(&k.path))
        .max_by_key(|k| (k.path.components().count(), k.exists))
}

/// `pid 1234 (python3 -m http.server 8081)`, or the uid when the process is not readable.
pub fn describe(l: &Listener) -> String {
    match &l.process {
        Some(p) => {
            // The program's file name, not its whole path.
            let mut cmd = match p.command.split_once(' ') {
                Some((program, args)) => format!("{} {args}", base_name(program)),
                None => base_name(&p.command).to_string(),
            };
            if cmd.chars().count() > 60 {
                cmd = cmd.chars().take(57).collect::<String>() + "...";
            }
            format!("pid {} ({cmd})", p.pid)
        }
        None => match l.uid {
            Some(uid) => format!("a process of uid {uid} (not readable by you)"),
            None => "a process that cannot be read".to_string(),
        },
    }
}

fn base_name(program: &str) -> &str {
    program.rsplit('/').next().unwrap_or(program)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_listener_decides_without_a_bind_else_the_bind_does() {
        let never = || -> bool { panic!("no bind when a listener is known") };
        assert_eq!(port_state(true, never), PortState::Listening);
        assert_eq!(port_state(false, || true), PortState::Busy);
        assert_eq!(port_state(false, || false), PortState::Free);
    }

    fn known(path: &str, repo: Option<&str>, name: &str, exists: bool) -> KnownWorktree {
        KnownWorktree {
            path: PathBuf::from(path),
            repository: repo.map(PathBuf::from),
            name: name.into(),
            exists,
        }
    }

    fn proc_in(cwd: &str) -> Process {
        Process {
            pid: 1,
            command: "node".into(),
            uid: Some(1000),
            cwd: Some(PathBuf::from(cwd)),
            cwd_deleted: false,
            tty: false,
        }
    }

    #[test]
    fn the_innermost_worktree_wins_and_each_kind_is_told_apart() {
        let all = [
            known("/src/app", None, "main", true),
            known("/src/app/trees/feat", None, "feat", true),
            known("/src/old", None, "old", false),
            known("/src/api", Some("/src/api"), "main", true),
        ];
        let this = &all[1];
        let whose = |cwd: &str| classify(Some(&proc_in(cwd)), &all, Some(this));
        assert_eq!(whose("/src/app/trees/feat/web"), Whose::This);
        assert_eq!(
            whose("/src/app/src"),
            Whose::Worktree {
                repository: None,
                name: "main".into()
            }
        );
        // An orphan only when the kernel says the working directory was deleted: a process
        // in a directory that stands at a removed worktree's path now is someone else's.
        let deleted = Process {
            cwd_deleted: true,
            ..proc_in("/src/old")
        };
        assert_eq!(
            classify(Some(&deleted), &all, Some(this)).kind(),
            WhoseKind::Orphan
        );
        assert_eq!(whose("/src/old"), Whose::Foreign);
        assert_eq!(
            whose("/src/api/server").to_string(),
            "worktree main of repository /src/api"
        );
        assert_eq!(
            whose("/src/application"),
            Whose::Foreign,
            "a prefix of a name is not a parent"
        );
        assert_eq!(whose("/tmp"), Whose::Foreign);
        assert_eq!(classify(None, &all, Some(this)), Whose::Unknown);
    }

    /// Issue 26, item 2: a record with an empty or relative path made every process an
    /// orphan (`Path::starts_with("")` is true for every path). Such a path matches nothing.
    #[test]
    fn issue26_2_an_empty_or_relative_recorded_path_matches_nothing() {
        let all = [
            known("", None, "empty", false),
            known("rel/x", None, "rel", false),
        ];
        for cwd in ["/", "/home/me", "/proc", "rel/x"] {
            let p = Process {
                cwd_deleted: true,
                ..proc_in(cwd)
            };
            assert_eq!(classify(Some(&p), &all, None), Whose::Foreign, "{cwd}");
            assert!(innermost(Path::new(cwd), &all).is_none(), "{cwd}");
        }
    }
}
