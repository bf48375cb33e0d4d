//! Warnings and notes on stderr, as they happen. A caller that has no terminal to show them
//! on (the MCP server: an agent reads the tool's answer, never the server's stderr) collects
//! them instead with [`capture`], for the answer.

use std::cell::RefCell;

use crate::output::colour::{Colour, paint_err};

thread_local! {
    /// Messages of the [`capture`] running on this thread, if one is.
    static CAPTURED: RefCell<Option<Vec<String>>> = const { RefCell::new(None) };
}

/// `git-worktree-ports: warning: <msg>` on stderr (or into the running [`capture`]).
pub fn warn(msg: &str) {
    if keep(format!("warning: {msg}")) {
        return;
    }
    let label = paint_err("warning:", Colour::Yellow);
    eprintln!("git-worktree-ports: {label} {msg}");
}

/// `git-worktree-ports: <msg>` on stderr (or into the running [`capture`]): what happened
/// that is no problem (a lease's expiry and how to give it back).
pub fn note(msg: &str) {
    if keep(msg.to_string()) {
        return;
    }
    eprintln!("git-worktree-ports: {msg}");
}

/// Into the running capture; false when none runs on this thread.
fn keep(line: String) -> bool {
    CAPTURED.with(|c| match c.borrow_mut().as_mut() {
        Some(lines) => {
            lines.push(line);
            true
        }
        None => false,
    })
}

/// Run `f`, collecting the warnings and notes it gives on this thread instead of printing
/// them.
pub fn capture<R>(f: impl FnOnce() -> R) -> (R, Vec<String>) {
    let outer = CAPTURED.with(|c| c.replace(Some(Vec::new())));
    // Put the outer capture back even when `f` panics (the MCP server survives a panic).
    struct Restore(Option<Option<Vec<String>>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            if let Some(outer) = self.0.take() {
                CAPTURED.with(|c| c.replace(outer));
            }
        }
    }
    let mut restore = Restore(Some(outer));
    let r = f();
    let outer = restore.0.take().expect("set above");
    let lines = CAPTURED.with(|c| c.replace(outer)).unwrap_or_default();
    (r, lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_collects_warnings_and_notes_and_nests() {
        let ((), outer) = capture(|| {
            warn("a");
            let ((), inner) = capture(|| note("b"));
            assert_eq!(inner, ["b"]);
            warn("c");
        });
        assert_eq!(outer, ["warning: a", "warning: c"]);
        // None runs now: keep() says so.
        assert!(!keep("x".into()));
    }
}
