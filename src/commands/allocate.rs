//! `allocate [<worktree>] [--port S=P]... [--move S]... [--no-render] [--json]`: give a
//! worktree its full set of ports (idempotent: a worktree that has them keeps them, and
//! nothing is written), then render its files. A kept port that a process outside the
//! worktree holds is reported, one line per service, with the `--move` that fixes it.

use crate::cli::AllocateArgs;
use crate::commands::{Report, render_and_report, wants};
use crate::model::allocate::Want;
use crate::model::config::{MIN_PORT, Strategy};
use crate::workspace::{Workspace, warn};

/// Run `allocate`.
pub fn run(args: &AllocateArgs) -> anyhow::Result<Report> {
    let ws = Workspace::open()?;
    let target = ws.target(args.worktree.as_deref())?;
    let mut wants = wants(&args.ports);
    for service in &args.moves {
        // A pin says where to; a move alone takes the automatic choice.
        match wants.get(service) {
            Some(Want::Pin(port)) => warn(&format!(
                "--move {service} is not needed: --port {service}={port} already says where it goes"
            )),
            _ => {
                wants.insert(service.clone(), Want::Move);
            }
        }
    }
    // A pin outside its service's range is the user's choice: kept, and said once here.
    for (service, want) in &wants {
        if let (Want::Pin(port), Some(svc)) = (want, target.config.service(service))
            && target.config.strategy == Strategy::Ranges
            && u16::try_from(*port).is_ok_and(|p| p >= MIN_PORT)
            && !(u32::from(svc.range.0)..=u32::from(svc.range.1)).contains(port)
        {
            warn(&format!(
                "{service} {port} is outside its range {}-{} in {}; kept, as you asked",
                svc.range.0,
                svc.range.1,
                target.config.location()
            ));
        }
    }
    // What it held before, to say what moved: only a --move or a --port can move a port (a
    // plain allocate never reads the registry twice: 10,000 worktrees cost 10 ms a read).
    let before = match wants.is_empty() {
        true => Default::default(),
        false => ws.ports_now(&target.wt.key),
    };
    let held = ws.ensure_ports(&target, &wants)?;
    ws.warn_foreign_holders(&target, &held);
    let mut report = render_and_report(&ws, &target, &held, !args.no_render, args.json)?;
    if !args.json {
        report
            .stdout
            .insert_str(0, &moved_lines(&before, &held.ports));
    }
    Ok(report)
}

/// `moved web 8081 -> 8082`, one line per service whose port changed (a `--move`, a `--port`
/// for a worktree that had ports); nothing for a first allocation.
fn moved_lines(
    before: &std::collections::BTreeMap<String, u16>,
    after: &std::collections::BTreeMap<String, u16>,
) -> String {
    (before.iter())
        .filter_map(|(service, old)| {
            let new = after.get(service)?;
            (new != old).then(|| format!("moved {service} {old} -> {new}\n"))
        })
        .collect()
}
