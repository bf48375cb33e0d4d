//! `get <service> [-w <worktree>]`: the port alone on stdout, for scripts. Reads without the
//! lock; never writes, never allocates.

use serde_json::json;

use crate::cli::GetArgs;
use crate::commands::{Ctx, Report, absolute, not_found};
use crate::error::{Code, Error};

/// Run `get`.
pub fn run(args: &GetArgs) -> anyhow::Result<Report> {
    let ctx = Ctx::open()?;
    let reg = ctx.load_unlocked()?;
    let key = match args.worktree.as_deref() {
        // A registry key needs no worktree listing (the common case stays cheap).
        Some(spec) if reg.allocated_ports.contains_key(spec) => spec.to_string(),
        Some(spec) => {
            let worktrees = ctx.repo.worktrees()?;
            match crate::commands::find_worktree(spec, &worktrees) {
                Some(w) => w.key.clone(),
                // A worktree that is gone is still reachable through its recorded path.
                None => {
                    let abs = absolute(spec);
                    reg.worktrees
                        .iter()
                        .find(|(_, r)| {
                            r.get()
                                .is_some_and(|r| std::path::Path::new(&r.path) == abs)
                        })
                        .map(|(k, _)| k.clone())
                        .ok_or_else(|| not_found(spec, &worktrees))?
                }
            }
        }
        None => ctx.current_key()?,
    };
    let Some(ports) = reg.allocated_ports.get(&key) else {
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
            let names: Vec<&str> = ports.keys().map(String::as_str).collect();
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
