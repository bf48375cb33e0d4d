//! The process's standard streams.

/// True when the process started with its stdout closed. Rust's runtime reopens a closed
/// standard descriptor on `/dev/null` before `main` (read-write), where every write would
/// vanish with success; a shell's `>/dev/null` opens it write-only, and that one is meant.
#[cfg(unix)]
pub fn stdout_was_closed() -> bool {
    use rustix::fs::OFlags;
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let Ok(flags) = rustix::fs::fcntl_getfl(std::io::stdout().as_fd()) else {
        return true;
    };
    if flags & OFlags::RWMODE != OFlags::RDWR {
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
