//! git-worktree-ports: every git worktree gets its own, non-conflicting set of service ports,
//! kept in `<git-common-dir>/worktree-registry/ports.json`.
//!
//! `src/` is grouped by layer, in the direction data flows: `cli -> commands` (presenters)
//! `-> workspace` (use cases) `-> {registry, machine, render} -> sys` (the OS edge), with
//! `model` (pure rules and data) beneath them all and `proxy` the async island. Only [`run`]
//! and [`report_error`] print to stdout. ARCHITECTURE.md has the layers and who may import
//! whom; `tests/cli/layers.rs` enforces it.

pub mod cli;
pub mod commands;
pub mod machine;
pub mod mcp;
pub mod model;
pub mod output;
pub mod proxy;
pub mod registry;
pub mod render;
pub mod sys;
pub mod workspace;

use std::io::{self, Write};
use std::process::ExitCode;

use cli::{Cli, Command};
use model::error;
use output::colour;

/// Run a parsed command line: print its output and return the exit code. Errors are left to
/// the caller, which prints them with [`report_error`].
pub fn run(cli: &Cli) -> anyhow::Result<ExitCode> {
    commands::set_colour(cli.color);
    let Some(command) = &cli.command else {
        let name = cli
            .print_schema
            .expect("clap prints help when nothing is given");
        print_stdout(&commands::schema::print(name))?;
        return Ok(ExitCode::SUCCESS);
    };
    let report = match command {
        Command::Mcp(a) => mcp::serve(a)?,
        command => {
            if !command.serves() {
                sys::heap::keep_freed_memory();
            }
            commands::run(command)?
        }
    };
    if let Err(e) = print_stdout(&report.stdout) {
        // A reader that went away (`| head`) is no failure; anything else is: a script that
        // got no port must not see exit 0.
        if e.kind() != io::ErrorKind::BrokenPipe {
            eprintln!("git-worktree-ports: error: could not write output: {e}");
            return Ok(ExitCode::FAILURE);
        }
    }
    Ok(if report.success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A command line clap refused, for a caller that asked for `--json`: the error object on
/// stdout (code `USAGE_ERROR`; the exit code stays 2).
pub fn report_usage_error(err: &clap::Error) {
    let message = commands::usage_message(err);
    let e = error::Error::new(
        error::Code::UsageError,
        format!("{message}; `git worktree-ports -h` lists the commands and options"),
    );
    let text = commands::schema::pretty(e.to_json());
    if print_stdout(&text).is_err() {
        eprintln!("git-worktree-ports: error: {e}");
    }
}

/// Print a failure: the seed's JSON object on stdout with `--json`, else one line on stderr.
pub fn report_error(err: &anyhow::Error, json: bool) {
    let e = error::classify(err);
    if json {
        let text = commands::schema::pretty(e.to_json());
        if print_stdout(&text).is_err() {
            eprintln!("git-worktree-ports: error: {e}");
        }
    } else {
        let label = colour::paint_err("error:", colour::Colour::Red);
        eprintln!("git-worktree-ports: {label} {e}");
    }
}

/// Write to stdout, reporting every failure (a full disk, a closed stdout) to the caller.
fn print_stdout(text: &str) -> io::Result<()> {
    if text.is_empty() {
        return Ok(());
    }
    if sys::stdio::stdout_was_closed() {
        return Err(io::Error::other("standard output is closed"));
    }
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes()).and_then(|()| out.flush())
}

#[cfg(test)]
mod tests {
    /// build.rs links GCC's unwinder statically (libgcc_eh) instead of loading libgcc_s:
    /// this test binary is linked the same way, and a panic still unwinds through it (with
    /// drops run on the way), as the MCP server's and the proxy's tasks rely on.
    #[test]
    fn a_panic_unwinds_through_the_unwinder_linked_in() {
        struct Dropped<'a>(&'a std::cell::Cell<bool>);
        impl Drop for Dropped<'_> {
            fn drop(&mut self) {
                self.0.set(true);
            }
        }
        let dropped = std::cell::Cell::new(false);
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _guard = Dropped(&dropped);
            panic!("unwound");
        }));
        assert!(caught.is_err());
        assert!(dropped.get());
    }
}
