//! The post-checkout hook: install, uninstall and inspect it in a hooks directory. Reads and
//! writes only `post-checkout` and `post-checkout.pre-worktree-ports` in that directory.
//!
//! A hook that is already there is the user's: `install` renames it to
//! `post-checkout.pre-worktree-ports` (our script runs it first, with the same arguments, and
//! keeps its exit status) and `uninstall` renames it back, so it returns byte for byte, mode
//! included. Hook managers that own the directory (husky, lefthook, pre-commit) would lose our
//! file on their next sync, so for them `install` prints what to add to their config instead.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Serialize;

use crate::model::error::{Code, Error};
use crate::sys::fsio::{self, Durability, Mode, WriteOptions};

/// The hook script, embedded from `hooks/post-checkout`.
pub const SCRIPT: &str = include_str!("../../hooks/post-checkout");
/// Hook file name.
pub const HOOK: &str = "post-checkout";
/// Where a user's previous hook is kept while ours is installed.
pub const PREVIOUS: &str = "post-checkout.pre-worktree-ports";
/// Set for the `git worktree add` that `git worktree-ports add` runs, so that our own
/// post-checkout hook leaves allocating and rendering to `add` (one allocation, one render).
pub const INSIDE_ADD_ENV: &str = "GIT_WORKTREE_PORTS_INSIDE_ADD";
/// A line every version of our script carries.
const MARKER: &str = "# git-worktree-ports post-checkout hook";

/// A hook manager that owns the hooks directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Manager {
    /// husky (core.hooksPath = .husky/_).
    Husky,
    /// lefthook (lefthook.yml).
    Lefthook,
    /// pre-commit (.pre-commit-config.yaml).
    PreCommit,
    /// The repository itself: a hooks directory inside the work tree (a relative
    /// `core.hooksPath` such as a tracked `.githooks`), committed with the code. A file written
    /// there is one `git commit -a` from being committed, and a relative path only resolves
    /// in the worktree git runs in.
    WorkTree,
}

impl Manager {
    /// Name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Manager::Husky => "husky",
            Manager::Lefthook => "lefthook",
            Manager::PreCommit => "pre-commit",
            Manager::WorkTree => "your repository (a hooks directory inside the work tree)",
        }
    }

    /// What to add to the manager's config, exactly.
    pub fn snippet(self) -> String {
        match self {
            Manager::Husky => "Add this line to .husky/post-checkout (create the file if it does not exist):\n\n\
                 case \"$1\" in *[!0]*) ;; *) git worktree-ports hook post-checkout \"$@\" || true ;; esac\n"
                .to_string(),
            Manager::Lefthook => "Add this to lefthook.yml, then run `lefthook install`:\n\n\
                 post-checkout:\n  commands:\n    worktree-ports:\n      run: git worktree-ports hook post-checkout {0} || true\n"
                .to_string(),
            Manager::PreCommit => "Add this to .pre-commit-config.yaml, then run `pre-commit install --hook-type post-checkout`:\n\n\
                 - repo: local\n  hooks:\n    - id: git-worktree-ports\n      name: git-worktree-ports\n      entry: git worktree-ports hook post-checkout\n      language: system\n      stages: [post-checkout]\n      always_run: true\n      pass_filenames: false\n"
                .to_string(),
            Manager::WorkTree => "Add this line to post-checkout in that directory (create it if it does not exist, make it executable, and commit it, so every clone gets it):\n\n\
                 case \"$1\" in *[!0]*) ;; *) git worktree-ports hook post-checkout \"$@\" || true ;; esac\n"
                .to_string(),
        }
    }
}

/// What is in a hooks directory (`hooks status --json`).
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct State {
    /// The hooks directory.
    pub dir: PathBuf,
    /// `<dir>/post-checkout`.
    pub hook: PathBuf,
    /// A post-checkout hook exists.
    pub exists: bool,
    /// It is ours.
    pub ours: bool,
    /// It is ours and identical to this build's script.
    pub current: bool,
    /// The user's previous hook, kept and run first by ours.
    pub chained: Option<PathBuf>,
    /// A hook manager owns the directory.
    pub manager: Option<Manager>,
    /// The manager's configuration runs `git worktree-ports hook post-checkout` (the line
    /// `hooks install` prints for it is there): a plain `git worktree add` allocates.
    pub through_manager: bool,
}

/// Look at `dir`; `worktree` is where manager config files would be.
pub fn inspect(dir: &Path, worktree: Option<&Path>) -> State {
    let hook = dir.join(HOOK);
    let exists = fs::symlink_metadata(&hook).is_ok();
    let text = fs::read(&hook)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let ours = text.contains(MARKER);
    let previous = dir.join(PREVIOUS);
    let manager = detect_manager(dir, &text, worktree);
    State {
        exists,
        ours,
        current: ours && text == SCRIPT,
        chained: fs::symlink_metadata(&previous).is_ok().then_some(previous),
        through_manager: manager.is_some_and(|m| runs_ours(m, dir, &text, worktree)),
        manager,
        dir: dir.to_path_buf(),
        hook,
    }
}

