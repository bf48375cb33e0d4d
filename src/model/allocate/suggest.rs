//! `suggest`: the next free ports, slots or blocks under a repository's strategy, checked
//! like an allocation (registries, claims, reserved ports, the probe). PURE, and nothing is
//! written by its caller either.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::path::Path;

use super::block::{BlockSite, slot_problem};
use super::{Ctx, Probe, Request};
use crate::model::config::Block;

/// One suggestion: a complete set of ports for a new worktree (or installation).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub struct Suggestion {
    /// Service -> port.
    pub ports: BTreeMap<String, u16>,
    /// Block strategy: the slot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slot: Option<u32>,
    /// Block strategy: the block (first and last port).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block: Option<[u16; 2]>,
}

/// Ranges strategy: the i-th suggestion holds the i-th free port of every service (outside
/// the kernel's ephemeral range first), which is what the next allocations would get.
pub fn ranges(req: &Request<'_>, count: usize, probe: &dyn Probe) -> Vec<Suggestion> {
    let ctx = Ctx::new(req, probe);
    let mut list = vec![Suggestion::default(); count];
    let mut complete = count;
    for svc in req.services {
        let (lo, hi) = svc.range;
        let in_avoid = |p: u16| req.avoid.iter().any(|r| r.contains(&p));
        let free: Vec<u16> = (lo..=hi)
            .filter(|p| !in_avoid(*p))
            .chain((lo..=hi).filter(|p| in_avoid(*p)))
            .filter(|p| ctx.usable(svc, *p))
            .take(count)
            .collect();
        complete = complete.min(free.len());
        for (s, p) in list.iter_mut().zip(free) {
            s.ports.insert(svc.name.clone(), p);
        }
    }
    list.truncate(complete);
    list
}

/// Block strategy: the next free slots of the repository's block.
pub fn slots(
    req: &Request<'_>,
    b: Block,
    site: &BlockSite<'_>,
    count: usize,
    probe: &dyn Probe,
) -> Vec<Suggestion> {
    let ctx = Ctx::new(req, probe);
    let range = site.ports(b);
    (0..b.slots())
        .filter(|s| !site.slots.iter().any(|(n, _)| n == s))
        .filter(|s| slot_problem(&ctx, b, site, *s).is_none())
        .take(count)
        .map(|s| Suggestion {
            ports: (req.services.iter())
                .map(|svc| (svc.name.clone(), site.slot_start(b, s) + svc.offset))
                .collect(),
            slot: Some(s),
            block: Some([*range.start(), *range.end()]),
        })
        .collect()
}

/// Block strategy, one slot per repository (POEM's increment of 10): the next free blocks of
/// the machine, for a new installation. `claims` are every repository's, this one's too.
pub fn blocks(
    req: &Request<'_>,
    b: Block,
    claims: &[(RangeInclusive<u16>, &Path)],
    count: usize,
    probe: &dyn Probe,
) -> Vec<Suggestion> {
    let ctx = Ctx::new(req, probe);
    let mut out = Vec::new();
    let mut start = u32::from(b.base);
    while out.len() < count && start + u32::from(b.span) - 1 <= 65535 {
        let site = BlockSite {
            start: start as u16,
            slots: &[],
            slot: None,
        };
        let range = site.ports(b);
        let overlaps =
            |r: &RangeInclusive<u16>| r.start() <= range.end() && range.start() <= r.end();
        let free = !claims.iter().any(|(r, _)| overlaps(r))
            && !range.clone().any(|p| req.taken.owner(p).is_some())
            && slot_problem(&ctx, b, &site, 0).is_none();
        if free {
            out.push(Suggestion {
                ports: (req.services.iter())
                    .map(|svc| (svc.name.clone(), site.start + svc.offset))
                    .collect(),
                slot: Some(0),
                block: Some([*range.start(), *range.end()]),
            });
        }
        start += u32::from(b.span);
    }
    out
}
