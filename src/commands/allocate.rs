//! `allocate [<worktree>] [--port S=P]... [--json]`: give a worktree its full set of ports.
//!
//! Idempotent: a worktree that has all its ports keeps them, and then nothing is locked or
//! written. Otherwise: lock, reload, allocate (probing under the lock, so parallel runs cannot
//! pick the same port), save, unlock.

use std::collections::BTreeMap;

use serde_json::json;

use crate::allocate::{self, Change, Request, Want};
use crate::cli::AllocateArgs;
use crate::commands::{Ctx, Report, dispose, render, table, warn};
use crate::config::Config;
use crate::error::{Code, Error};
use crate::git::WorktreeInfo;
use crate::probe::{self, SystemProbe};
use crate::registry::{Loaded, Ports, RecordJson, Registry, WorktreeRecord, now_rfc3339};

/// Run `allocate`.
pub fn run(args: &AllocateArgs) -> anyhow::Result<Report> {
    let ctx = Ctx::open()?;
    let wt = ctx.target(args.worktree.as_deref())?;
    if !wt.path.is_dir() {
        return Err(Error::new(
            Code::WorktreeNotFound,
            format!(
                "worktree {} has no directory any more ({}); run `git worktree prune`, then `git worktree-ports prune` to give its ports back",
                wt.key,
                wt.path.display()
            ),
        )
        .into());
    }
    let config = Config::load(&wt.path)?;
    let wants: BTreeMap<String, Want> = args
        .ports
        .iter()
        .map(|p| (p.service.clone(), p.want))
        .collect();
    let ports = ensure(&ctx, &wt, &config, &wants)?;
    render_and_report(&ctx, &wt, &config, &ports, !args.no_render, args.json)
}

/// The end of `allocate` and `add`: render (unless told not to), then the worktree's ports
/// as text or as `{"worktree", "path", "branch", "ports", "rendered"}`.
pub fn render_and_report(
    ctx: &Ctx,
    wt: &WorktreeInfo,
    config: &Config,
    ports: &BTreeMap<String, u16>,
    render: bool,
    json: bool,
) -> anyhow::Result<Report> {
    let rendered = if render {
        Some(render::render_worktree(ctx, wt, config, ports, false)?)
    } else {
        None
    };
    if json {
        return Ok(Report::json(&json!({
            "worktree": wt.key,
            "path": wt.path.to_string_lossy(),
            "branch": wt.branch,
            "ports": ports,
            "rendered": rendered.as_ref().map(render::files_json).unwrap_or(json!([])),
        })));
    }
    let mut out = describe(wt, config, ports);
    if let Some(r) = &rendered {
        out.push_str(&render::summary(wt, r));
    }
    Ok(Report::ok(out))
}

/// The worktree's ports, allocating what is missing (or pinned differently). Shared with the
/// commands that need ports to exist.
pub fn ensure(
    ctx: &Ctx,
    wt: &WorktreeInfo,
    config: &Config,
    wants: &BTreeMap<String, Want>,
) -> anyhow::Result<BTreeMap<String, u16>> {
    // Read path: nothing to change means no lock and no write. A registry that does not load
    // cleanly goes the locked way, which recovers it.
    let unlocked = crate::registry::load_unlocked(&ctx.paths).ok();
    if let Some(ports) = unlocked
        .as_ref()
        .and_then(|l| already_allocated(l, wt, config, wants))
        .map(Ports::to_map)
    {
        dispose(unlocked.expect("already_allocated had a registry").registry);
        return Ok(ports);
    }

    let lock = ctx.lock()?;
    let mut reg = ctx.load_locked(&lock, unlocked)?;
    let current = reg
        .allocated_ports
        .get(&wt.key)
        .map(Ports::to_map)
        .unwrap_or_default();
    let taken = reg.taken();
    let avoid = probe::avoid_ranges();
    let alloc = allocate::allocate(
        &Request {
            worktree: &wt.key,
            services: &config.services,
            current: &current,
            wants,
            taken: &taken,
            reserved: &config.reserved,
            avoid: &avoid,
        },
        &SystemProbe,
    )?;
    alloc.warnings.iter().for_each(|w| warn(w));

    let mut changed = !alloc.changes.is_empty();
    for change in &alloc.changes {
        match change {
            Change::Assigned { service, port } => {
                reg.record("assigned", &wt.key, Some(service), Some(*port));
            }
            Change::Moved { service, from, to } => {
                reg.record("released", &wt.key, Some(service), Some(*from));
                reg.record("assigned", &wt.key, Some(service), Some(*to));
            }
        }
    }
    reg.allocated_ports
        .insert(wt.key.clone(), Ports::from(&alloc.ports));
    changed |= update_metadata(&mut reg, wt, config);
    if changed {
        lock.save(&mut reg)?;
    }
    drop(lock);
    dispose(reg);
    Ok(alloc.ports)
}

