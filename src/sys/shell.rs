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

/// Run `argv` with `env` and wait for it, passing our signals on ([`forward`]): the handlers
/// are in place before the child starts, so a signal that arrives while it starts is passed on
/// once it has (never leaving it running without us); the exit code a shell would report.
pub fn run_forwarding_signals(argv: &[String], env: &[(String, String)]) -> io::Result<i32> {
    install_forwarding();
    let child = match command(argv, env).spawn() {
        Ok(c) => c,
        Err(e) => {
            restore_defaults();
            return Err(e);
        }
    };
    wait_forwarding_signals(child)
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

/// The child our signal handler passes signals on to (0 while it starts).
static CHILD: AtomicI32 = AtomicI32::new(0);
/// A signal that arrived while the child was starting, to pass on once it runs.
static PENDING: AtomicI32 = AtomicI32::new(0);

/// SIGTERM and SIGHUP are passed on to the child. SIGINT and SIGQUIT too when a process sent
/// them (`kill -INT`: a supervisor, an agent); from the terminal (Ctrl-C, Ctrl-\) the kernel
/// sends them to the whole foreground group, the child included, so passing them on would
/// deliver them twice.
extern "C" fn forward(signal: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let code = match info.is_null() {
        true => libc::SI_USER,
        false => unsafe { (*info).si_code },
    };
    let by_a_process = code == libc::SI_USER || code == libc::SI_QUEUE;
    if (signal == libc::SIGINT || signal == libc::SIGQUIT) && !by_a_process {
        return;
    }
    match CHILD.load(Ordering::SeqCst) {
        0 => PENDING.store(signal, Ordering::SeqCst),
        // SAFETY: kill is async-signal-safe.
        child => unsafe {
            libc::kill(child, signal);
        },
    }
}

const FORWARDED: [libc::c_int; 4] = [libc::SIGTERM, libc::SIGHUP, libc::SIGINT, libc::SIGQUIT];

/// Put [`forward`] in place for the signals we pass on (a handler, not SIG_IGN: the child,
/// started after this, gets the default dispositions back at exec).
fn install_forwarding() {
    CHILD.store(0, Ordering::SeqCst);
    PENDING.store(0, Ordering::SeqCst);
    for signal in FORWARDED {
        // SAFETY: a zeroed sigaction with our handler and SA_SIGINFO | SA_RESTART is valid;
        // the handler only reads atomics and calls kill.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = forward as *const () as libc::sighandler_t;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

fn restore_defaults() {
    for signal in FORWARDED {
        // SAFETY: SIG_DFL is always a valid disposition.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
        }
    }
}

/// Wait for `child` (started after [`install_forwarding`]), passing our signals on. Returns the exit code a shell would report (128 + signal when
/// it was killed).
fn wait_forwarding_signals(mut child: Child) -> io::Result<i32> {
    CHILD.store(child.id() as i32, Ordering::SeqCst);
    let pending = PENDING.swap(0, Ordering::SeqCst);
    if pending != 0 {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe {
            libc::kill(child.id() as i32, pending);
        }
    }
    // The handlers stay: a signal now, while the caller gives the lease back, is not passed
    // on (there is no child) and does not cut that short.
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
