//! Leases: ports held for a while (a test run's) outside any worktree, kept in the machine
//! index.

use std::time::UNIX_EPOCH;

use crate::machine::{Index, Lease, Machine};
use crate::model::allocate::Probe;
use crate::model::clock::now_rfc3339;
use crate::model::config::{MIN_PORT, Protocol, named_range};
use crate::model::error::{Code, Details, Error, LeaseId, LeasePool};
use crate::sys::probe::SystemProbe;
use crate::sys::shell;

use super::{OutsideHoldings, lock_machine, machine_taken, reclaim_leases, unix_now, warn};

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
            .with(Details::Lease(LeaseId {
                lease: id.to_string(),
            }))
            .into())
        }
    }
}

/// Overrides the default pool (`40000-49999`, the `dynamic` range).
pub const RANGE_ENV: &str = "GIT_WORKTREE_PORTS_LEASE_RANGE";

/// Without a command, a lease lasts this long unless `--ttl` says otherwise.
const DEFAULT_TTL: u64 = 3600;

/// Lease `count` free ports of `pool` (None: `GIT_WORKTREE_PORTS_LEASE_RANGE`, else the
/// `dynamic` range) under the machine lock, reclaiming leases whose holder died or whose TTL
/// passed on the way. With a `command`, the lease is this process's (pid and start time) until
/// [`run_leased`] gives it back; without, it lasts `ttl` seconds (default an hour).
pub fn take_lease(
    pool: Option<(u16, u16)>,
    count: usize,
    ttl: Option<u64>,
    command: &[String],
) -> anyhow::Result<(String, Lease)> {
    let pool = match pool {
        Some(r) => r,
        None => pool_from_env()?,
    };
    let machine = Machine::from_env()?;
    let with_command = !command.is_empty();
    let expires_at = match (ttl, with_command) {
        (Some(ttl), _) => Some(unix_now().saturating_add(ttl)),
        (None, true) => None,
        (None, false) => Some(unix_now() + DEFAULT_TTL),
    };
    let (id, lease) = {
        let lock = lock_machine(&machine)?;
        let (mut index, warnings) = machine.load(&lock)?;
        warnings.iter().for_each(|w| warn(w));
        for (id, old) in reclaim_leases(&mut index) {
            warn(&format!(
                "reclaimed lease {id} ({}): {}",
                ports_text(&old.ports),
                match old.pid {
                    Some(pid) if old.expires_at.is_none_or(|t| t > unix_now()) =>
                        format!("its holder, pid {pid}, is gone"),
                    _ => "its time was up".to_string(),
                }
            ));
        }
        let ports = choose(&index, pool, count, &SystemProbe)?;
        let id = new_id(&index);
        let me = std::process::id();
        let lease = Lease {
            ports,
            pid: with_command.then_some(me),
            pid_start: with_command
                .then(|| crate::sys::procs::start_time(me))
                .flatten(),
            expires_at,
            created_at: now_rfc3339(),
            command: with_command.then(|| command.join(" ")),
        };
        index.leases.insert(id.clone(), lease.clone());
        machine.save(&index)?;
        (id, lease)
    };

    Ok((id, lease))
}

/// Run `command` holding lease `id` (with `LEASE_PORT`, `LEASE_PORTS`, `LEASE_ID`), then give
/// its ports back whatever happened; the exit code to leave with.
pub fn run_leased(id: &str, lease: &Lease, command: &[String]) -> anyhow::Result<i32> {
    let machine = Machine::from_env()?;
    let code = run_holding(command, id, &lease.ports);
    // A lease lasts as long as the command: a server it started in the background that
    // outlives it keeps a port the machine may hand out again from now on. Said.
    for port in &lease.ports {
        if let Some(h) = crate::sys::probe::holder(*port, Protocol::Tcp) {
            warn(&format!(
                "port {port} is still in use by {h} after the command exited: lease {id} ends with the command, so that port may be handed out again; for a server that detaches, lease without a command (`git worktree-ports lease --ttl 1h`) and give it back with `release --lease`"
            ));
        }
    }
    // Give the ports back whatever happened to the command.
    let released = (|| -> anyhow::Result<()> {
        let lock = lock_machine(&machine)?;
        let (mut index, _) = machine.load(&lock)?;
        if index.leases.remove(id).is_some() {
            machine.save(&index)?;
        }
        Ok(())
    })();
    if let Err(e) = released {
        warn(&format!(
            "could not give lease {id} back ({e:#}); it is reclaimed by the next allocation, as its holder is gone"
        ));
    }
    code
}

