//! The `git-worktree-ports` binary: parse, run, map the outcome to an exit code
//! (0 success, 1 a failure the tool reports, 2 a usage error from clap).

use std::process::ExitCode;

use git_worktree_ports::cli::Cli;

fn main() -> ExitCode {
    // A shell asking for completions (GIT_WORKTREE_PORTS_COMPLETE set) is answered here.
    git_worktree_ports::commands::completions::answer_if_asked();
    let cli = Cli::parse_args();
    match git_worktree_ports::run(&cli) {
        Ok(code) => code,
        Err(err) => {
            git_worktree_ports::report_error(&err, cli.json());
            ExitCode::FAILURE
        }
    }
}
