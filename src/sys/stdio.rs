//! The process's standard streams.

/// True when the process started with its stdout closed. Rust's runtime reopens a closed
/// standard descriptor on `/dev/null` before `main` (read-write), where every write would
/// vanish with success; a shell's `>/dev/null` opens it write-only, and that one is meant.
#[cfg(unix)]
pub fn stdout_was_closed() -> bool {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: F_GETFL only reads the descriptor's flags.
    let flags = unsafe { libc::fcntl(1, libc::F_GETFL) };
    if flags == -1 {
        return true;
    }
    if flags & libc::O_ACCMODE != libc::O_RDWR {
        return false;
    }
    let (Ok(out), Ok(null)) = (
        std::fs::metadata("/dev/stdout"),
        std::fs::metadata("/dev/null"),
    ) else {
        return false;
    };
    out.rdev() == null.rdev() && out.dev() == null.dev() && out.ino() == null.ino()
}

#[cfg(not(unix))]
pub fn stdout_was_closed() -> bool {
    false
}
