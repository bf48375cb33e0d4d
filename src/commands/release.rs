//! `release [<worktree>] [--service S]... [--json]`: give a worktree's ports back, under the
//! lock. A worktree that is gone from git can still be named by its registry key or path.

use std::collections::BTreeMap;

use serde_json::json;

use crate::cli::ReleaseArgs;
use crate::commands::{Ctx, Report, ports_inline, registry_key};
use crate::error::{Code, Error};
use crate::registry;

/// Run `release`.
pub fn run(args: &ReleaseArgs) -> anyhow::Result<Report> {
    let ctx = Ctx::open()?;
    let unlocked = registry::load_unlocked(&ctx.paths)?;
    let key = registry_key(&ctx, &unlocked.registry, args.worktree.as_deref())?;
    let lock = ctx.lock()?;
    let mut reg = ctx.load_locked(&lock, Some(unlocked))?;
    let held = reg.allocated_ports.get(&key).cloned().unwrap_or_default();
    let released: BTreeMap<String, u16> = if args.services.is_empty() {
        let had_record = reg.worktrees.contains_key(&key);
        let ports = reg.remove_worktree(&key);
        if !ports.is_empty() || had_record {
            lock.save(&mut reg)?;
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
                .with_details(json!({"worktree": key, "service": s}))
                .into());
            }
        }
        let mut released = BTreeMap::new();
        let ports = reg.allocated_ports.entry(key.clone()).or_default();
        for s in &args.services {
            if let Some(p) = ports.remove(s) {
                released.insert(s.clone(), p);
            }
        }
        if ports.is_empty() {
            reg.allocated_ports.remove(&key);
            reg.worktrees.remove(&key);
        }
        for (s, p) in &released {
            reg.record("released", &key, Some(s), Some(*p));
        }
        lock.save(&mut reg)?;
        released
    };
    drop(lock);

    if args.json {
        return Ok(Report::json(
            &json!({"worktree": key, "released": released}),
        ));
    }
    Ok(Report::ok(if released.is_empty() {
        format!("worktree {key} had no ports allocated; nothing to release\n")
    } else {
        format!("released from {key}: {}\n", ports_inline(&released))
    }))
}
