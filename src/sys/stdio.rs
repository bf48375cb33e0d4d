//! The process's standard streams.
//!
//! A closed standard descriptor is reopened on `/dev/null` (read-write) before anything else
//! ([`prepare_process`], what Rust's runtime does before `main`), where every write would
//! vanish with success. A read-write `/dev/null` is no proof
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

/// Runs [`record_stdout`] before [`prepare_process`] reopens a closed fd 1.
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

/// What Rust's runtime does before `main` that this binary needs, for its `#![no_main]`
/// entry (main.rs says why): descriptors 0-2 that are closed are opened on `/dev/null`
/// read-write (else the first file the process opens would take the number, and a warning
/// written to "stderr" would land in it), and SIGPIPE is ignored (a write to a pipe whose
/// reader left is EPIPE, which `run` reports, not a silent death). Children still start
/// with SIGPIPE at its default: std resets it when it spawns them.
pub fn prepare_process() {
    let mut fds = [0, 1, 2].map(|fd| libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    });
    let polled = loop {
        // SAFETY: poll is given an array of three entries and the length 3; with no events
        // asked for and a zero timeout it only reports which descriptors are invalid.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 3, 0) };
        if n != -1 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            break n != -1;
        }
    };
    for (fd, pfd) in (0..3).zip(fds) {
        let closed = match polled {
            true => pfd.revents & libc::POLLNVAL != 0,
            // SAFETY: F_GETFD only asks whether the descriptor is open; it changes nothing.
            false => (unsafe { libc::fcntl(fd, libc::F_GETFD) }) == -1,
        };
        // SAFETY: a C string literal; open returns the lowest free descriptor, which is this
        // one (the lower ones are open, or were opened here just before).
        if closed && unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) } != fd {
            std::process::abort();
        }
    }
    // SAFETY: setting a signal's disposition to SIG_IGN installs no handler code.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
}

/// Keep the standard streams for a protocol, and point fd 0 and fd 1 elsewhere: stdin at
/// `/dev/null`, stdout at stderr. Returns the protocol's input and output (close-on-exec
/// copies of the old fd 0 and fd 1).
///
/// What this guards: a protocol spoken on stdout (MCP) breaks at the first stray byte, and
/// a child process inherits fd 0 and fd 1 (a user's post-checkout hook that `git worktree
/// add` runs, an `[on] allocate` command, a `println!` anywhere). After this, every such
/// byte goes to stderr, and no child can read the protocol's input.
pub fn take_for_protocol() -> std::io::Result<(std::fs::File, std::fs::File)> {
    use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
    // SAFETY: fds 0 and 1 are open for the whole process ([`prepare_process`] reopens closed
    // ones on /dev/null first thing); they are only borrowed here to be duplicated.
    let (stdin, stdout) = unsafe { (BorrowedFd::borrow_raw(0), BorrowedFd::borrow_raw(1)) };
    let input: OwnedFd = rustix::io::fcntl_dupfd_cloexec(stdin, 3)?;
    let output: OwnedFd = rustix::io::fcntl_dupfd_cloexec(stdout, 3)?;
    let null = std::fs::File::open("/dev/null")?;
    let stderr = std::io::stderr();
    // SAFETY: dup2 onto 0 and 1 replaces the descriptors std's handles write to; nothing
    // else holds them (the protocol uses the copies above).
    unsafe {
        if libc::dup2(null.as_raw_fd(), 0) == -1 || libc::dup2(stderr.as_fd().as_raw_fd(), 1) == -1
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok((input.into(), output.into()))
}
