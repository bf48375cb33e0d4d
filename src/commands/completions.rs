//! `completions <shell>`: the shell's completion script. The scripts call the binary back
//! (clap_complete's dynamic engine, through `GIT_WORKTREE_PORTS_COMPLETE`), so worktree and
//! service names come from the repository the shell is in. bash and zsh get a few lines more
//! that plug into git's own completion: git's bash completion calls `_git_worktree_ports`,
//! zsh's `_git` calls `_git-worktree-ports`.
//!
//! Reads the repository only when the shell asks for candidates; never writes.

use clap_complete::engine::{ArgValueCandidates, CompletionCandidate};
use clap_complete::env::{Bash, Elvish, EnvCompleter, Fish, Powershell, Zsh};

use crate::cli::{CompletionsArgs, Shell};
use crate::commands::Report;
use crate::workspace::Workspace;

/// The environment variable the scripts set when they ask the binary for candidates.
pub const VAR: &str = "GIT_WORKTREE_PORTS_COMPLETE";
/// The program the scripts complete and call (found on PATH, so a reinstall keeps working).
pub const BIN: &str = "git-worktree-ports";

/// Run `completions`.
pub fn run(args: &CompletionsArgs) -> anyhow::Result<Report> {
    let mut buf = Vec::new();
    let shell: &dyn EnvCompleter = match args.shell {
        Shell::Bash => &Bash,
        Shell::Zsh => &Zsh,
        Shell::Fish => &Fish,
        Shell::Powershell => &Powershell,
        Shell::Elvish => &Elvish,
    };
    shell.write_registration(VAR, BIN, BIN, BIN, &mut buf)?;
    let mut text = String::from_utf8(buf).expect("clap_complete writes UTF-8");
    match args.shell {
        Shell::Bash => text.push_str(BASH_GIT),
        Shell::Zsh => text.push_str(ZSH_GIT),
        Shell::Fish => text.push_str(FISH_GIT),
        _ => {}
    }
    Ok(Report::ok(text))
}

