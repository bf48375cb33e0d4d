//! Child processes: how they are started (detached from our session, or with our signals
//! passed on), so that no command outside `sys` calls `libc`. Values reach a child as
//! arguments or environment variables, never pasted into shell text.

use std::process::{Child, Command};
use std::sync::atomic::{AtomicI32, Ordering};

/// Make `cmd` start in a session of its own (setsid before exec): a closed terminal does not
/// take it down (the proxy's daemon).
pub fn detach(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setsid is async-signal-safe and touches only the child, between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
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
pub fn wait_forwarding_signals(mut child: Child) -> std::io::Result<i32> {
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
