//! Crash and failure points for the reliability tests. In a debug build (what `cargo test`
//! builds), `GIT_WORKTREE_PORTS_FAULT=<point>` aborts the process at that point, like a crash:
//! no destructors, no cleanup, the kernel drops the lock; `GIT_WORKTREE_PORTS_FAULT=enospc:<point>`
//! makes the write at that point fail with "No space left on device";
//! `GIT_WORKTREE_PORTS_FAULT=pause:<point>` waits a second there (a race made to happen).
//! Release builds compile all three to nothing.

/// The variable naming the point.
pub const FAULT_ENV: &str = "GIT_WORKTREE_PORTS_FAULT";

/// Abort here if the test asked for it.
#[inline]
pub fn point(name: &str) {
    #[cfg(debug_assertions)]
    if std::env::var_os(FAULT_ENV).is_some_and(|v| v == name) {
        std::process::abort();
    }
    #[cfg(not(debug_assertions))]
    let _ = name;
}

/// Fail here with ENOSPC if the test asked for it (`enospc:<name>`).
#[inline]
pub fn io_point(name: &str) -> std::io::Result<()> {
    #[cfg(debug_assertions)]
    if std::env::var(FAULT_ENV).is_ok_and(|v| v.strip_prefix("enospc:") == Some(name)) {
        return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
    }
    #[cfg(not(debug_assertions))]
    let _ = name;
    Ok(())
}

/// Wait a second here if the test asked for it (`pause:<name>`): what another process does
/// meanwhile happens between this step and the next.
#[inline]
pub fn pause(name: &str) {
    #[cfg(debug_assertions)]
    if std::env::var(FAULT_ENV).is_ok_and(|v| v.strip_prefix("pause:") == Some(name)) {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    #[cfg(not(debug_assertions))]
    let _ = name;
}
