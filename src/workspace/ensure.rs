//! Ensure a worktree's ports: the lock-free fast path, else lock, allocate (probing under the
//! locks), claim a block, decide the names (hostname, compose name, slot), save.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::json;

use crate::machine::Listed;
use crate::model::allocate::{self, BlockSite, Request, Want};
use crate::model::clock::now_rfc3339;
use crate::model::config::{self, Config, Strategy};
use crate::model::error::{Code, Details, Error, HostnameTaken};
use crate::model::names;
use crate::model::portset::PortSet;
use crate::registry::{self, Claim, Loaded, Ports, Registry, WorktreeRecord};
use crate::render;
use crate::sys::fsio::{self, Durability, Mode, Stamp, WriteOptions};
use crate::sys::git::WorktreeInfo;
use crate::sys::probe::{self, SystemProbe};

use super::lifecycle::Event;
use super::{
    Detail, Holding, ID_FILE, MachineView, OutsideHoldings, Shared, Target, Workspace, dispose,
    machine_taken, ports_inline, warn,
};

/// SYSTEM_RESERVED saying which named range (`reserved = ["system"]`) holds the port.
pub(super) fn name_the_reserved_range(mut e: Error, config: &Config) -> Error {
    if e.code != Code::SystemReserved {
        return e;
    }
    let port = e.details["port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok());
    if let Some((range, name)) =
        port.and_then(|p| config.reserved_names.iter().find(|(r, _)| r.contains(&p)))
    {
        e.message = format!(
            "{} (the `{name}` range, {}-{})",
            e.message,
            range.start(),
            range.end()
        );
        if let Some(d) = e.details.as_object_mut() {
            d.insert("reserved_range".into(), json!(name));
        }
    }
    e
}

/// RANGE_EXHAUSTED for a repository without a config file: the ranges are the built-in ones,
/// and the way out is a config file of its own (`init` writes one), not one to edit.
pub(super) fn explain_builtin_exhausted(mut e: Error, config: &Config) -> Error {
    if e.code == Code::RangeExhausted
        && config.source.is_none()
        && let Some(service) = e.details["service"].as_str().map(str::to_string)
    {
        let edit = format!("widen [services.{service}] range in .worktree-ports/config.toml");
        e.message = e.message.replace(
            &edit,
            &format!(
                "these are the built-in services (this repository has no .worktree-ports/config.toml): run `git worktree-ports init`, then give [services.{service}] a wider range in the file it writes"
            ),
        );
    }
    e
}

/// Give a worktree a new identity token (time and pid: unique on this machine).
pub(super) fn new_worktree_id(wt: &WorktreeInfo, mode: Mode) -> anyhow::Result<String> {
    let id = new_token();
    fsio::write_atomic(
        &wt.git_dir.join(ID_FILE),
        format!("{id}\n").as_bytes(),
        WriteOptions {
            durability: Durability::File,
            mode,
            label: "id",
        },
    )?;
    Ok(id)
}

/// What a lock-free read already holds for the target when allocating would change nothing:
/// no lock, no write. None when the read needed recovery, a save is unfinished, or anything
/// (a service, a pin, the worktree's record, the ranges) is missing or different.
pub(super) fn unchanged_holding(
    loaded: &Loaded,
    target: &Target,
    wants: &BTreeMap<String, Want>,
) -> Option<Holding> {
    let reg = &loaded.registry;
    let ports = reg.ports(&target.wt.key)?;
    let config = &target.config;
    let services_ok =
        config
            .services
            .iter()
            .all(|s| match (ports.get(&s.name), wants.get(&s.name)) {
                (None, _) => false,
                (Some(p), Some(Want::Pin(pin))) => u32::from(p) == *pin,
                (Some(_), Some(Want::Move)) => false,
                (Some(_), _) => true,
            });
    // Unknown services in --port must reach the allocator to be reported; services the
    // config dropped must be released.
    let wants_ok = wants.keys().all(|k| config.service(k).is_some())
        && ports.iter().all(|(s, _)| config.service(s).is_some());
    let id_ok = target.id.is_some();
    (loaded.is_clean()
        && services_ok
        && wants_ok
        && id_ok
        && metadata_is_current(reg, target, target.id.as_deref().unwrap_or_default(), None))
    .then(|| {
        let record = reg.record(&target.wt.key)?;
        Some(Holding {
            ports: ports.to_map(),
            compose_project_name: record.compose_project_name?,
            slot: record.slot,
            fresh: false,
            hostname: record.hostname,
            main_fresh: false,
        })
    })
    .flatten()
}

/// A port kept outside its service's range after the config changed the range: kept, as a
/// running server may use it, and reported (once: by the allocation that notices the change,
/// before `port_ranges` records the new range) with the way to move it. A pin outside the
/// range, with the range unchanged, is the user's choice and not reported.
pub(super) fn warn_outside_changed_ranges(
    reg: &Registry,
    target: &Target,
    ports: &BTreeMap<String, u16>,
) {
    for s in &target.config.services {
        let Some(&port) = ports.get(&s.name) else {
            continue;
        };
        let changed = reg
            .port_range(&s.name)
            .is_some_and(|old| old != [s.range.0, s.range.1]);
        if changed && !(s.range.0..=s.range.1).contains(&port) {
            warn(&format!(
                "{}: port {port} of worktree {} is outside its configured range {}-{} ({}); to move it: `git worktree-ports release --service {} && git worktree-ports allocate`",
                s.name,
                target.wt.key,
                s.range.0,
                s.range.1,
                target.config.location(),
                s.name
            ));
        }
    }
}

/// Ports outside the repository's block (kept from an earlier block config, or pinned):
/// kept, and said with the way to move them.
pub(super) fn warn_off_block(target: &Target, ports: &BTreeMap<String, u16>, claim: Claim) {
    let outside: Vec<String> = (target.config.services.iter())
        .filter_map(|s| Some((s, *ports.get(&s.name)?)))
        .filter(|(_, p)| !claim.ports().contains(p))
        .map(|(s, p)| format!("{} {p}", s.name))
        .collect();
    if !outside.is_empty() {
        warn(&format!(
            "worktree {} keeps {}, outside the repository's block {}-{} ({}): they no longer follow the config; to move them: `git worktree-ports release -w {} && git worktree-ports allocate -w {}`",
            target.wt.key,
            outside.join(", "),
            claim.ports().start(),
            claim.ports().end(),
            claim.config().describe(),
            target.wt.key,
            target.wt.key
        ));
    }
}

/// The worktree's hostname: `<repo label>.localhost` for the main worktree, else
/// `<label>.<repo label>.localhost` with the label from the config's `hostname` template (a
/// collision refused, naming the holder) or the worktree's name (made unique with a suffix).
pub(super) fn worktree_hostname(
    reg: &Registry,
    target: &Target,
    slot: u32,
    repo: &str,
) -> anyhow::Result<String> {
    let host_label = reg.host_label().unwrap_or_else(|| names::dns_label(repo));
    let wt = &target.wt;
    if wt.is_main {
        return Ok(names::hostname(&host_label, None));
    }
    let others = reg.hostnames_except(&wt.key);
    let host_of = |label: &str| names::hostname(&host_label, Some(label));
    // Hostnames and service routes share one namespace: `api.app.localhost` is also the main
    // worktree's `api` route, so no worktree label is a service's name.
    let services: Vec<String> = (target.config.services.iter())
        .map(|s| names::dns_label(&s.name))
        .collect();
    let Some(template) = &target.config.hostname else {
        let label = names::unique_label(&names::dns_label(&wt.key), &|l| {
            // The hostname made once per label tried, not once per worktree compared (10,000
            // strings made in a 10,000-worktree registry).
            let host = host_of(l);
            services.iter().any(|s| s == l) || others.iter().any(|(h, _)| *h == host)
        });
        return Ok(host_of(&label));
    };
    let mut tera = tera::Tera::default();
    let mut context = tera::Context::new();
    context.insert(
        "worktree",
        &json!({"name": wt.key, "branch": wt.branch.clone().unwrap_or_default()}),
    );
    context.insert("slot", &slot);
    context.insert("repo", &json!({"name": repo}));
    let label = tera
        .add_raw_template("hostname", template)
        .and_then(|_| tera.render("hostname", &context))
        .map_err(|e| {
            Error::new(
                Code::ConfigInvalid,
                format!(
                    "{}: hostname could not be rendered: {e}",
                    target.config.location()
                ),
            )
        })?;
    let label = names::dns_label(&label);
    let host = host_of(&label);
    if services.contains(&label) {
        return Err(Error::new(
            Code::HostnameTaken,
            format!(
                "hostname {host} (from the config's hostname template) is the main worktree's {label} service route; change the template in {} so that no worktree is named like a service",
                target.config.location()
            ),
        )
        .with(Details::Hostname(HostnameTaken {
            hostname: host.clone(),
            holder: "main".to_string(),
        }))
        .into());
    }
    if let Some((_, holder)) = others.iter().find(|(h, _)| *h == host) {
        return Err(Error::new(
            Code::HostnameTaken,
            format!(
                "hostname {host} (from the config's hostname template) is worktree {holder}'s already; hostnames are never shared: change the template in {} so that it gives each worktree its own (such as one using {{{{ slot }}}})",
                target.config.location()
            ),
        )
        .with(Details::Hostname(HostnameTaken {
            hostname: host.clone(),
            holder: holder.to_string(),
        }))
        .into());
    }
    Ok(host)
}

pub(super) fn record_for(
    reg: &Registry,
    target: &Target,
    id: &str,
    repo: &str,
    slot: Option<u32>,
) -> anyhow::Result<WorktreeRecord> {
    let wt = &target.wt;
    let path = wt.path.to_string_lossy().into_owned();
    let record = reg.record(&wt.key);
    let compose = record
        .as_ref()
        .and_then(|r| r.compose_project_name.clone())
        .unwrap_or_else(|| unique_compose_name(reg, &wt.key, repo));
    let slot = slot
        .or_else(|| record.as_ref().and_then(|r| r.slot))
        .unwrap_or_else(|| free_slot(reg, target));
    let hostname = match record.as_ref().and_then(|r| r.hostname.clone()) {
        Some(h) => h,
        None => worktree_hostname(reg, target, slot, repo)?,
    };
    // Keep allocated_at and any keys a newer version added.
    Ok(match record {
        Some(r) => WorktreeRecord {
            path,
            branch: wt.branch.clone(),
            id: Some(id.to_string()),
            compose_project_name: Some(compose),
            slot: Some(slot),
            hostname: Some(hostname),
            ..r
        },
        None => WorktreeRecord {
            path,
            branch: wt.branch.clone(),
            allocated_at: now_rfc3339(),
            id: Some(id.to_string()),
            compose_project_name: Some(compose),
            slot: Some(slot),
            hostname: Some(hostname),
            extra: Default::default(),
        },
    })
}

/// The main worktree's slot is 0; any other takes the lowest free one from 1 (0 stays the
/// main worktree's, also in a bare repository).
pub(super) fn free_slot(reg: &Registry, target: &Target) -> u32 {
    if target.wt.is_main {
        return 0;
    }
    // n worktrees hold at most n slots, so the lowest free one is at most n + 1: a table of
    // that many flags (a hash set of 10,000 slots was a tenth of the metadata's cost).
    let mut used = vec![false; reg.size() + 2];
    for s in reg.slots_except(&target.wt.key) {
        if let Some(u) = usize::try_from(s).ok().and_then(|s| used.get_mut(s)) {
            *u = true;
        }
    }
    (1..used.len())
        .find(|&s| !used[s])
        .and_then(|s| u32::try_from(s).ok())
        .expect("a free slot among n + 1")
}

/// `<repo>-<worktree>` as compose accepts it, unless another worktree of the repository has
/// that name already (`feat.x`, `Feat-X` and `feat--x` all give `repo-feat-x`): then the
/// first free `-2`, `-3`... A record written before names were kept counts with the name it
/// was rendered with, which is this formula, so existing stacks keep their names.
pub(super) fn unique_compose_name(reg: &Registry, key: &str, repo: &str) -> String {
    let base = render::compose_project_name(repo, key);
    // Most records' worktrees differ from `key` in their letters and digits already.
    let legacy_is = |k: &str, name: &str| {
        (name != base || render::may_share_compose_name(repo, k, key))
            && render::compose_project_name_is(repo, k, name)
    };
    if !reg.compose_name_used(key, &base, &legacy_is) {
        return base;
    }
    // Rare: collect every name once, then find a free suffix.
    let used = reg.compose_names_except(key, &|k| render::compose_project_name(repo, k));
    (2..)
        .map(|n| format!("{base}-{n}"))
        .find(|name| !used.contains(name))
        .expect("a free suffix")
}

pub(super) fn metadata_is_current(
    reg: &Registry,
    target: &Target,
    id: &str,
    slot: Option<u32>,
) -> bool {
    let wt = &target.wt;
    let record_ok = reg.record(&wt.key).is_some_and(|r| {
        r.path == wt.path.to_string_lossy()
            && r.branch == wt.branch
            && r.id.as_deref() == Some(id)
            && r.compose_project_name.is_some()
            && r.slot.is_some()
            && r.hostname.is_some()
            && (slot.is_none() || r.slot == slot)
    });
    let claim_ok = match target.config.strategy {
        Strategy::Block(b) => reg.claim().is_some_and(|c| c.config() == b),
        Strategy::Ranges => true,
    };
    record_ok
        && claim_ok
        && target
            .config
            .services
            .iter()
            .all(|s| reg.port_range(&s.name) == Some([s.range.0, s.range.1]))
}

/// Refresh the worktree record and `port_ranges`; true when something changed.
pub(super) fn update_metadata(
    reg: &mut Registry,
    target: &Target,
    id: &str,
    repo: &str,
    slot: Option<u32>,
) -> anyhow::Result<bool> {
    if metadata_is_current(reg, target, id, slot) {
        return Ok(false);
    }
    let record = record_for(reg, target, id, repo, slot)?;
    reg.set_record(&target.wt.key, &record);
    for s in &target.config.services {
        reg.set_port_range(&s.name, [s.range.0, s.range.1]);
    }
    Ok(true)
}

impl Workspace {
    /// The target's ports, allocating what is missing (or pinned differently).
    ///
    /// Idempotent: a worktree that has all its ports keeps them, and then nothing is locked or
    /// written (the lock-free read answers). Otherwise: lock, reload, allocate (probing under
    /// the lock, so parallel runs cannot pick the same port), save, unlock.
    pub fn ensure_ports(
        &self,
        target: &Target,
        wants: &BTreeMap<String, Want>,
    ) -> anyhow::Result<Holding> {
        // A registry that does not load cleanly goes the locked way, which recovers it.
        let unlocked = self.read().ok();
        if let Some(held) = unlocked
            .as_ref()
            .and_then(|l| unchanged_holding(l, target, wants))
        {
            dispose(unlocked.expect("the fast path had a registry").registry);
            return Ok(held);
        }

        let wt = &target.wt;
        let config = &target.config;
        self.reclaimed.borrow_mut().clear();
        // Lock order, always: the machine's lock, then the repository's.
        let mut machine = match config.coordinate {
            true => Some(self.machine_view()?),
            false => None,
        };
        let lock = self.lock()?;
        // Still there, now that nothing can release its ports meanwhile: a `remove` that
        // finished while this waited for the lock (or deleted the worktree while its config was
        // read: the built-in services instead of its own) must not get it ports again.
        if !wt.path.is_dir() || !wt.git_dir.is_dir() {
            return Err(super::view::missing_dir(wt));
        }
        let mut reg = self.load_locked(&lock, unlocked)?;
        // The repository's name as the machine knows it (unique among its repositories),
        // and its label in hostnames, decided once and kept in the registry and the index.
        let mut repo_name = self.repo_name();
        let mut label_changed = false;
        // Listed again (a wiped index, another state dir, a copy) or found at a new path (its
        // kept ports may predate this version, or be lost with a damaged index): its ports are
        // checked against the machine's, and those another holder has move.
        let mut relisted: Option<&str> = None;
        // The common dir as the machine index keys it.
        let me = self.canonical_common_dir();
        if let Some(m) = &mut machine {
            let (listed, id_changed) = self.list_in_index(m, &mut reg, &me, &repo_name);
            label_changed |= id_changed;
            if reg.allocations().next().is_some() {
                relisted = match listed {
                    Listed::New | Listed::Copy { .. } => {
                        Some("this repository was not listed in the machine index")
                    }
                    Listed::Moved { .. } => Some("this repository moved"),
                    Listed::Already | Listed::Learned => None,
                };
            }
            repo_name = m.index.get(&me).map_or(repo_name, |e| e.name.clone());
            let label = match reg.host_label() {
                Some(l) => l,
                None => {
                    let taken: Vec<String> = (m.index.entries())
                        .filter(|(p, _, _)| *p != me)
                        .map(|(_, e, _)| {
                            e.host.clone().unwrap_or_else(|| names::dns_label(&e.name))
                        })
                        .collect();
                    names::unique_label(&names::dns_label(&repo_name), &|l| {
                        taken.iter().any(|t| t == l)
                    })
                }
            };
            label_changed |= reg.set_host_label(&label);
            if let Some(e) = m.index.repositories.get_mut(&me)
                && e.host.as_deref() != Some(label.as_str())
            {
                e.host = Some(label);
                m.changed = true;
            }
        } else if reg.host_label().is_none() {
            label_changed |= reg.set_host_label(&names::dns_label(&repo_name));
        }
        let mut others = match &machine {
            Some(m) => self.other_registries(&m.index, &reg, Detail::Ports),
            None => OutsideHoldings::default(),
        };
        // Repositories known by the index's list of their ports are read where one of them
        // is pinned here or held here too: the error or warning names the worktree.
        if others.others.iter().any(|o| o.listed.is_some()) {
            // A set of ports (8 KB): a 10,000-worktree registry's owners would take MBs.
            let pinned = wants.values().filter_map(|w| match w {
                Want::Pin(p) => u16::try_from(*p).ok(),
                _ => None,
            });
            let mut mine = held_ports(&reg);
            pinned.for_each(|p| {
                mine.insert(p);
            });
            others.read_where(&|p| mine.contains(p));
        }
        let mut moved_here = Vec::new();
        if relisted.is_some() {
            moved_here =
                self.move_conflicts(&mut reg, target, &others, &repo_name, machine.as_mut())?;
        }
        // Its own entry before: none (or a dead worktree's of the same name) makes it fresh.
        let fresh = reg.ports(&wt.key).is_none_or(|p| p.is_empty())
            || reg
                .record(&wt.key)
                .and_then(|r| r.id)
                .is_some_and(|id| Some(id) != target.id);
        let mut changed = label_changed;
        let mut main_fresh = false;
        // The main worktree keeps the conventional base ports: an app started there without
        // reading `.env` uses its defaults, which are the base ports. So the first linked
        // worktree to allocate allocates the main worktree first, in this same locked
        // operation (no `.env` is written into main: only its registry entry).
        if !wt.is_main
            && reg.ports(crate::sys::git::MAIN_KEY).is_none()
            && let Some(main) = (self.worktrees()?.iter()).find(|w| w.is_main && w.path.is_dir())
        {
            let main = self.target_of(main.clone())?;
            let (_, c) = self.assign(
                &mut reg,
                &main,
                &BTreeMap::new(),
                &others,
                &repo_name,
                machine.as_mut(),
            )?;
            changed |= c;
            main_fresh = true;
        }
        let (ports, c) = self.assign(
            &mut reg,
            target,
            wants,
            &others,
            &repo_name,
            machine.as_mut(),
        )?;
        changed |= c;
        // The ports every repository read here holds, kept in the index (for when it is gone,
        // and for allocations elsewhere while its registry keeps the stamp recorded with
        // them). Written before the registry's new file takes its place, with that file's
        // stamp: a crash between the two leaves a listed repository with more ports listed
        // than it holds, or a stamp no file has (its registry is read again), never an
        // allocation unlisted.
        {
            let mine = held_ports(&reg);
            let mut commit_index = |stamp: Option<Stamp>| -> anyhow::Result<()> {
                let Some(m) = machine.as_mut() else {
                    return Ok(());
                };
                keep_held_ports(m, &me, &mine, changed.then_some(stamp), &others);
                if m.changed {
                    m.machine.save(&m.index)?;
                } else if m.ports_changed {
                    m.machine.save_ports(&m.index)?;
                }
                Ok(())
            };
            match changed {
                true => self.save_then(&lock, &mut reg, &mut commit_index)?,
                false => commit_index(None)?,
            }
        }
        drop(lock);
        for MovedPort {
            worktree: key,
            service,
            from,
            to,
            holder,
        } in moved_here.iter().take(SAID)
        {
            let done = match to {
                Some(to) => format!("moved {service} to {to}"),
                None => "gave it back (the worktree is gone)".to_string(),
            };
            let rewrite = match key == &wt.key || to.is_none() {
                true => String::new(),
                false => format!(
                    "; rewrite that worktree's files with `git worktree-ports render -w {key}`"
                ),
            };
            warn(&format!(
                "{}, and port {from} of worktree {key} (service {service}) is held by {holder} there: {done}{rewrite}",
                relisted.unwrap_or_default()
            ));
        }
        if let Some(rest) = moved_here.get(SAID..).filter(|r| !r.is_empty()) {
            let rerender: std::collections::BTreeSet<&str> = (rest.iter())
                .filter(|m| m.to.is_some() && m.worktree != wt.key)
                .map(|m| m.worktree.as_str())
                .collect();
            let rewrite = match rerender.len() {
                0 => String::new(),
                n => format!(
                    "; rewrite the files of the {n} worktrees whose ports moved with `git worktree-ports render --all`"
                ),
            };
            let ports = match rest.len() {
                1 => "port of its worktrees is",
                _ => "ports of its worktrees are",
            };
            warn(&format!(
                "{}, and {} more {ports} held elsewhere: moved, or given back where the worktree is gone{rewrite}; `git worktree-ports list` shows every worktree's ports",
                relisted.unwrap_or_default(),
                rest.len()
            ));
        }
        // Worktrees whose ports a full range took back: their `[on] release`, now that the
        // registry says so and no lock is held.
        for job in self.reclaimed.take() {
            self.run_on(Event::Release, &job.cmd, &job.target, &job.held, &job.home);
        }
        let record = reg
            .record(&wt.key)
            .expect("update_metadata recorded the worktree");
        let compose_project_name = record
            .compose_project_name
            .expect("update_metadata recorded a compose project name");
        dispose(reg);
        Ok(Holding {
            ports,
            compose_project_name,
            slot: record.slot,
            fresh,
            hostname: record.hostname,
            main_fresh,
        })
    }

    /// List this repository in the machine index by its identity (given one now when it has
    /// none; a copy of another repository gets one of its own), saying what the index did
    /// not know; returns how it was listed and whether the registry changed.
    fn list_in_index(
        &self,
        m: &mut MachineView,
        reg: &mut Registry,
        me: &Path,
        name: &str,
    ) -> (Listed, bool) {
        let mut changed = false;
        let id = match reg.repository_id() {
            Some(id) => id,
            None => {
                // A registry that holds ports but lost its identity (written before
                // identities, restored from an old copy, edited by hand) is the repository
                // the index lists at this path: it keeps that identity, never displacing
                // itself (and its gone worktrees' ports with it). A registry without ports is
                // a new repository.
                let listed_here = (m.index.get(me))
                    .and_then(|e| e.id.clone())
                    .filter(|_| reg.allocations().next().is_some());
                let id = listed_here.unwrap_or_else(new_token);
                changed |= reg.set_repository_id(&id);
                id
            }
        };
        let id_at = |p: &Path| {
            (p.is_dir())
                .then(|| registry::load_ports_unlocked(&registry::Paths::new(p)).ok())
                .flatten()
                .and_then(|l| l.registry.repository_id())
        };
        let listed = m.index.register(me, name, &id, &id_at);
        if let Listed::Copy { of } = &listed {
            warn(&format!(
                "this repository is a copy of {} (it has the same identity): it gets an identity of its own",
                names::display_path(of).display()
            ));
            let id = new_token();
            changed |= reg.set_repository_id(&id);
            let again = m.index.register(me, name, &id, &id_at);
            debug_assert_eq!(again, Listed::New);
        }
        match &listed {
            Listed::Already => {}
            Listed::Learned => m.changed = true,
            Listed::Moved { from } => {
                m.changed = true;
                warn(&format!(
                    "this repository was at {}: the machine index follows it (its name, its ports, its block)",
                    names::display_path(from).display()
                ));
            }
            Listed::New | Listed::Copy { .. } => {
                m.changed = true;
                // A repository that holds ports but was not listed: the index was wiped or
                // replaced, or the state dir changed. Said once (it is listed from now on):
                // other repositories it does not list are not seen.
                if matches!(listed, Listed::New) && reg.allocations().next().is_some() {
                    warn(&format!(
                        "the machine index {} did not list this repository, which holds ports: it was deleted or replaced, or the state dir changed; repositories it does not list are not seen until they allocate again (`git worktree-ports list --all` shows what it lists)",
                        m.machine.file.display()
                    ));
                }
            }
        }
        (listed, changed)
    }

    /// A repository listed again: every port of its worktrees that another holder of the
    /// machine has (a repository listed meanwhile was given it) moves, under the locks; the
    /// repository listing itself again is the later holder as the machine saw it. Returns
    /// (worktree, service, old port, new port (None: the worktree is gone, the port given
    /// back), holder) for each move, by worktree and service.
    fn move_conflicts(
        &self,
        reg: &mut Registry,
        target: &Target,
        others: &OutsideHoldings,
        repo_name: &str,
        machine: Option<&mut MachineView>,
    ) -> anyhow::Result<Vec<MovedPort>> {
        let mut conflicts: BTreeMap<String, Vec<(String, u16, String)>> = BTreeMap::new();
        {
            let (outside, _) = machine_taken(None, others);
            for (key, ports) in reg.allocations() {
                for (service, port) in ports.iter() {
                    if let Some(owner) = outside.owner(port) {
                        conflicts.entry(key.to_string()).or_default().push((
                            service.to_string(),
                            port,
                            owner.to_string(),
                        ));
                    }
                }
            }
        }
        // The ports waiting their turn are held twice until then, and warned about only if
        // they stay so.
        *self.moving.borrow_mut() = (conflicts.values().flatten())
            .map(|(_, port, _)| *port)
            .collect();
        let moved = self.move_each(reg, target, others, repo_name, machine, conflicts);
        *self.moving.borrow_mut() = PortSet::new();
        moved
    }

    /// [`Workspace::move_conflicts`] for each worktree in turn.
    fn move_each(
        &self,
        reg: &mut Registry,
        target: &Target,
        others: &OutsideHoldings,
        repo_name: &str,
        mut machine: Option<&mut MachineView>,
        conflicts: BTreeMap<String, Vec<(String, u16, String)>>,
    ) -> anyhow::Result<Vec<MovedPort>> {
        let mut moved = Vec::new();
        for (key, mut services) in conflicts {
            // By service name: the order the moves are said in.
            services.sort();
            // Given back first, so that the allocation below sees no port held twice (and
            // cannot choose it again: the other holder has it).
            let names: Vec<String> = services.iter().map(|(s, _, _)| s.clone()).collect();
            reg.release_services(&key, &names);
            let no_wants = BTreeMap::new();
            let mut assign = |t: &Target| {
                self.assign(reg, t, &no_wants, others, repo_name, machine.as_deref_mut())
                    .map(|(ports, _)| ports)
            };
            let now = if key == target.wt.key {
                assign(target)?
            } else if let Some(info) =
                (self.worktrees()?.iter()).find(|w| w.key == key && !w.prunable && w.path.is_dir())
            {
                assign(&self.target_of(info.clone())?)?
            } else {
                // A worktree that is gone keeps them given back.
                BTreeMap::new()
            };
            for (service, from, holder) in services {
                moved.push(MovedPort {
                    to: now.get(&service).copied(),
                    worktree: key.clone(),
                    service,
                    from,
                    holder,
                });
            }
        }
        Ok(moved)
    }

    /// Give `target` its ports in `reg` (under the locks): the identity check, the config's
    /// services, the allocation against this registry and `others`, the record. When a
    /// service's range is full, the ports of worktrees git reports as gone are reclaimed,
    /// oldest first, before giving up. Returns the ports and whether anything changed.
    pub(super) fn assign(
        &self,
        reg: &mut Registry,
        target: &Target,
        wants: &BTreeMap<String, Want>,
        others: &OutsideHoldings,
        repo_name: &str,
        mut machine: Option<&mut MachineView>,
    ) -> anyhow::Result<(BTreeMap<String, u16>, bool)> {
        let wt = &target.wt;
        let config = &target.config;
        // Block strategy: the repository's block, claimed once, machine-wide.
        let claim_before = reg.claim();
        let claim = match config.strategy {
            Strategy::Block(b) => Some(self.claim_block(reg, b, machine.as_deref_mut(), others)?),
            Strategy::Ranges => None,
        };
        // An entry made by a worktree with another identity belongs to a dead worktree whose
        // name git gave this one: its ports go back (never taken over unprobed), and this
        // worktree allocates as the new worktree it is.
        let mut changed = reg.claim() != claim_before;
        let owner = reg.record(&wt.key).and_then(|r| r.id);
        if owner.is_some() && owner != target.id {
            reg.remove_worktree(&wt.key);
            changed = true;
        }
        // Services the config no longer has go back (a worktree gets exactly its config's
        // services); set_ports logs their release.
        let mut current = reg.ports(&wt.key).map(Ports::to_map).unwrap_or_default();
        current.retain(|s, _| config.service(s).is_some());
        let held_before = reg.ports(&wt.key).map(Ports::to_map).unwrap_or_default();
        let avoid = probe::avoid_ranges();
        let warned_shared = std::cell::Cell::new(false);
        let attempt = |reg: &Registry, others: &OutsideHoldings| {
            // The other worktrees' slots matter only to a block (a scan of every record).
            let slots = match claim {
                Some(_) => reg.slot_holders_except(&wt.key),
                None => Vec::new(),
            };
            let block = claim.map(|c| BlockSite {
                start: c.start,
                slots: &slots,
                slot: reg.record(&wt.key).and_then(|r| r.slot),
            });
            let (taken, shared) = machine_taken(Some(reg), others);
            if !warned_shared.replace(true) {
                warn_shared(&shared, &self.moving.borrow());
            }
            allocate::allocate(
                &Request {
                    strategy: config.strategy,
                    worktree: &wt.key,
                    services: &config.services,
                    current: &current,
                    wants,
                    taken: &taken,
                    reserved: &config.reserved,
                    avoid: &avoid,
                    block,
                },
                &SystemProbe,
            )
        };
        let alloc = match attempt(reg, others) {
            Ok(a) => a,
            Err(e) if e.code == Code::RangeExhausted => {
                // Lazy reclaim, only now that ports are scarce: a worktree moved with `mv`
                // also reads as gone until `git worktree repair`, and must not lose its ports
                // while there are others.
                let mut reclaimed = Vec::new();
                let mut result = Err(e);
                for (key, why) in super::gone_entries(reg, self.worktrees()?, &wt.key) {
                    // Its `[on] release` runs once this allocation is saved (ensure_ports).
                    if let Some(job) = self.release_job(reg, &key) {
                        self.reclaimed.borrow_mut().push(job);
                    }
                    let ports = reg.remove_gone_worktree(&key);
                    let given_back = if ports.is_empty() {
                        "no ports".to_string()
                    } else {
                        ports_inline(&ports)
                    };
                    reclaimed.push(format!("{key} ({why}: {given_back})"));
                    result = attempt(reg, others);
                    if result.is_ok() {
                        break;
                    }
                }
                // Then gone repositories (moved or deleted, listed longest ago first): a moved
                // one that comes back later finds its ports taken, and moves what conflicts.
                if result.is_err()
                    && let Some(m) = machine
                    && !others.gone.is_empty()
                {
                    let mut fewer = others.clone();
                    while result.is_err() && !fewer.gone.is_empty() {
                        let g = fewer.gone.remove(0);
                        fewer.claims.retain(|(_, d)| *d != g.display);
                        m.changed |= m.index.drop_entry(&g.common, g.id.as_deref());
                        reclaimed.push(format!(
                            "repository {} (gone: {})",
                            g.display.display(),
                            (g.ports.iter().map(u16::to_string))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ));
                        result = attempt(reg, &fewer);
                    }
                }
                let alloc = result.map_err(|e| explain_builtin_exhausted(e, config))?;
                warn(&format!(
                    "the range was full: gave back the ports of worktrees and repositories that are gone, oldest first: {}",
                    reclaimed.join("; ")
                ));
                changed = true;
                alloc
            }
            Err(e) => {
                return Err(
                    explain_builtin_exhausted(name_the_reserved_range(e, config), config).into(),
                );
            }
        };
        alloc.warnings.iter().for_each(|w| warn(w));
        if alloc.ports != held_before {
            changed = true;
            reg.set_ports(&wt.key, &alloc.ports).map_err(|c| {
                Error::new(
                    Code::PortAllocated,
                    format!("{c}; nothing was changed (this is a bug: the allocator checked it)"),
                )
            })?;
        }
        let id = match &target.id {
            Some(id) => id.clone(),
            None => new_worktree_id(wt, self.git_dir_mode()?)?,
        };
        match claim {
            Some(c) => warn_off_block(target, &alloc.ports, c),
            None => warn_outside_changed_ranges(reg, target, &alloc.ports),
        }
        changed |= update_metadata(reg, target, &id, repo_name, alloc.slot)?;
        Ok((alloc.ports, changed))
    }

    /// The repository's block (under the locks): the one it claimed, while the config is the
    /// one it was claimed under; else the lowest free one, recorded in the registry and the
    /// machine index. Worktrees keep the ports of an earlier claim: said, with how to move.
    pub(super) fn claim_block(
        &self,
        reg: &mut Registry,
        b: config::Block,
        machine: Option<&mut MachineView>,
        others: &OutsideHoldings,
    ) -> anyhow::Result<Claim> {
        let me = self.canonical_common_dir();
        let record = |m: Option<&mut MachineView>, c: &Claim| {
            if let Some(m) = m {
                m.changed |= m
                    .index
                    .set_block(&me, [*c.ports().start(), *c.ports().end()]);
            }
        };
        if let Some(c) = reg.claim().filter(|c| c.config() == b) {
            // An index rebuilt after damage learns the claim again here.
            record(machine, &c);
            return Ok(c);
        }
        // Ports with two owners are said by the allocation that builds this set with the
        // registry too (ensure_ports), not twice.
        let (taken, _) = machine_taken(None, others);
        let claims: Vec<(std::ops::RangeInclusive<u16>, &Path)> = (others.claims.iter())
            .map(|(r, p)| (r.clone(), p.as_path()))
            .collect();
        let start = allocate::choose_block(b, &claims, &taken)?;
        let claim = Claim {
            start,
            base: b.base,
            size: b.size,
            span: b.span,
        };
        if let Some(old) = reg.claim() {
            let kept: Vec<String> = reg
                .allocations()
                .map(|(k, p)| format!("{k} ({})", ports_inline(&p.to_map())))
                .collect();
            warn(&format!(
                "the block config changed ({} -> {}): new worktrees take slots of block {}-{}; {}",
                old.config().describe(),
                b.describe(),
                claim.ports().start(),
                claim.ports().end(),
                match kept.is_empty() {
                    true => "no worktree holds ports of the old block".to_string(),
                    false => format!(
                        "these keep their ports, which no longer follow the config, until you move them with `git worktree-ports release -w NAME && git worktree-ports allocate -w NAME`: {}",
                        kept.join("; ")
                    ),
                }
            ));
        }
        reg.set_claim(claim);
        record(machine, &claim);
        Ok(claim)
    }
}

/// A port a repository listed again moved off (another holder had it meanwhile).
struct MovedPort {
    worktree: String,
    service: String,
    from: u16,
    /// Its new port; None when the worktree is gone and the port was given back.
    to: Option<u16>,
    /// Who holds `from`, as a user reads it.
    holder: String,
}

/// A new identity token: time and pid, unique on this machine.
fn new_token() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{nanos:x}-{:x}", std::process::id())
}

