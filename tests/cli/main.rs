//! Integration tests: real repositories in temp dirs, the real binary, real sockets.
//! One test binary with a module per command (one link step instead of many).

mod support;

mod add;
mod allocate;
mod check;
mod concurrency;
mod corrupt;
mod dashboard;
mod docs;
mod doctor;
mod env_exec;
mod finish;
mod formats;
mod get;
mod hooks;
mod hostile;
mod json;
mod layers;
mod lease;
mod lifecycle;
mod list;
mod machine;
mod mcp;
mod names;
mod pins;
mod policies;
mod probe;
mod proxy;
mod prune;
mod regression;
mod release;
mod reliability;
mod remove;
mod repos;
mod status;
mod templates;
