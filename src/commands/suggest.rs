//! `suggest [<service>] [--count N] [--json]`: the next free ports (ranges strategy), slots
//! (block strategy) or blocks (one slot per repository: a new installation), named after the
//! repository's convention, checked against this registry, every registry and claim of the
//! machine index, the reserved ports and the probe. Reads only; nothing is locked or written.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::Serialize;

use crate::cli::SuggestArgs;
use crate::commands::Report;
use crate::machine::Machine;
use crate::model::allocate::suggest::{self, Suggestion};
use crate::model::allocate::{BlockSite, Request, choose_block};
use crate::model::config::{Config, Strategy};
use crate::model::error::{Code, Error};
use crate::model::names::display_path;
use crate::sys::probe::{self, SystemProbe};
use crate::workspace::{Elsewhere, Workspace, machine_taken, warn};

/// `suggest --json`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SuggestAnswer {
    /// `ranges` or `block`.
    pub strategy: String,
    /// The convention followed, in words.
    pub convention: String,
    /// The next suggestion first, then alternatives.
    pub suggestions: Vec<Suggestion>,
}

/// Run `suggest`.
pub fn run(args: &SuggestArgs) -> anyhow::Result<Report> {
    let ws = Workspace::open()?;
    let target = ws.target(None)?;
    let config = &target.config;
    let services: Vec<_> = match &args.service {
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
    let reg = ws.load_unlocked()?;
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
        .map(|i| Elsewhere::read(i, Some(&me)))
        .unwrap_or_default();
    let (taken, _) = machine_taken(Some(&reg), &elsewhere);
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
                suggest::ranges(&req, usize::from(args.count), &SystemProbe),
            )
        }
        Strategy::Block(b) if b.span == b.size => {
            let req = base_request(config, &taken, &avoid, &empty);
            (
                b.convention(),
                suggest::blocks(
                    &req,
                    b,
                    &claims(true),
                    usize::from(args.count),
                    &SystemProbe,
                ),
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
                suggest::slots(&req, b, &site, usize::from(args.count), &SystemProbe),
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
    let strategy = match config.strategy {
        Strategy::Ranges => "ranges",
        Strategy::Block(_) => "block",
    };
    if args.json {
        return Ok(Report::answer(SuggestAnswer {
            strategy: strategy.to_string(),
            convention,
            suggestions: list,
        }));
    }
    Ok(Report::ok(text(config, &services, &convention, &list)))
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

/// `next suggested port: 9550 (increment of 10 from 9500); then 9560, 9570`, or per service,
/// or per slot.
fn text(
    config: &Config,
    services: &[crate::model::config::Service],
    convention: &str,
    list: &[Suggestion],
) -> String {
    let inline = |s: &Suggestion| -> String {
        let parts: Vec<String> = services
            .iter()
            .filter_map(|svc| Some(format!("{} {}", svc.name, s.ports.get(&svc.name)?)))
            .collect();
        parts.join(", ")
    };
    let then = |rest: Vec<String>| match rest.is_empty() {
        true => String::new(),
        false => format!("; then {}", rest.join(", ")),
    };
    match config.strategy {
        Strategy::Ranges => {
            let mut out = String::new();
            for svc in services {
                let ports: Vec<u16> = list
                    .iter()
                    .filter_map(|s| s.ports.get(&svc.name).copied())
                    .collect();
                let rest = ports[1..].iter().map(u16::to_string).collect();
                out.push_str(&format!(
                    "{}: next suggested port: {} (lowest free in {}-{}){}\n",
                    svc.name,
                    ports[0],
                    svc.range.0,
                    svc.range.1,
                    then(rest)
                ));
            }
            out
        }
        Strategy::Block(b) if b.span == b.size => {
            let first = list[0].block.map(|[lo, _]| lo).unwrap_or_default();
            let rest = list[1..]
                .iter()
                .filter_map(|s| s.block.map(|[lo, _]| lo.to_string()))
                .collect();
            format!(
                "next suggested port: {first} ({convention}){}\n  ports: {}\n",
                then(rest),
                inline(&list[0])
            )
        }
        Strategy::Block(_) => {
            let mut out = format!(
                "next suggested slot: {} ({}) ({convention})\n",
                list[0].slot.unwrap_or_default(),
                inline(&list[0])
            );
            for s in &list[1..] {
                out.push_str(&format!(
                    "  then slot {} ({})\n",
                    s.slot.unwrap_or_default(),
                    inline(s)
                ));
            }
            out
        }
    }
}
