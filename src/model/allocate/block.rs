//! Strategy `block`: the repository holds a block of `span` ports (claimed machine-wide by
//! the caller with [`choose_block`]); each worktree takes the lowest free slot of `size` ports
//! in it, and each service sits at `slot start + offset`. A slot with any port registered
//! elsewhere or held by a process is skipped whole: a slot is one installation's ports, and
//! sharing one with a stranger is what the policy exists to prevent. PURE, like the rest of
//! the allocator.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::path::Path;

use super::{Change, Ctx, Owner, Refusal, Taken};
use crate::model::config::{Block, Protocol, Service};
use crate::model::error::{Code, Details, Error, NoBlock, NoSlot, SlotHolder, SlotSkipped};

/// Where the worktree's repository has its block, and who holds which slot of it.
#[derive(Debug, Clone, Copy)]
pub struct BlockSite<'a> {
    /// First port of the repository's block.
    pub start: u16,
    /// Slots the repository's other worktrees hold (slot, worktree).
    pub slots: &'a [(u32, &'a str)],
    /// This worktree's slot, when it has one.
    pub slot: Option<u32>,
}

impl BlockSite<'_> {
    /// The block's ports.
    pub fn ports(&self, b: Block) -> RangeInclusive<u16> {
        self.start..=self.start + (b.span - 1)
    }

    /// First port of slot `slot`.
    pub fn slot_start(&self, b: Block, slot: u32) -> u16 {
        self.start + (slot as u16) * b.size
    }
}

/// The lowest `span`-aligned block at or above `base` that no other repository claims
/// (`claims`) and in which no other repository has registered a port (`taken`'s owners with
/// a repository). Busy processes do not move a block: its slots skip them.
pub fn choose_block(
    b: Block,
    claims: &[(RangeInclusive<u16>, &Path)],
    taken: &Taken<'_>,
) -> Result<u16, Error> {
    let mut claimed = 0;
    let mut used = 0;
    let mut start = u32::from(b.base);
    while start + u32::from(b.span) - 1 <= 65535 {
        let block = start as u16..=(start + u32::from(b.span) - 1) as u16;
        let overlaps =
            |r: &RangeInclusive<u16>| r.start() <= block.end() && block.start() <= r.end();
        if claims.iter().any(|(r, _)| overlaps(r)) {
            claimed += 1;
        } else if block
            .clone()
            .any(|p| taken.owner(p).is_some_and(|o| o.repository.is_some()))
        {
            used += 1;
        } else {
            return Ok(start as u16);
        }
        start += u32::from(b.span);
    }
    let holders: Vec<String> = claims
        .iter()
        .filter(|(r, _)| *r.end() >= b.base)
        .map(|(r, repo)| format!("{}-{} ({})", r.start(), r.end(), repo.display()))
        .collect();
    Err(Error::new(
        Code::RangeExhausted,
        format!(
            "no free block of {} ports at or above {} for this repository: {claimed} claimed by other repositories{}, {used} holding their ports; prune repositories you deleted (`git worktree-ports prune --all`), or choose another base in [block] of .worktree-ports/config.toml",
            b.span,
            b.base,
            if holders.is_empty() {
                String::new()
            } else {
                format!(" ({})", holders.join(", "))
            },
        ),
    )
    .with(Details::NoBlock(NoBlock {
        base: b.base,
        span: b.span,
        claimed,
        used,
    })))
}

/// Why a slot cannot be the worktree's: the first port that stops it.
pub(super) struct Skip {
    port: u16,
    why: String,
}

