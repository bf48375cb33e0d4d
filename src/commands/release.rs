//! `release [<worktree>] [--service S]... [--json]`: give a worktree's ports back, under the
//! lock. A worktree that is gone from git can still be named by its registry key or path.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Serialize;

use crate::cli::ReleaseArgs;
use crate::commands::{Report, ports_inline};
use crate::workspace::{self, Workspace};

/// `release --lease ID`: give a lease's ports back (from anywhere: leases are the machine's).
fn release_lease(id: &str, json: bool) -> anyhow::Result<Report> {
    let ports = workspace::release_lease(id)?;
    let text: Vec<String> = ports.iter().map(u16::to_string).collect();
    Ok(
        Report::ok(format!("released lease {id}: {}\n", text.join(" "))).or_answer(
            json,
            LeaseReleaseAnswer {
                lease: id.to_string(),
                released: ports,
            },
        ),
    )
}

/// `release --json`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ReleaseAnswer {
    /// The worktree's name.
    pub worktree: String,
    /// Service -> the port given back (empty: it had none).
    pub released: BTreeMap<String, u16>,
}

/// `release --lease ID --json`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct LeaseReleaseAnswer {
    /// The lease's id.
    pub lease: String,
    /// The ports given back.
    pub released: Vec<u16>,
}

/// Run `release`.
pub fn run(args: &ReleaseArgs) -> anyhow::Result<Report> {
    if let Some(id) = &args.lease {
        return release_lease(id, args.json);
    }
    let ws = Workspace::open()?;
    let (key, released) = ws.release(args.worktree.as_deref(), &args.services)?;

    if args.json {
        return Ok(Report::answer(ReleaseAnswer {
            worktree: key,
            released,
        }));
    }
    Ok(Report::ok(if released.is_empty() {
        format!("worktree {key} had no ports allocated; nothing to release\n")
    } else {
        format!("released from {key}: {}\n", ports_inline(&released))
    }))
}
