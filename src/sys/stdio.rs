//! The process's standard streams.
//!
//! Rust's runtime reopens a closed standard descriptor on `/dev/null` (read-write) before
//! `main`, where every write would vanish with success. A read-write `/dev/null` is no proof
//! of a closed stdout, though: Python's `subprocess.DEVNULL`, Node's `stdio: 'ignore'` and a
//! shell's `1<>/dev/null` give exactly that to a program whose output is not wanted. So
//! whether fd 1 was open is asked before the runtime touches it, from a constructor the
//! loader runs before `main` (`.init_array`; `__mod_init_func` on macOS).

use std::sync::atomic::{AtomicBool, Ordering};

/// Fd 1 was closed when the process started (set before `main`).
static CLOSED_AT_START: AtomicBool = AtomicBool::new(false);

extern "C" fn record_stdout() {
    // SAFETY: F_GETFD only asks whether descriptor 1 is open; it changes nothing.
    let closed = unsafe { libc::fcntl(1, libc::F_GETFD) } == -1;
    CLOSED_AT_START.store(closed, Ordering::Relaxed);
}

/// Runs [`record_stdout`] before the runtime reopens a closed fd 1.
#[used]
#[cfg_attr(target_os = "linux", unsafe(link_section = ".init_array"))]
#[cfg_attr(target_os = "macos", unsafe(link_section = "__DATA,__mod_init_func"))]
static RECORD_STDOUT: extern "C" fn() = record_stdout;

/// True when the process started with its stdout closed (not when it is `/dev/null`, opened
/// read-write or not: output is then meant to vanish). Elsewhere than Linux and macOS the
/// answer is no; a write error (EBADF, EPIPE) still reaches the caller.
pub fn stdout_was_closed() -> bool {
    CLOSED_AT_START.load(Ordering::Relaxed)
}
