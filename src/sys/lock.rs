//! One generic file lock: [`acquire`] a lock file (created if missing, never renamed or
//! deleted, so every process locks the same inode), polling with backoff, telling the user once
//! when it takes a while, and giving up with LOCK_TIMEOUT. The kernel drops the lock when the
//! holder exits, also on a crash; std opens with O_CLOEXEC, so spawned processes (git, hooks)
//! never inherit it.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::model::error::{Code, Details, Error, LockTimeout};
use crate::sys::fsio::{self, Mode};

/// Default time to wait for a lock.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Environment variable overriding the lock timeout (seconds, fractions allowed).
pub const TIMEOUT_ENV: &str = "GIT_WORKTREE_PORTS_LOCK_TIMEOUT";

/// Longest wait the timeout variable can ask for: a year is "wait very long" (and keeps
/// `Instant` arithmetic far from overflow).
const MAX_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

/// A held lock; released on drop.
#[derive(Debug)]
pub struct FileLock {
    _file: File,
}

/// Take the lock on `path`, waiting up to `timeout`; `on_wait` is called once, after about a
/// second of waiting.
pub fn acquire(
    path: &Path,
    timeout: Duration,
    on_wait: &dyn Fn(&Path),
) -> anyhow::Result<FileLock> {
    acquire_with(path, Mode::Fixed(0o644), timeout, on_wait)
}

/// [`acquire`], the lock file made with `mode`'s bits; with [`Mode::FixedIn`] (a shared
/// repository's, which every member of its group must be able to open and lock) exactly
/// those, whatever the umask, and its folder too.
pub fn acquire_with(
    path: &Path,
    mode: Mode,
    timeout: Duration,
    on_wait: &dyn Fn(&Path),
) -> anyhow::Result<FileLock> {
    // A shared repository's folder has its bits checked every time; any other is made only
    // when the lock file cannot be opened for want of it.
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let (Some(dir), Mode::FixedIn { .. }) = (dir, mode) {
        fsio::create_dirs_for(dir, mode)?;
    }
    let mut opts = OpenOptions::new();
    opts.create(true).truncate(false).write(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, mode.file_bits().unwrap_or(0o644));
    let open = || match opts.open(path) {
        // A lock file another user made without write for us still locks when opened for
        // reading (flock needs no write access).
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied && path.is_file() => {
            File::open(path)
        }
        other => other,
    };
    let file = match (open(), dir) {
        (Err(e), Some(dir)) if e.kind() == std::io::ErrorKind::NotFound => {
            fsio::create_dirs_for(dir, mode)?;
            open()
        }
        (other, _) => other,
    }
    .with_context(|| format!("could not open lock file {}", path.display()))?;
    #[cfg(unix)]
    if let Mode::FixedIn { file: bits, .. } = mode {
        // The umask took the group's bits from a new file; a lock file of ours from before
        // the repository was shared gets them too.
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        if let Ok(meta) = file.metadata()
            && meta.uid() == rustix::process::geteuid().as_raw()
            && meta.mode() & bits != bits
        {
            let _ = file.set_permissions(std::fs::Permissions::from_mode(
                (meta.mode() & 0o7777) | bits,
            ));
        }
    }
    let start = Instant::now();
    let mut told = false;
    let mut delay = Duration::from_millis(1);
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(TryLockError::WouldBlock) => {}
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("could not lock {}", path.display()));
            }
        }
        let waited = start.elapsed();
        if waited >= timeout {
            return Err(Error::new(
                Code::LockTimeout,
                format!(
                    "timed out after {:.1}s waiting for lock on {}; another git-worktree-ports is still running (a stuck one can be stopped safely), or raise {TIMEOUT_ENV}",
                    timeout.as_secs_f64(),
                    path.display()
                ),
            )
            .with(Details::Lock(LockTimeout {
                lock: path.display().to_string(),
                timeout_secs: timeout.as_secs_f64(),
            }))
            .into());
        }
        if !told && waited >= Duration::from_secs(1) {
            on_wait(path);
            told = true;
        }
        std::thread::sleep(delay.min(timeout.saturating_sub(waited)));
        delay = (delay * 2).min(Duration::from_millis(20));
    }
    Ok(FileLock { _file: file })
}

/// The timeout from [`TIMEOUT_ENV`], else [`DEFAULT_TIMEOUT`]. Values above a year wait a
/// year; anything that is not a number of seconds is refused.
pub fn timeout_from_env() -> anyhow::Result<Duration> {
    match std::env::var(TIMEOUT_ENV) {
        Err(std::env::VarError::NotPresent) => Ok(DEFAULT_TIMEOUT),
        Err(std::env::VarError::NotUnicode(v)) => Err(bad_timeout(&v.to_string_lossy())),
        Ok(s) => parse_timeout(&s).ok_or_else(|| bad_timeout(&s)),
    }
}

fn parse_timeout(s: &str) -> Option<Duration> {
    let v = s.trim().parse::<f64>().ok()?;
    if v.is_nan() || v < 0.0 {
        return None;
    }
    // f64 -> Duration panics above about 1.8e19 seconds (and on infinity): clamp first.
    Some(if v >= MAX_TIMEOUT.as_secs_f64() {
        MAX_TIMEOUT
    } else {
        Duration::from_secs_f64(v)
    })
}

fn bad_timeout(s: &str) -> anyhow::Error {
    Error::new(
        Code::ConfigInvalid,
        format!("{TIMEOUT_ENV}={s:?} is not a number of seconds; set it to e.g. 30, or unset it for the default of {}s", DEFAULT_TIMEOUT.as_secs()),
    )
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_locker_times_out_and_gets_the_lock_once_it_is_free() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/x.lock");
        let held = acquire(&path, Duration::from_secs(5), &|_| {}).unwrap();
        let err = acquire(&path, Duration::from_millis(50), &|_| {}).unwrap_err();
        assert_eq!(crate::model::error::classify(&err).code, Code::LockTimeout);
        drop(held);
        assert!(acquire(&path, Duration::from_millis(50), &|_| {}).is_ok());
        assert!(path.exists(), "the lock file stays");
    }

    #[test]
    fn timeouts_parse_clamp_and_refuse() {
        assert_eq!(parse_timeout("2.5"), Some(Duration::from_millis(2500)));
        assert_eq!(parse_timeout(" 0 "), Some(Duration::ZERO));
        // Regression: 1e20 panicked in Duration::from_secs_f64 (exit 101 in every command).
        assert_eq!(parse_timeout("1e20"), Some(MAX_TIMEOUT));
        assert_eq!(parse_timeout("inf"), Some(MAX_TIMEOUT));
        assert_eq!(parse_timeout("-1"), None);
        assert_eq!(parse_timeout("NaN"), None);
        assert_eq!(parse_timeout("soon"), None);
    }
}
