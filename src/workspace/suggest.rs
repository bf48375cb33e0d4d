//! `suggest`: the next free ports (ranges strategy), slots (block strategy) or blocks (one
//! slot per repository: a new installation), named after the repository's convention,
//! checked against the machine-wide taken set, the reserved ports and the probe. Reads only;
//! nothing is locked or written.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use crate::machine::Machine;
use crate::model::allocate::suggest::{self, Suggestion};
use crate::model::allocate::{BlockSite, Request, choose_block};
use crate::model::config::{Config, Service, Strategy};
use crate::model::error::{Code, Error};
use crate::model::names::display_path;
use crate::sys::probe::{self, SystemProbe};

use super::{Workspace, machine_taken, warn};

/// What `suggest` found.
pub struct Suggested {
    /// The current worktree's config (its strategy and services).
    pub config: Config,
    /// The services asked about.
    pub services: Vec<Service>,
    /// The convention followed, in words.
    pub convention: String,
    /// The next suggestion first, then alternatives.
    pub suggestions: Vec<Suggestion>,
}

/// The next `count` suggestions for `service` (None: every service) of the current worktree.
pub fn suggest(service: Option<&str>, count: usize) -> anyhow::Result<Suggested> {
    let ws = Workspace::open()?;
    let target = ws.target(None)?;
    let config = &target.config;
    let services: Vec<_> = match service {
        None => config.services.clone(),
        Some(name) => vec![config.service(name).cloned().ok_or_else(|| {
            Error::new(
                Code::UnknownService,
                format!(
                    "unknown service {name:?}; this worktree's services are: {}",
                    config.service_names()
                ),
            )
        })?],
    };
    let view = ws.view()?;
    let reg = &view.registry;
    let me = ws.canonical_common_dir();
    let index = match (config.coordinate, Machine::from_env()) {
        (true, Ok(machine)) => {
            let (index, warnings) = machine.read();
            warnings.iter().for_each(|w| warn(w));
            Some(index)
        }
        _ => None,
    };
    let elsewhere = (index.as_ref())
        .map(|i| ws.other_registries(i, reg, super::Detail::Ports))
        .unwrap_or_default();
    let (taken, _) = machine_taken(Some(reg), &elsewhere);
    // Every repository's claim, this one's too, with the path a user knows.
    let claimed: Vec<(RangeInclusive<u16>, PathBuf, bool)> = (index.iter())
        .flat_map(|i| i.claims_except(Path::new("")))
        .map(|(r, p)| (r, display_path(p), p == me))
        .collect();
    let claims = |mine: bool| -> Vec<(RangeInclusive<u16>, &Path)> {
        (claimed.iter())
            .filter(|(_, _, m)| mine || !m)
            .map(|(r, p, _)| (r.clone(), p.as_path()))
            .collect()
    };
    let avoid = probe::avoid_ranges();
    let slots = reg.slot_holders_except("");
    let empty = BTreeMap::new();
    let (convention, list) = match config.strategy {
        Strategy::Ranges => {
            let req = Request {
                services: &services,
                ..base_request(config, &taken, &avoid, &empty)
            };
            (
                "the lowest free port of each service's range".to_string(),
                suggest::ranges(&req, count, &SystemProbe),
            )
        }
        Strategy::Block(b) if b.span == b.size => {
            let req = base_request(config, &taken, &avoid, &empty);
            (
                b.convention(),
                suggest::blocks(&req, b, &claims(true), count, &SystemProbe),
            )
        }
        Strategy::Block(b) => {
            let start = match reg.claim().filter(|c| c.config() == b) {
                Some(c) => c.start,
                None => choose_block(b, &claims(false), &taken)?,
            };
            let site = BlockSite {
                start,
                slots: &slots,
                slot: None,
            };
            let req = Request {
                block: Some(site),
                ..base_request(config, &taken, &avoid, &empty)
            };
            (
                format!(
                    "{}: this repository's block {start}-{}",
                    b.convention(),
                    start + (b.span - 1)
                ),
                suggest::slots(&req, b, &site, count, &SystemProbe),
            )
        }
    };
    let list: Vec<Suggestion> = list
        .into_iter()
        .map(|mut s| {
            s.ports
                .retain(|name, _| services.iter().any(|x| &x.name == name));
            s
        })
        .collect();
    if list.is_empty() {
        return Err(Error::new(
            Code::RangeExhausted,
            format!(
                "nothing free to suggest ({convention}); run `git worktree-ports prune`, or widen the ranges in {}",
                config.location()
            ),
        )
        .into());
    }
    Ok(Suggested {
        config: target.config.clone(),
        services,
        convention,
        suggestions: list,
    })
}

fn base_request<'a>(
    config: &'a Config,
    taken: &'a crate::model::allocate::Taken<'a>,
    avoid: &'a [RangeInclusive<u16>],
    empty: &'a BTreeMap<String, u16>,
) -> Request<'a> {
    static NO_WANTS: std::sync::OnceLock<BTreeMap<String, crate::model::allocate::Want>> =
        std::sync::OnceLock::new();
    Request {
        strategy: config.strategy,
        // A new worktree: every registered port is someone else's.
        worktree: "",
        services: &config.services,
        current: empty,
        wants: NO_WANTS.get_or_init(BTreeMap::new),
        taken,
        reserved: &config.reserved,
        avoid,
        block: None,
    }
}
