//! The process's heap: how much of what a command frees malloc keeps for its next
//! allocation. No files, no sockets.

/// For a command that runs briefly (every one but the proxy and the MCP server): memory it
/// frees stays in malloc's heap for its next allocation instead of going back to the kernel,
/// and blocks of up to 32 MiB come from that heap instead of a mapping of their own. Each
/// page the kernel hands a process costs a page fault, about 1.5 us on a VM (BENCHMARKS.md,
/// "Sixteenth session"); with glibc's defaults, a block of 128 KiB or more (a registry's
/// entries collected before its map is built) is a mapping of its own, unmapped when freed,
/// so the next large block faults in fresh pages again: 180 of the 950 page faults of a fresh
/// allocation among 10,000 worktrees. A server keeps glibc's defaults: it lives long, and
/// should give back what a burst took.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets two of malloc's thresholds (no pointer, no memory of ours
        // changes), under malloc's own lock.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
        }
    }
}
