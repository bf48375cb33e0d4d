//! `release [<worktree>] [--service S]... [--json]`: give a worktree's ports back, under the
//! lock. A worktree that is gone from git can still be named by its registry key or path.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Serialize;

use crate::cli::ReleaseArgs;
use crate::commands::{Report, ports_inline};
use crate::model::error::{Code, Details, Error, UnknownService};
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
    let mut unlocked = ws.read()?;
    let key = ws.registry_key(&unlocked.registry, args.worktree.as_deref())?;
    if args.services.is_empty() && unlocked.registry.ports(&key).is_some() {
        // Never under the lock: the command may take its time (`docker compose down`).
        ws.before_release(&key);
        unlocked = ws.read()?;
    }
    let lock = ws.lock()?;
    let mut reg = ws.load_locked(&lock, Some(unlocked))?;
    let held = reg.ports(&key).cloned().unwrap_or_default();
    let released: BTreeMap<String, u16> = if args.services.is_empty() {
        let had = reg.knows(&key);
        let ports = reg.remove_worktree(&key);
        if had {
            ws.save(&lock, &mut reg)?;
        }
        ports
    } else {
        for s in &args.services {
            if held.get(s).is_none() {
                let names: Vec<&str> = held.iter().map(|(s, _)| s).collect();
                return Err(Error::new(
                    Code::UnknownService,
                    format!(
                        "worktree {key} has no port for service {s:?}; it has: {}",
                        if names.is_empty() {
                            "none".into()
                        } else {
                            names.join(", ")
                        }
                    ),
                )
                .with(Details::UnknownService(UnknownService {
                    service: s.clone(),
                    services: names.iter().map(|n| n.to_string()).collect(),
                    worktree: Some(key.clone()),
                }))
                .into());
            }
        }
        let released = reg.release_services(&key, &args.services);
        ws.save(&lock, &mut reg)?;
        released
    };
    drop(lock);

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
