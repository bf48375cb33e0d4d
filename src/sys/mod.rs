//! THE OS EDGE: files, locks, git, sockets, processes and hooks. Every `unsafe` block and
//! `libc` call of the crate lives here. Imports only `model` (the data types it fills and the
//! traits it implements, such as the allocator's `Probe`).

pub mod config_file;
pub mod fault;
pub mod fsio;
pub mod git;
pub mod heap;
pub mod hooks;
pub mod lock;
pub mod probe;
pub mod procs;
pub mod shell;
pub mod stdio;
