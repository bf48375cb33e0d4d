//! A progress line on stderr for work that can take more than a second (`prune --all`,
//! `status --machine`, `render --all`, `doctor`, `repair`): `git-worktree-ports: render 3/40
//! feature-x`, rewritten in place, erased when done. Only on a terminal, and only once the
//! work has run for a second (GIT_WORKTREE_PORTS_PROGRESS_AFTER_MS changes that, for tests),
//! so quick commands and pipes never see it.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Overrides the one-second delay (milliseconds).
pub const AFTER_ENV: &str = "GIT_WORKTREE_PORTS_PROGRESS_AFTER_MS";

/// One unit of work with a known number of steps.
pub struct Progress {
    what: &'static str,
    total: usize,
    start: Instant,
    after: Duration,
    on: bool,
    shown: bool,
}

impl Progress {
    /// `what`: the verb shown (`prune`, `render`); `total`: how many steps.
    pub fn new(what: &'static str, total: usize) -> Progress {
        let after = std::env::var(AFTER_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
            .map_or(Duration::from_secs(1), Duration::from_millis);
        Progress {
            what,
            total,
            start: Instant::now(),
            after,
            on: total > 1 && std::io::stderr().is_terminal(),
            shown: false,
        }
    }

    /// Step `done` (0-based) of the total begins, on `item`.
    pub fn step(&mut self, done: usize, item: &str) {
        if !self.on || self.start.elapsed() < self.after {
            return;
        }
        let mut err = std::io::stderr().lock();
        // \r and "erase line": the next step or the end overwrites it.
        let _ = write!(
            err,
            "\r\x1b[2Kgit-worktree-ports: {} {}/{} {item}",
            self.what,
            done + 1,
            self.total
        );
        let _ = err.flush();
        self.shown = true;
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if self.shown {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        }
    }
}
