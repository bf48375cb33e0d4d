//! Every child command starts here: `exec`'s program (replacing us), a leased command (our
//! signals passed on), an `[on]` command (`sh -c` with the worktree's variables), the proxy's
//! daemon (detached). Values reach a child as arguments or environment variables, never
//! pasted into shell text by this module.

use std::io;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};

pub use crate::model::names::shell_word as quote;

/// [`quote`] into a writer (tera's escape function).
pub fn quote_into(text: &str, out: &mut dyn io::Write) -> io::Result<()> {
    out.write_all(quote(text).as_bytes())
}

/// `argv` with `env` added to ours.
fn command(argv: &[String], env: &[(String, String)]) -> Command {
    let (program, rest) = argv.split_first().expect("a command line has a program");
    let mut cmd = Command::new(program);
    cmd.args(rest).envs(env.iter().map(|(k, v)| (k, v)));
    cmd
}

/// Replace this process with `argv` (so its exit code and signals pass through untouched);
/// returns only the error that kept it from starting. Off Unix: run it and exit with its code.
pub fn exec(argv: &[String], env: &[(String, String)]) -> io::Error {
    let mut cmd = command(argv, env);
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        cmd.exec()
    }
    #[cfg(not(unix))]
    {
        match cmd.status() {
            Ok(status) => std::process::exit(status.code().unwrap_or(1)),
            Err(e) => e,
        }
    }
}

/// Run `argv` with `env` and wait for it, passing our SIGTERM and SIGHUP on
/// ([`wait_forwarding_signals`]); the exit code a shell would report.
pub fn run_forwarding_signals(argv: &[String], env: &[(String, String)]) -> io::Result<i32> {
    wait_forwarding_signals(command(argv, env).spawn()?)
}

/// Run `script` with `sh -c` in `dir`, with `env` added, stdin closed and its stdout sent to
/// our stderr (our stdout is the command's answer: `env`, `--json`).
pub fn run_sh(script: &str, dir: &Path, env: &[(String, String)]) -> io::Result<ExitStatus> {
    let stdout = {
        use std::os::fd::AsFd;
        (io::stderr().as_fd().try_clone_to_owned()).map_or_else(|_| Stdio::null(), Stdio::from)
    };
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(stdout)
        .status()
}

/// Start this very program again with `args`, as a daemon: in a session of its own (setsid
/// before exec, so a closed terminal does not take it down), stdin closed, stdout and stderr
/// to `log` (the proxy).
pub fn spawn_daemon(args: &[String], log: std::fs::File) -> io::Result<Child> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    use std::os::unix::process::CommandExt;
    // SAFETY: setsid is async-signal-safe and touches only the child, between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let _ = rustix::process::setsid();
            Ok(())
        });
    }
    cmd.spawn()
}

/// The child our signal handler passes signals on to.
static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(signal: libc::c_int) {
    let child = CHILD.load(Ordering::SeqCst);
    if child > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(child, signal) };
    }
}

/// Wait for `child`, passing SIGTERM and SIGHUP on to it, ignoring SIGINT and SIGQUIT (the
/// terminal sends those to the child directly, and they must not stop us before we clean
/// up). Returns the exit code a shell would report (128 + signal when it was killed).
pub fn wait_forwarding_signals(mut child: Child) -> io::Result<i32> {
    CHILD.store(child.id() as i32, Ordering::SeqCst);
    // SAFETY: installing handlers that only call kill(); SIG_IGN for the terminal's signals.
    unsafe {
        libc::signal(libc::SIGTERM, forward as *const () as libc::sighandler_t);
        libc::signal(libc::SIGHUP, forward as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGQUIT, libc::SIG_IGN);
    }
    let status = child.wait()?;
    CHILD.store(0, Ordering::SeqCst);
    use std::os::unix::process::ExitStatusExt;
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `sh` makes of a quoted word is the word itself, whatever its bytes.
    #[test]
    fn quoted_words_reach_the_shell_as_they_are() {
        assert_eq!(quote("feature-x"), "feature-x");
        assert_eq!(quote("8080"), "8080");
        assert_eq!(quote(""), "''");
        // A child holds copies of our sockets between fork and exec: not while a socket test
        // checks that a closed listener is gone.
        let _ports = crate::sys::probe::EPHEMERAL_PORTS
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for word in [
            "x$(touch${IFS}PWNED)",
            "a b",
            "it's",
            "`id`",
            "; rm -rf /",
            "\\n",
            "é",
        ] {
            let out = Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {}", quote(word)))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8(out.stdout).unwrap(), word, "{word}");
        }
    }
}
