//! The `git-worktree-ports` binary: parse, run, map the outcome to an exit code
//! (0 success, 1 a failure the tool reports, 2 a usage error from clap, 101 a panic).
//!
//! `#![no_main]`: the C `main` below is the entry, not Rust's runtime start-up, which costs
//! 70-100 us of every start here (BENCHMARKS.md, "Fourteenth session": it reads and parses
//! /proc/self/maps to find the main thread's stack guard, and sets up a signal stack for a
//! stack overflow message), a twentieth of a command. What of it this binary needs is done
//! first thing ([`sys::stdio::prepare_process`]: closed standard descriptors, SIGPIPE); a
//! panic is caught and exits 101 as it would; stdout is flushed before returning, as the
//! runtime's clean-up would. Arguments come from glibc, as before (std reads them from
//! `.init_array`). A stack overflow is a plain SIGSEGV, without the runtime's message.
#![no_main]

use std::ffi::{c_char, c_int};
use std::io::Write;
use std::process::ExitCode;

use git_worktree_ports::sys;

use git_worktree_ports::cli::Cli;

#[unsafe(no_mangle)]
extern "C" fn main(_argc: c_int, _argv: *const *const c_char) -> c_int {
    sys::stdio::prepare_process();
    let code = match std::panic::catch_unwind(run) {
        Ok(code) if code == ExitCode::SUCCESS => 0,
        Ok(code) if code == ExitCode::from(2) => 2,
        Ok(_) => 1,
        // The panic hook said what happened, on stderr.
        Err(_) => 101,
    };
    let _ = std::io::stdout().flush();
    code
}

fn run() -> ExitCode {
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

/// `pow`, the one function the binary took from glibc's libm (tera's `**`, tokio's scheduler
/// statistics, and Rust's `f64::powf` call it), defined here from the `libm` crate (musl's,
/// within 1 ULP, as glibc's): a start then loads no libm, 0.05-0.06 ms of every command
/// (BENCHMARKS.md, "Fourteenth session"). The bin only: the lib's test binaries keep glibc's.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[unsafe(no_mangle)]
pub extern "C" fn pow(x: f64, y: f64) -> f64 {
    libm::pow(x, y)
}

/// `--json`, `--format json` or `--format=json` on the command line, however else it failed.
fn asks_for_json() -> bool {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    args.iter().any(|a| a == "--json" || a == "--format=json")
        || args
            .windows(2)
            .any(|w| w[0] == "--format" && w[1] == "json")
}
