//! Leases: ports held for a while (a test run's) outside any worktree, kept in the machine
//! index.

use serde_json::json;

use crate::machine::Machine;
use crate::model::error::{Code, Error};

use super::{lock_machine, reclaim_leases, warn};

/// Give lease `id`'s ports back (from anywhere: leases are the machine's), reclaiming the
/// leases whose holder died or whose TTL passed on the way; returns the ports it held. A lease
/// that is already gone (reclaimed just now) still answers with its ports; an unknown id is
/// NOT_ALLOCATED, listing the leases there are.
pub fn release_lease(id: &str) -> anyhow::Result<Vec<u16>> {
    let machine = Machine::from_env()?;
    let lock = lock_machine(&machine)?;
    let (mut index, warnings) = machine.load(&lock)?;
    warnings.iter().for_each(|w| warn(w));
    let reclaimed = reclaim_leases(&mut index);
    let lease = index.leases.remove(id);
    if lease.is_some() || !reclaimed.is_empty() {
        machine.save(&index)?;
    }
    drop(lock);
    match (lease, reclaimed.into_iter().find(|(r, _)| r == id)) {
        (Some(l), _) | (None, Some((_, l))) => Ok(l.ports),
        (None, None) => {
            let ids: Vec<&str> = index.leases.keys().map(String::as_str).collect();
            Err(Error::new(
                Code::NotAllocated,
                format!(
                    "there is no lease {id:?} (leases now: {})",
                    if ids.is_empty() {
                        "none".to_string()
                    } else {
                        ids.join(", ")
                    }
                ),
            )
            .with_details(json!({"lease": id}))
            .into())
        }
    }
}