/// `git worktree-ports <TAB>` in bash: git's completion (`__git_main`) calls this with
/// `words`, `cword` and `__git_cmd_idx` (where `worktree-ports` is) set. git registers
/// itself with `-o nospace`, so a finished word gets its space here, as git's own do.
const BASH_GIT: &str = r#"
_git_worktree_ports() {
    local IFS=$'\013'
    local i=${__git_cmd_idx:-1}
    local args=("git-worktree-ports" "${words[@]:i+1}")
    # `git -C <dir> worktree-ports ...`: complete from <dir>, as git will run there.
    local dir="" k
    for ((k = 1; k < ${#__git_C_args[@]}; k += 2)); do
        case ${__git_C_args[k]} in
            /*) dir=${__git_C_args[k]} ;;
            *) dir=${dir:+$dir/}${__git_C_args[k]} ;;
        esac
    done
    local reply
    reply=( $( \
        if [[ -n $dir ]]; then cd -- "$dir" 2>/dev/null || exit 0; fi
        _CLAP_IFS="$IFS" \
        _CLAP_COMPLETE_INDEX="$((cword - i))" \
        GIT_WORKTREE_PORTS_COMPLETE="bash" \
        git-worktree-ports -- "${args[@]}" 2>/dev/null \
    ) ) || return 0
    local c
    COMPREPLY=()
    for c in "${reply[@]}"; do
        if [[ $c =~ [=/:]$ ]]; then COMPREPLY+=("$c"); else COMPREPLY+=("$c "); fi
    done
}
"#;

/// `git worktree-ports <TAB>` in zsh: `_git` calls `_git-worktree-ports` with `words`
/// starting at `worktree-ports`; `git <TAB>` offers it once it is a user command.
const ZSH_GIT: &str = r#"
function _git-worktree-ports() {
    words=(git-worktree-ports "${(@)words[2,-1]}")
    _clap_dynamic_completer_git_worktree_ports
}
zstyle -a ':completion:*:*:git:*' user-commands _git_worktree_ports_user
if (( ! ${_git_worktree_ports_user[(I)worktree-ports:*]} )); then
    zstyle ':completion:*:*:git:*' user-commands "${_git_worktree_ports_user[@]}" \
        'worktree-ports:ports, environment and names for every worktree'
fi
unset _git_worktree_ports_user
"#;

/// `git worktree-ports <TAB>` in fish: everything after `worktree-ports` goes to the same
/// engine, and `git <TAB>` offers `worktree-ports`. (fish 3.6's own git completion means to
/// do both for every `git-*` command on PATH, but its list is empty and it asks
/// `git-git-worktree-ports`, so file names were offered.) Loaded from `conf.d`, so it is
/// there before `git` is first completed.
const FISH_GIT: &str = r#"
function __git_worktree_ports_complete
    set -l tokens (commandline --current-process --tokenize --cut-at-cursor)
    set -l at (contains --index -- worktree-ports $tokens)
    set -l args
    if test (count $tokens) -gt $at
        set args $tokens[(math $at + 1)..-1]
    end
    GIT_WORKTREE_PORTS_COMPLETE=fish git-worktree-ports -- git-worktree-ports $args (commandline --current-token)
end
complete --keep-order --exclusive --command git --condition '__fish_seen_subcommand_from worktree-ports' --arguments '(__git_worktree_ports_complete)'
complete --no-files --command git --condition '__fish_git_needs_command' --arguments worktree-ports --description 'Ports, environment and names for every worktree'
"#;

/// The command line with its dynamic values: worktree names wherever a worktree is asked
/// for (`-w` or the positional one), service names for `get`, `--port SERVICE=`,
/// `release --service` and `allocate --move`.
pub fn command() -> clap::Command {
    let mut cmd = crate::cli::full_command();
    for sub in [
        "render", "env", "exec", "get", "status", "allocate", "release", "remove",
    ] {
        cmd = cmd.mut_subcommand(sub, |c| {
            c.mut_arg("worktree", |a| {
                a.add(ArgValueCandidates::new(worktree_names))
            })
        });
    }
    cmd = cmd.mut_subcommand("get", |c| {
        c.mut_arg("service", |a| a.add(ArgValueCandidates::new(service_names)))
    });
    cmd = cmd.mut_subcommand("release", |c| {
        c.mut_arg("services", |a| {
            a.add(ArgValueCandidates::new(service_names))
        })
    });
    for sub in ["allocate", "add"] {
        cmd = cmd.mut_subcommand(sub, |c| {
            c.mut_arg("ports", |a| {
                a.add(ArgValueCandidates::new(service_assignments))
            })
        });
    }
    cmd.mut_subcommand("allocate", |c| {
        c.mut_arg("moves", |a| a.add(ArgValueCandidates::new(service_names)))
    })
}

/// bash asked for the candidates (it inserts them as shell text, unquoted).
static ASKED_BY_BASH: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Answer the shell's question when `VAR` is set (and return normally when it is not).
pub fn answer_if_asked() {
    if std::env::var_os(VAR).is_none() {
        return;
    }
    // The engine clears the variable before it asks for candidates: note the shell first.
    let bash = std::env::var_os(VAR).is_some_and(|v| v == "bash");
    ASKED_BY_BASH.store(bash, std::sync::atomic::Ordering::Relaxed);
    clap_complete::CompleteEnv::with_factory(command)
        .var(VAR)
        .bin(BIN)
        .completer(BIN)
        .complete();
}

fn worktree_names() -> Vec<CompletionCandidate> {
    let Ok(ws) = Workspace::open() else {
        return Vec::new();
    };
    let Ok(worktrees) = ws.worktrees() else {
        return Vec::new();
    };
    // bash puts a candidate on the command line as it is: a name is shell text there (git
    // allows `$`, `(`, `)` and spaces), so it goes quoted. zsh and fish quote what they insert.
    let bash = ASKED_BY_BASH.load(std::sync::atomic::Ordering::Relaxed);
    worktrees
        .iter()
        .map(|w| {
            let value = match bash {
                true => crate::model::names::bash_word(&w.key).into_owned(),
                false => w.key.clone(),
            };
            CompletionCandidate::new(value).help(Some(w.path.display().to_string().into()))
        })
        .collect()
}

fn services() -> Vec<String> {
    Workspace::open()
        .and_then(|ws| ws.target(None))
        .map(|t| t.config.services.iter().map(|s| s.name.clone()).collect())
        .unwrap_or_default()
}

fn service_names() -> Vec<CompletionCandidate> {
    services()
        .into_iter()
        .map(CompletionCandidate::new)
        .collect()
}

fn service_assignments() -> Vec<CompletionCandidate> {
    services()
        .into_iter()
        .map(|s| CompletionCandidate::new(format!("{s}=")))
        .collect()
}