/// True when the registry already holds everything `allocate` would write.
/// The ports a lock-free read already holds for `wt` when allocating would change nothing:
/// no lock, no write. None when the read needed recovery, the backup lags, or anything (a
/// service, a pin, the worktree's record) is missing or different.
pub fn already_allocated<'r>(
    loaded: &'r Loaded,
    wt: &WorktreeInfo,
    config: &Config,
    wants: &BTreeMap<String, Want>,
) -> Option<&'r Ports> {
    let clean = loaded.warnings.is_empty() && !loaded.unfinished;
    (clean && is_current(&loaded.registry, wt, config, wants))
        .then(|| &loaded.registry.allocated_ports[&wt.key])
}

fn is_current(
    reg: &Registry,
    wt: &WorktreeInfo,
    config: &Config,
    wants: &BTreeMap<String, Want>,
) -> bool {
    let Some(ports) = reg.allocated_ports.get(&wt.key) else {
        return false;
    };
    let services_ok =
        config
            .services
            .iter()
            .all(|s| match (ports.get(&s.name), wants.get(&s.name)) {
                (None, _) => false,
                (Some(p), Some(Want::Pin(pin))) => u32::from(p) == *pin,
                (Some(_), _) => true,
            });
    // Unknown services in --port must reach the allocator to be reported.
    let wants_ok = wants.keys().all(|k| config.service(k).is_some());
    services_ok && wants_ok && metadata_is_current(reg, wt, config)
}

fn metadata_is_current(reg: &Registry, wt: &WorktreeInfo, config: &Config) -> bool {
    let record_ok = reg
        .worktrees
        .get(&wt.key)
        .and_then(RecordJson::get)
        .is_some_and(|r| r.path == wt.path.to_string_lossy() && r.branch == wt.branch);
    record_ok
        && config
            .services
            .iter()
            .all(|s| reg.port_ranges.get(&s.name) == Some(&[s.range.0, s.range.1]))
}

/// Refresh the worktree record and `port_ranges`; true when something changed.
fn update_metadata(reg: &mut Registry, wt: &WorktreeInfo, config: &Config) -> bool {
    if metadata_is_current(reg, wt, config) {
        return false;
    }
    let path = wt.path.to_string_lossy().into_owned();
    // Keep allocated_at and any keys a newer version added.
    let record = match reg.worktrees.get(&wt.key).and_then(RecordJson::get) {
        Some(r) => WorktreeRecord {
            path,
            branch: wt.branch.clone(),
            ..r
        },
        None => WorktreeRecord {
            path,
            branch: wt.branch.clone(),
            allocated_at: now_rfc3339(),
            extra: Default::default(),
        },
    };
    reg.worktrees
        .insert(wt.key.clone(), RecordJson::new(&record));
    for s in &config.services {
        reg.port_ranges
            .insert(s.name.clone(), [s.range.0, s.range.1]);
    }
    true
}

/// `ports of worktree feature (/path):` and one line per service.
pub fn describe(wt: &WorktreeInfo, config: &Config, ports: &BTreeMap<String, u16>) -> String {
    let mut out = format!("ports of worktree {} ({}):\n", wt.key, wt.path.display());
    let rows: Vec<Vec<String>> = ordered(config, ports)
        .into_iter()
        .map(|(name, port, env)| vec![format!("  {name}"), port.to_string(), env])
        .collect();
    out.push_str(&table(&rows));
    out
}

/// (service, port, env var) in config order, then services the config no longer has.
pub fn ordered(config: &Config, ports: &BTreeMap<String, u16>) -> Vec<(String, u16, String)> {
    let mut out: Vec<(String, u16, String)> = config
        .services
        .iter()
        .filter_map(|s| Some((s.name.clone(), *ports.get(&s.name)?, s.env.clone())))
        .collect();
    for (name, port) in ports {
        if config.service(name).is_none() {
            out.push((name.clone(), *port, crate::config::default_env_name(name)));
        }
    }
    out
}