/// Give the services the worktree lacks their ports: in its slot if it holds ports already,
/// else in the lowest free slot. Returns the worktree's slot.
pub(super) fn fill(
    ctx: &mut Ctx<'_, '_>,
    b: Block,
    site: &BlockSite<'_>,
    ports: &mut BTreeMap<String, u16>,
    changes: &mut Vec<Change>,
) -> Result<Option<u32>, Error> {
    let req = ctx.req;
    let missing: Vec<&Service> = (req.services.iter())
        .filter(|s| !ports.contains_key(&s.name))
        .collect();
    if missing.is_empty() {
        return Ok(site.slot);
    }
    let mut place = |ctx: &mut Ctx<'_, '_>, slot: u32, check: bool| -> Result<(), Error> {
        for svc in &missing {
            let port = site.slot_start(b, slot) + svc.offset;
            let port = match check {
                true => ctx.check_pin(svc, u32::from(port))?,
                false => port,
            };
            ctx.chosen.insert(port);
            ports.insert(svc.name.clone(), port);
            changes.push(Change::Assigned {
                service: svc.name.clone(),
                port,
            });
        }
        Ok(())
    };
    // A worktree with ports keeps its slot: a service the config gained goes to its place
    // there (or says who holds that port).
    let holds_slot = |s: u32| {
        s < b.slots() && !site.slots.iter().any(|(n, _)| *n == s) && !req.current.is_empty()
    };
    if let Some(s) = site.slot.filter(|s| holds_slot(*s)) {
        place(ctx, s, true)?;
        return Ok(Some(s));
    }
    let mut skipped = Vec::new();
    for s in 0..b.slots() {
        if site.slots.iter().any(|(n, _)| *n == s) {
            continue;
        }
        match slot_problem(ctx, b, site, s) {
            None => {
                place(ctx, s, false)?;
                return Ok(Some(s));
            }
            Some(skip) => skipped.push((s, skip)),
        }
    }
    Err(exhausted(ctx, b, site, &skipped))
}

/// The first port of slot `slot` that keeps this worktree out of it, if any.
pub(super) fn slot_problem(
    ctx: &Ctx<'_, '_>,
    b: Block,
    site: &BlockSite<'_>,
    slot: u32,
) -> Option<Skip> {
    let req = ctx.req;
    let first = site.slot_start(b, slot);
    let own = |p: u16| req.current.values().any(|q| *q == p) || ctx.chosen.contains(&p);
    for offset in 0..b.size {
        let port = first + offset;
        let svc = (req.services.iter()).find(|s| s.offset == offset);
        if let Some(svc) =
            svc.filter(|s| !req.current.contains_key(&s.name) && !ctx.chosen.contains(&port))
        {
            if let Some(r) = ctx.refuse_known(svc, port) {
                let why = match r {
                    Refusal::Allocated(owner) => format!("allocated to {owner}"),
                    Refusal::Reserved => "reserved".to_string(),
                    Refusal::InUse => "in use".to_string(),
                };
                return Some(Skip { port, why });
            }
            if !ctx.probe.is_free(port, svc.protocol) {
                return Some(in_use(ctx, port, svc.protocol));
            }
            continue;
        }
        if own(port) {
            continue;
        }
        if let Some(owner) = req.taken.owner(port)
            && owner != Owner::here(req.worktree, owner.service)
        {
            return Some(Skip {
                port,
                why: format!("allocated to {owner}"),
            });
        }
        if !ctx.probe.is_free(port, Protocol::Tcp) {
            return Some(in_use(ctx, port, Protocol::Tcp));
        }
    }
    None
}

fn in_use(ctx: &Ctx<'_, '_>, port: u16, protocol: Protocol) -> Skip {
    let who = ctx
        .probe
        .holder(port, protocol)
        .map_or_else(|| "another process".to_string(), |h| h.to_string());
    Skip {
        port,
        why: format!("in use by {who}"),
    }
}

