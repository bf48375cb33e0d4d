//! `get <service> [-w <worktree>]`: the port alone on stdout, for scripts. Reads without the
//! lock; never writes, never allocates.

use serde_json::json;

use crate::cli::GetArgs;
use crate::commands::Report;
use crate::error::{Code, Error};
use crate::workspace::{Workspace, dispose};

/// Run `get`.
pub fn run(args: &GetArgs) -> anyhow::Result<Report> {
    let ws = Workspace::open()?;
    let reg = ws.load_unlocked()?;
    let key = ws.registry_key(&reg, args.worktree.as_deref())?;
    let held = reg.ports(&key).cloned();
    dispose(reg);
    let Some(ports) = held else {
        return Err(Error::new(
            Code::NotAllocated,
            format!(
                "worktree {key} has no ports allocated; run `git worktree-ports allocate` there"
            ),
        )
        .with_details(json!({"worktree": key}))
        .into());
    };
    match ports.get(&args.service) {
        Some(port) => Ok(Report::ok(format!("{port}\n"))),
        None => {
            let names: Vec<&str> = ports.iter().map(|(s, _)| s).collect();
            Err(Error::new(
                Code::UnknownService,
                format!(
                    "worktree {key} has no port for service {:?}; it has: {}",
                    args.service,
                    names.join(", ")
                ),
            )
            .with_details(json!({"worktree": key, "service": args.service, "services": names}))
            .into())
        }
    }
}
