//! Crash points for the reliability tests. In a debug build (what `cargo test` builds), the
//! process aborts at the point named by `GIT_WORKTREE_PORTS_FAULT`, like a crash: no
//! destructors, no cleanup, the kernel drops the lock. Release builds compile this to nothing.

/// The variable naming the point to abort at.
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
