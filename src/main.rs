//! The `git-worktree-ports` binary: parse, run, map the outcome to an exit code
//! (0 success, 1 a failure the tool reports, 2 a usage error from clap).

use std::process::ExitCode;

use git_worktree_ports::cli::Cli;

fn main() -> ExitCode {
    // A shell asking for completions (GIT_WORKTREE_PORTS_COMPLETE set) is answered here.
    git_worktree_ports::commands::completions::answer_if_asked();
    let cli = match Cli::try_parse_args(std::env::args_os()) {
        Ok(cli) => cli,
        // A caller that asked for JSON gets the error object, whatever went wrong in parsing.
        Err(e) if e.use_stderr() && asks_for_json() => {
            git_worktree_ports::report_usage_error(&e);
            return ExitCode::from(2);
        }
        Err(e) => e.exit(),
    };
    match git_worktree_ports::run(&cli) {
        Ok(code) => code,
        Err(err) => {
            git_worktree_ports::report_error(&err, cli.json());
            ExitCode::FAILURE
        }
    }
}

/// `--json`, `--format json` or `--format=json` on the command line, however else it failed.
fn asks_for_json() -> bool {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    args.iter().any(|a| a == "--json" || a == "--format=json")
        || args
            .windows(2)
            .any(|w| w[0] == "--format" && w[1] == "json")
}