fn exhausted(ctx: &Ctx<'_, '_>, b: Block, site: &BlockSite<'_>, skipped: &[(u32, Skip)]) -> Error {
    let range = site.ports(b);
    let mut held: Vec<(u32, &str)> = site.slots.iter().map(|(s, w)| (*s, *w)).collect();
    held.sort();
    let worktrees: Vec<String> = held
        .iter()
        .map(|(s, w)| format!("{w} (slot {s})"))
        .collect();
    let skips: Vec<String> = skipped
        .iter()
        .map(|(s, k)| format!("slot {s} skipped: port {} is {}", k.port, k.why))
        .collect();
    let mut parts = Vec::new();
    if !worktrees.is_empty() {
        parts.push(format!("held by worktrees {}", worktrees.join(", ")));
    }
    parts.extend(skips);
    Error::new(
        Code::RangeExhausted,
        format!(
            "no free slot for worktree {} in block {}-{} ({}: {} slots of {} ports): {}; run `git worktree-ports prune`, or widen span in [block] of .worktree-ports/config.toml",
            ctx.req.worktree,
            range.start(),
            range.end(),
            b.describe(),
            b.slots(),
            b.size,
            parts.join("; ")
        ),
    )
    .with(Details::NoSlot(NoSlot {
        block: [*range.start(), *range.end()],
        slots: b.slots(),
        size: b.size,
        worktrees: (held.iter())
            .map(|(s, w)| SlotHolder {
                worktree: w.to_string(),
                slot: *s,
            })
            .collect(),
        skipped: (skipped.iter())
            .map(|(s, k)| SlotSkipped {
                slot: *s,
                port: k.port,
                reason: k.why.to_string(),
            })
            .collect(),
    }))
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};
    use std::path::PathBuf;

    use proptest::prelude::*;

    use super::*;
    use crate::model::allocate::{Allocation, Holder, Probe, Request, Want, allocate};
    use crate::model::config::Strategy;

    struct Busy(HashSet<u16>);

    impl Probe for Busy {
        fn is_free(&self, port: u16, _: Protocol) -> bool {
            !self.0.contains(&port)
        }
        fn holder(&self, _: u16, _: Protocol) -> Option<Holder> {
            Some(Holder {
                pid: Some(77),
                command: Some("python3".into()),
                uid: None,
            })
        }
    }

    fn services(offsets: &[(&str, u16)], b: Block) -> Vec<Service> {
        offsets
            .iter()
            .map(|(n, o)| Service {
                name: n.to_string(),
                range: (b.base, b.base + (b.span - 1)),
                env: crate::model::config::default_env_name(n),
                protocol: Protocol::Tcp,
                offset: *o,
                http: false,
                well_known: &[],
            })
            .collect()
    }

    const TEAM: Block = Block {
        base: 30000,
        size: 10,
        span: 100,
    };

    /// Allocate `worktree` in the block at `start`, with `held` = (worktree, slot, ports).
    fn run(
        b: Block,
        start: u16,
        worktree: &str,
        svcs: &[Service],
        held: &[(&str, u32, BTreeMap<String, u16>)],
        busy: &[u16],
    ) -> Result<Allocation, Error> {
        let mut taken = Taken::new();
        for (w, _, ports) in held {
            for (s, p) in ports {
                taken.insert(*p, Owner::here(w, s)).unwrap();
            }
        }
        let slots: Vec<(u32, &str)> = held
            .iter()
            .filter(|(w, _, _)| *w != worktree)
            .map(|(w, s, _)| (*s, *w))
            .collect();
        let current = held
            .iter()
            .find(|(w, _, _)| *w == worktree)
            .map(|(_, _, p)| p.clone())
            .unwrap_or_default();
        let slot = held
            .iter()
            .find(|(w, _, _)| *w == worktree)
            .map(|(_, s, _)| *s);
        allocate(
            &Request {
                strategy: Strategy::Block(b),
                worktree,
                services: svcs,
                current: &current,
                wants: &BTreeMap::<String, Want>::new(),
                taken: &taken,
                reserved: &[],
                avoid: &[],
                block: Some(BlockSite {
                    start,
                    slots: &slots,
                    slot,
                }),
            },
            &Busy(busy.iter().copied().collect()),
        )
    }

    #[test]
    fn worktrees_take_the_lowest_free_slot_and_services_sit_at_their_offsets() {
        let svcs = services(
            &[
                ("web", 0),
                ("api", 1),
                ("db", 2),
                ("supabase-api", 3),
                ("studio", 4),
            ],
            TEAM,
        );
        let main = run(TEAM, 30000, "main", &svcs, &[], &[]).unwrap();
        assert_eq!(main.slot, Some(0));
        assert_eq!(main.ports["web"], 30000);
        assert_eq!(main.ports["studio"], 30004);
        let held = [("main", 0, main.ports.clone())];
        let next = run(TEAM, 30000, "feat", &svcs, &held, &[]).unwrap();
        assert_eq!(next.slot, Some(1));
        assert_eq!(next.ports["web"], 30010);
        assert_eq!(next.ports["db"], 30012);
    }

    #[test]
    fn a_slot_with_any_busy_port_is_skipped_whole() {
        let svcs = services(&[("web", 0), ("db", 2)], TEAM);
        // 30017 is no service's port, yet a stranger on it makes slot 1 someone else's.
        let held = [(
            "main",
            0,
            BTreeMap::from([("web".into(), 30000), ("db".into(), 30002)]),
        )];
        let a = run(TEAM, 30000, "feat", &svcs, &held, &[30017]).unwrap();
        assert_eq!(a.slot, Some(2));
        assert_eq!(a.ports["web"], 30020);
        assert_eq!(a.ports["db"], 30022);
    }

    #[test]
    fn a_full_block_names_the_span_its_worktrees_the_skip_and_the_key() {
        let b = Block {
            base: 9500,
            size: 10,
            span: 20,
        };
        let svcs = services(&[("web", 0)], b);
        let held = [("main", 0, BTreeMap::from([("web".into(), 9500)]))];
        let e = run(b, 9500, "feat", &svcs, &held, &[9513]).unwrap_err();
        assert_eq!(e.code, Code::RangeExhausted);
        for part in [
            "block 9500-9519",
            "main (slot 0)",
            "slot 1 skipped: port 9513 is in use by pid 77 (python3)",
            "widen span in [block]",
        ] {
            assert!(e.message.contains(part), "{part}: {}", e.message);
        }
        assert_eq!(e.details["block"], serde_json::json!([9500, 9519]));
    }

    #[test]
    fn a_service_the_config_gained_goes_to_its_place_in_the_worktrees_slot() {
        let svcs = services(&[("web", 0), ("db", 2)], TEAM);
        let held = [
            ("main", 0, BTreeMap::from([("web".into(), 30000)])),
            ("feat", 3, BTreeMap::from([("web".into(), 30030)])),
        ];
        let a = run(TEAM, 30000, "feat", &svcs, &held, &[]).unwrap();
        assert_eq!((a.slot, a.ports["db"]), (Some(3), 30032));
        let e = run(TEAM, 30000, "feat", &svcs, &held, &[30032]).unwrap_err();
        assert_eq!(e.code, Code::PortInUse, "{}", e.message);
    }

    #[test]
    fn blocks_skip_other_repositories_claims_and_ports() {
        let other = Path::new("/src/other");
        let mut taken = Taken::new();
        assert_eq!(choose_block(TEAM, &[], &taken).unwrap(), 30000);
        let claims = [(30000..=30099, other)];
        assert_eq!(choose_block(TEAM, &claims, &taken).unwrap(), 30100);
        taken
            .insert(30150, Owner::elsewhere(other, "main", "web"))
            .unwrap();
        assert_eq!(choose_block(TEAM, &claims, &taken).unwrap(), 30200);
        // This repository's own ports do not move its block.
        let mut own = Taken::new();
        own.insert(30000, Owner::here("main", "web")).unwrap();
        assert_eq!(choose_block(TEAM, &[], &own).unwrap(), 30000);
        let top = Block {
            base: 65500,
            size: 10,
            span: 30,
        };
        let e = choose_block(top, &[(65500..=65529, other)], &Taken::new()).unwrap_err();
        assert_eq!(e.code, Code::RangeExhausted);
        assert!(
            e.message.contains("65500-65529 (/src/other)"),
            "{}",
            e.message
        );
    }

    /// (worktree, slot, ports).
    type Held = (String, u32, BTreeMap<String, u16>);

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Repositories with any block configs, allocating worktrees in any order, with
        /// strangers on random ports: no port is handed out twice, every port lies in its
        /// repository's block at its slot's offset, and no two claims overlap.
        #[test]
        fn block_allocations_never_overlap_across_repositories(
            configs in prop::collection::vec((0u16..40, 1u16..6, 1u16..5, 1u16..4), 1..5),
            order in prop::collection::vec(0usize..5, 1..40),
            busy in prop::collection::hash_set(30000u16..30600, 0..30),
        ) {
            let repos: Vec<(Block, Vec<Service>, PathBuf)> = configs
                .iter()
                .enumerate()
                .map(|(i, (base, size, slots, nsvc))| {
                    let size = *size.max(nsvc);
                    let b = Block { base: 30000 + base * 7, size, span: size * slots };
                    let names: Vec<(String, u16)> =
                        (0..*nsvc).map(|o| (format!("s{o}"), size - 1 - o)).collect();
                    let refs: Vec<(&str, u16)> = names.iter().map(|(n, o)| (n.as_str(), *o)).collect();
                    (b, services(&refs, b), PathBuf::from(format!("/r{i}")))
                })
                .collect();
            // repository -> (claim start, worktree -> (slot, ports))
            let mut state: HashMap<usize, (u16, Vec<Held>)> = HashMap::new();
            let probe = Busy(busy.clone());
            for (n, pick) in order.iter().enumerate() {
                let r = pick % repos.len();
                let (b, svcs, me) = &repos[r];
                let snapshot = state.clone();
                let mut taken = Taken::new();
                let mut claims = Vec::new();
                for (other, (start, wts)) in &snapshot {
                    if *other == r {
                        continue;
                    }
                    claims.push((*start..=start + (repos[*other].0.span - 1), repos[*other].2.as_path()));
                    for (w, _, ports) in wts {
                        for (s, p) in ports {
                            taken.insert(*p, Owner::elsewhere(repos[*other].2.as_path(), w, s)).unwrap();
                        }
                    }
                }
                let start = match state.get(&r) {
                    Some((s, _)) => *s,
                    None => match choose_block(*b, &claims, &taken) {
                        Ok(s) => s,
                        Err(e) => { prop_assert_eq!(e.code, Code::RangeExhausted); continue; }
                    },
                };
                let _ = me;
                let mine = snapshot.get(&r).map(|(_, w)| w.as_slice()).unwrap_or_default();
                for (w, _, ports) in mine {
                    for (s, p) in ports {
                        taken.insert(*p, Owner::here(w, s)).unwrap();
                    }
                }
                let slots: Vec<(u32, &str)> = mine.iter().map(|(w, s, _)| (*s, w.as_str())).collect();
                let name = format!("w{n}");
                let result = allocate(
                    &Request {
                        strategy: Strategy::Block(*b),
                        worktree: &name,
                        services: svcs,
                        current: &BTreeMap::new(),
                        wants: &BTreeMap::new(),
                        taken: &taken,
                        reserved: &[],
                        avoid: &[],
                        block: Some(BlockSite { start, slots: &slots, slot: None }),
                    },
                    &probe,
                );
                match result {
                    Ok(a) => {
                        let slot = a.slot.unwrap();
                        for s in svcs.iter() {
                            let p = a.ports[&s.name];
                            prop_assert_eq!(p, start + slot as u16 * b.size + s.offset);
                            prop_assert!(!busy.contains(&p));
                        }
                        state.entry(r).or_insert((start, Vec::new())).1.push((name, slot, a.ports));
                    }
                    Err(e) => {
                        prop_assert_eq!(e.code, Code::RangeExhausted);
                        state.entry(r).or_insert((start, Vec::new()));
                    }
                }
            }
            let mut seen = HashSet::new();
            for (r, (start, wts)) in &state {
                let span = repos[*r].0.span;
                for (other, (ostart, _)) in &state {
                    if other != r {
                        let ospan = repos[*other].0.span;
                        prop_assert!(start + (span - 1) < *ostart || ostart + (ospan - 1) < *start,
                            "claims overlap: {}+{} and {}+{}", start, span, ostart, ospan);
                    }
                }
                for (_, _, ports) in wts {
                    for p in ports.values() {
                        prop_assert!(seen.insert(*p), "port {} handed out twice", p);
                        prop_assert!((*start..=start + (span - 1)).contains(p));
                    }
                }
            }
        }
    }
}