/// `40000 40001`.
pub fn ports_text(ports: &[u16]) -> String {
    let parts: Vec<String> = ports.iter().map(u16::to_string).collect();
    parts.join(" ")
}

fn pool_from_env() -> anyhow::Result<(u16, u16)> {
    let Some(text) = std::env::var_os(RANGE_ENV).filter(|v| !v.is_empty()) else {
        return Ok(named_range("dynamic").expect("dynamic is a named range"));
    };
    let text = text.to_string_lossy();
    if let Some(r) = named_range(&text) {
        return Ok(r);
    }
    let bad = || {
        Error::new(
            Code::InvalidPort,
            format!(
                "{RANGE_ENV}={text:?} is not a port range such as 40000-49999 (or a named range such as \"dynamic\")"
            ),
        )
    };
    let (a, b) = text.split_once('-').ok_or_else(bad)?;
    match (a.trim().parse::<u16>(), b.trim().parse::<u16>()) {
        (Ok(a), Ok(b)) if a >= MIN_PORT && a <= b => Ok((a, b)),
        _ => Err(bad().into()),
    }
}

/// The `count` lowest ports of `pool` that no registry, lease or block claim of the machine
/// holds and that a server could bind now.
fn choose(
    index: &Index,
    pool: (u16, u16),
    count: usize,
    probe: &dyn Probe,
) -> anyhow::Result<Vec<u16>> {
    let elsewhere = OutsideHoldings::read(index, super::Me::default(), super::Detail::Ports);
    let (taken, _) = machine_taken(None, &elsewhere);
    let (lo, hi) = pool;
    let (mut owned, mut claimed, mut busy) = (0, 0, 0);
    let mut ports = Vec::with_capacity(count);
    for p in lo.max(MIN_PORT)..=hi {
        if ports.len() == count {
            break;
        }
        if let Some(owner) = taken.owner(p) {
            match owner.block {
                true => claimed += 1,
                false => owned += 1,
            }
        } else if !probe.is_free(p, Protocol::Tcp) {
            busy += 1;
        } else {
            ports.push(p);
        }
    }
    if ports.len() < count {
        return Err(Error::new(
            Code::RangeExhausted,
            format!(
                "only {} of {count} ports free in {lo}-{hi} ({owned} allocated or leased, {claimed} in repositories' blocks, {busy} in use by processes); lease fewer, pass --range A-B, or set {RANGE_ENV}",
                ports.len()
            ),
        )
        .with(Details::LeasePool(LeasePool {
            range: [lo, hi],
            count,
            free: ports.len(),
        }))
        .into());
    }
    Ok(ports)
}

/// A short id no lease of `index` has.
fn new_id(index: &Index) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut seed = (nanos as u64) ^ (u64::from(std::process::id()) << 40);
    loop {
        // splitmix64: spreads the bits, so ids look unrelated.
        seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        let id = format!("{:08x}", (z ^ (z >> 31)) as u32);
        if !index.leases.contains_key(&id) {
            return id;
        }
    }
}

/// Run the command with the lease's variables, passing on SIGTERM and SIGHUP (Ctrl-C reaches
/// it from the terminal directly, and does not stop us before we give the ports back).
/// Returns the exit code to leave with.
fn run_holding(command: &[String], id: &str, ports: &[u16]) -> anyhow::Result<i32> {
    let env = [
        ("LEASE_PORT".to_string(), ports[0].to_string()),
        ("LEASE_PORTS".to_string(), ports_text(ports)),
        ("LEASE_ID".to_string(), id.to_string()),
    ];
    shell::run_forwarding_signals(command, &env).map_err(|e| {
        Error::new(
            Code::ExecFailed,
            format!(
                "could not run {}: {e} (is it installed and on PATH?); the lease is given back",
                command[0]
            ),
        )
        .into()
    })
}
