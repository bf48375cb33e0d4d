//! `get <service> [-w <worktree>]`: the port alone on stdout, for scripts. Reads without the
//! lock; never writes, never allocates.

use serde_json::json;

use crate::cli::GetArgs;
use crate::commands::{Ctx, Report, dispose, registry_key};
use crate::error::{Code, Error};

/// Run `get`.
pub fn run(args: &GetArgs) -> anyhow::Result<Report> {
    let ctx = Ctx::open()?;
    let reg = ctx.load_unlocked()?;
    let key = registry_key(&ctx, &reg, args.worktree.as_deref())?;
    let held = reg.allocated_ports.get(&key).cloned();
    dispose(reg);
    let Some(ports) = held else {
        return Err(Error::new(
            Code::WorktreeNotFound,
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