/// Every port `reg` holds, as a set of 8 KB (not a vector of 50,000 ports among 10,000
/// worktrees, made into this set again to be kept as runs).
fn held_ports(reg: &Registry) -> PortSet {
    let mut ports = PortSet::new();
    for (_, p) in reg.allocations() {
        for (_, port) in p.iter() {
            ports.insert(port);
        }
    }
    ports
}

/// Keep in the index the ports this repository (`mine`, at `me`) and every other one read
/// for this allocation hold, with the stamp of the registry file they come from: only a
/// registry read whole and of the repository the entry names (a salvaged one, or another
/// repository made at its path, leaves the entry as it was). `written`: the stamp of the file
/// this allocation is about to commit (Some(None): one no stamp tells apart), or None when it
/// writes none (the registry as it is: its entry keeps its stamp if it lists these ports).
fn keep_held_ports(
    m: &mut MachineView,
    me: &Path,
    mine: &PortSet,
    written: Option<Option<Stamp>>,
    others: &OutsideHoldings,
) {
    if let Some(e) = m.index.repositories.get_mut(me) {
        let runs = mine.runs();
        let stamp = match written {
            Some(stamp) => stamp,
            None if e.ports == runs => e.seen,
            None => None,
        };
        m.ports_changed |= e.set_held_runs(runs, stamp);
    }
    let read = (others.others.iter()).filter(|o| o.salvaged.is_empty() && o.listed.is_none());
    for other in read {
        if let Some(e) = m.index.repositories.get_mut(&other.common)
            && e.id.is_some()
            && e.id == other.registry.repository_id()
        {
            m.ports_changed |= e.set_held_runs(held_ports(&other.registry).runs(), other.stamp);
        }
    }
}

/// Ports this repository's worktrees share with another owner on the machine (registries
/// written before they were coordinated, a port inside another repository's block): said by
/// the allocation that sees them, with the way to see them all.
fn warn_shared(shared: &[Shared], moving: &PortSet) {
    let here: Vec<&Shared> = (shared.iter())
        .filter(|s| s.here && !moving.contains(s.port))
        .collect();
    for s in here.iter().take(SAID) {
        warn(&format!(
            "port {} is held twice on this machine: by {} and by {}; run `git worktree-ports doctor` (it lists every such port), then `git worktree-ports allocate --move SERVICE` in the worktree that should move",
            s.port, s.first, s.second
        ));
    }
    if let Some(more) = here.len().checked_sub(SAID).filter(|n| *n > 0) {
        let ports = match more {
            1 => "port is",
            _ => "ports are",
        };
        warn(&format!(
            "{more} more {ports} held twice on this machine; `git worktree-ports doctor` lists every one"
        ));
    }
}

/// How many ports held twice, or moved for a repository the index did not list, an
/// allocation names one by one (a repository copied with all its worktrees' ports named each
/// of 50,000 on a line of its own); the rest are counted: `doctor` and `list` show every one.
const SAID: usize = 5;