/// What a manager's configuration says to run our hook.
const OUR_COMMAND: &str = "worktree-ports hook post-checkout";

/// True when `manager`'s configuration runs our hook: husky's `.husky/post-checkout` (the
/// folder above its `_`), lefthook's or pre-commit's config file in the worktree (pre-commit
/// only once it is installed for post-checkout: its hook file is there), or the post-checkout
/// file of a hooks directory inside the work tree.
fn runs_ours(manager: Manager, dir: &Path, hook_text: &str, worktree: Option<&Path>) -> bool {
    let mentions =
        |p: &Path| fs::read(p).is_ok_and(|b| String::from_utf8_lossy(&b).contains(OUR_COMMAND));
    match manager {
        Manager::Husky => {
            let husky = match dir.file_name().is_some_and(|n| n == "_") {
                true => dir.parent().unwrap_or(dir),
                false => dir,
            };
            mentions(&husky.join(HOOK))
        }
        Manager::Lefthook => worktree.is_some_and(|w| {
            (LEFTHOOK_CONFIGS.iter().chain(["lefthook-local.yml"].iter()))
                .any(|f| mentions(&w.join(f)))
        }),
        Manager::PreCommit => {
            worktree.is_some_and(|w| mentions(&w.join(".pre-commit-config.yaml")))
        }
        Manager::WorkTree => hook_text.contains(OUR_COMMAND),
    }
}

/// lefthook's configuration files, in a worktree.
const LEFTHOOK_CONFIGS: [&str; 6] = [
    "lefthook.yml",
    ".lefthook.yml",
    "lefthook.yaml",
    ".lefthook.yaml",
    "lefthook.toml",
    "lefthook.json",
];

fn detect_manager(dir: &Path, hook_text: &str, worktree: Option<&Path>) -> Option<Manager> {
    let in_husky = dir.components().any(|c| c.as_os_str() == ".husky")
        || dir.join("husky.sh").exists()
        || dir.join("h").is_file() && dir.file_name().is_some_and(|n| n == "_");
    if in_husky {
        return Some(Manager::Husky);
    }
    if hook_text.contains("pre-commit.com") || hook_text.contains("File generated by pre-commit") {
        return Some(Manager::PreCommit);
    }
    let lefthook_config =
        worktree.is_some_and(|w| LEFTHOOK_CONFIGS.iter().any(|f| w.join(f).exists()));
    if hook_text.contains("lefthook") || lefthook_config {
        return Some(Manager::Lefthook);
    }
    None
}

/// What `install` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Installed {
    /// Written; `chained` when a previous hook was kept and will run first.
    Fresh {
        /// A previous hook was kept.
        chained: bool,
    },
    /// Our older script was replaced by this build's.
    Updated,
    /// Already installed and current: nothing written.
    AlreadyCurrent,
    /// A manager owns the directory: nothing written.
    Manager(Manager),
}

/// Install our hook into `state.dir`.
pub fn install(state: &State) -> anyhow::Result<Installed> {
    if state.current {
        return Ok(Installed::AlreadyCurrent);
    }
    if state.ours {
        write_script(&state.dir)?;
        return Ok(Installed::Updated);
    }
    if let Some(m) = state.manager {
        return Ok(Installed::Manager(m));
    }
    fsio::create_dirs(&state.dir)
        .with_context(|| format!("could not create {}", state.dir.display()))?;
    let previous = state.dir.join(PREVIOUS);
    let chained = state.exists;
    if chained {
        if state.chained.is_some() {
            return Err(Error::new(
                Code::HookConflict,
                format!(
                    "{} exists, and so does {}; move one of them aside, then run `git worktree-ports hooks install` again",
                    state.hook.display(),
                    previous.display()
                ),
            )
            .into());
        }
        fs::rename(&state.hook, &previous)
            .with_context(|| format!("could not move {} aside", state.hook.display()))?;
    }
    if let Err(e) = write_script(&state.dir) {
        if chained {
            let _ = fs::rename(&previous, &state.hook);
        }
        return Err(e);
    }
    Ok(Installed::Fresh { chained })
}

/// What `uninstall` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uninstalled {
    /// Our hook is gone; `restored` when the previous hook is back in its place.
    Removed {
        /// The previous hook was put back.
        restored: bool,
    },
    /// Nothing of ours was installed.
    NotInstalled,
}

