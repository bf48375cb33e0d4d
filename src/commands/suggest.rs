//! `suggest [<service>] [--count N] [--json]`: the next free ports (ranges strategy), slots
//! (block strategy) or blocks (one slot per repository: a new installation), named after the
//! repository's convention, checked against this registry, every registry and claim of the
//! machine index, the reserved ports and the probe. Reads only; nothing is locked or written.

use schemars::JsonSchema;
use serde::Serialize;

use crate::cli::SuggestArgs;
use crate::commands::Report;
use crate::model::allocate::suggest::Suggestion;
use crate::model::config::{Config, Strategy};
use crate::workspace;

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
    let s = workspace::suggest(args.service.as_deref(), usize::from(args.count))?;
    let strategy = match s.config.strategy {
        Strategy::Ranges => "ranges",
        Strategy::Block(_) => "block",
    };
    if args.json {
        return Ok(Report::answer(SuggestAnswer {
            strategy: strategy.to_string(),
            convention: s.convention,
            suggestions: s.suggestions,
        }));
    }
    Ok(Report::ok(text(
        &s.config,
        &s.services,
        &s.convention,
        &s.suggestions,
    )))
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
