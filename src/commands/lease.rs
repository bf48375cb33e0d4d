//! `lease [--count N] [--range A-B] [--ttl D] [--json] [-- COMMAND...]`: free ports for a
//! while, outside any worktree, recorded machine-wide in the index (under the machine lock),
//! so no allocation and no other lease gets them meanwhile. With a command: run it with
//! `LEASE_PORT` (the first), `LEASE_PORTS` (all, space-separated) and `LEASE_ID`, and give the
//! ports back when it exits (its exit code passes through; killed by a signal: 128 + the
//! signal). Without: print the ports (stdout, space-separated) and hold them until the TTL or
//! `release --lease ID`. A lease whose holder died or whose TTL passed is reclaimed by the
//! next command that holds the machine lock.

use std::time::{Duration, UNIX_EPOCH};

use schemars::JsonSchema;
use serde::Serialize;

use crate::cli::LeaseArgs;
use crate::commands::Report;
use crate::model::clock::rfc3339;
use crate::workspace::{self, ports_text};

/// `lease --json`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct LeaseAnswer {
    /// The lease's id (`release --lease ID`).
    pub id: String,
    /// The leased ports.
    pub ports: Vec<u16>,
    /// When it ends (RFC 3339, UTC).
    pub expires_at: String,
}

/// Run `lease`.
pub fn run(args: &LeaseArgs) -> anyhow::Result<Report> {
    let (id, lease) =
        workspace::take_lease(args.range, usize::from(args.count), args.ttl, &args.command)?;
    if args.command.is_empty() {
        let until = lease
            .expires_at
            .map(|t| rfc3339(UNIX_EPOCH + Duration::from_secs(t)))
            .unwrap_or_default();
        workspace::note(&format!(
            "lease {id}: held until {until}; give the ports back sooner with `git worktree-ports release --lease {id}`"
        ));
        let report = Report::ok(format!("{}\n", ports_text(&lease.ports)));
        return Ok(report.or_answer(
            args.json,
            LeaseAnswer {
                id,
                ports: lease.ports,
                expires_at: until,
            },
        ));
    }
    // The command's exit code passes through; the ports are given back either way.
    let code = workspace::run_leased(&id, &lease, &args.command)?;
    std::process::exit(code)
}