/// Remove our hook, putting back the previous one.
pub fn uninstall(state: &State) -> anyhow::Result<Uninstalled> {
    if !state.ours {
        return Ok(Uninstalled::NotInstalled);
    }
    fs::remove_file(&state.hook)
        .with_context(|| format!("could not remove {}", state.hook.display()))?;
    let restored = match &state.chained {
        Some(previous) => {
            fs::rename(previous, &state.hook)
                .with_context(|| format!("could not put {} back", previous.display()))?;
            true
        }
        None => false,
    };
    Ok(Uninstalled::Removed { restored })
}

fn write_script(dir: &Path) -> anyhow::Result<()> {
    fsio::write_atomic(
        &dir.join(HOOK),
        SCRIPT.as_bytes(),
        WriteOptions {
            durability: Durability::File,
            mode: Mode::Fixed(0o755),
            label: "hook",
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn install_chains_a_previous_hook_and_uninstall_restores_it_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let hook = dir.path().join(HOOK);
        let mine = b"#!/bin/bash\necho mine \xff\n".to_vec();
        fs::write(&hook, &mine).unwrap();
        fs::set_permissions(&hook, fs::Permissions::from_mode(0o750)).unwrap();

        let state = inspect(dir.path(), None);
        assert!(state.exists && !state.ours);
        assert_eq!(install(&state).unwrap(), Installed::Fresh { chained: true });
        let state = inspect(dir.path(), None);
        assert!(state.ours && state.current && state.chained.is_some());
        assert_eq!(
            fs::metadata(&hook).unwrap().permissions().mode() & 0o777,
            0o755
        );
        assert_eq!(install(&state).unwrap(), Installed::AlreadyCurrent);

        assert_eq!(
            uninstall(&state).unwrap(),
            Uninstalled::Removed { restored: true }
        );
        assert_eq!(fs::read(&hook).unwrap(), mine);
        assert_eq!(
            fs::metadata(&hook).unwrap().permissions().mode() & 0o777,
            0o750
        );
        assert!(!dir.path().join(PREVIOUS).exists());
        assert_eq!(
            uninstall(&inspect(dir.path(), None)).unwrap(),
            Uninstalled::NotInstalled
        );
    }

    /// Regression (issue 14, defect 5): this was reported as IO_ERROR.
    #[test]
    fn a_hook_and_a_kept_previous_hook_together_are_a_hook_conflict() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(HOOK), "#!/bin/sh\necho theirs\n").unwrap();
        fs::write(dir.path().join(PREVIOUS), "#!/bin/sh\necho older\n").unwrap();
        let err = install(&inspect(dir.path(), None)).unwrap_err();
        assert_eq!(crate::model::error::classify(&err).code, Code::HookConflict);
        assert_eq!(
            fs::read_to_string(dir.path().join(HOOK)).unwrap(),
            "#!/bin/sh\necho theirs\n"
        );
    }

    #[test]
    fn an_older_script_of_ours_is_updated() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(HOOK), format!("#!/bin/sh\n{MARKER}, v0.\n")).unwrap();
        let state = inspect(dir.path(), None);
        assert!(state.ours && !state.current);
        assert_eq!(install(&state).unwrap(), Installed::Updated);
        assert!(inspect(dir.path(), None).current);
    }

    #[test]
    fn managers_are_recognised() {
        let dir = tempfile::tempdir().unwrap();
        let husky = dir.path().join(".husky/_");
        fs::create_dir_all(&husky).unwrap();
        assert_eq!(inspect(&husky, None).manager, Some(Manager::Husky));

        let plain = dir.path().join("hooks");
        fs::create_dir_all(&plain).unwrap();
        assert_eq!(inspect(&plain, None).manager, None);
        fs::write(
            plain.join(HOOK),
            "#!/usr/bin/env bash\n# File generated by pre-commit: https://pre-commit.com\n",
        )
        .unwrap();
        assert_eq!(inspect(&plain, None).manager, Some(Manager::PreCommit));
        fs::write(
            plain.join(HOOK),
            "#!/bin/sh\ncall_lefthook run \"post-checkout\" \"$@\"\n",
        )
        .unwrap();
        assert_eq!(inspect(&plain, None).manager, Some(Manager::Lefthook));
        // A manager's directory is never written.
        let state = inspect(&plain, None);
        assert_eq!(
            install(&state).unwrap(),
            Installed::Manager(Manager::Lefthook)
        );
        assert!(
            fs::read_to_string(plain.join(HOOK))
                .unwrap()
                .contains("lefthook")
        );
    }

    #[test]
    fn the_script_is_posix_sh_and_never_starts_the_binary_for_ordinary_checkouts() {
        assert!(SCRIPT.starts_with("#!/bin/sh\n"));
        assert!(SCRIPT.contains(MARKER));
        let status = std::process::Command::new("sh")
            .arg("-n")
            .arg("-c")
            .arg(SCRIPT)
            .status()
            .unwrap();
        assert!(status.success());
    }
}
