//! `allocate [<worktree>] [--port S=P]... [--move S]... [--no-render] [--json]`: give a
//! worktree its full set of ports (idempotent: a worktree that has them keeps them, and
//! nothing is written), then render its files. A kept port that a process outside the
//! worktree holds is reported, one line per service, with the `--move` that fixes it.

use crate::cli::AllocateArgs;
use crate::commands::{Report, render_and_report, wants};
use crate::model::allocate::Probe;
use crate::model::allocate::Want;
use crate::model::attribution::{self, Known, Whose};
use crate::model::config::Protocol;
use crate::sys::probe::SystemProbe;
use crate::sys::procs;
use crate::workspace::{Holding, Target, Workspace, canonical, warn};

/// Run `allocate`.
pub fn run(args: &AllocateArgs) -> anyhow::Result<Report> {
    let ws = Workspace::open()?;
    let target = ws.target(args.worktree.as_deref())?;
    let mut wants = wants(&args.ports);
    for service in &args.moves {
        // A pin says where to; a move alone takes the automatic choice.
        wants.entry(service.clone()).or_insert(Want::Move);
    }
    let held = ws.ensure_ports(&target, &wants)?;
    warn_foreign_holders(&ws, &target, &held);
    render_and_report(&ws, &target, &held, !args.no_render, args.json)
}

/// One warning per service whose port a process outside this worktree listens on. Reads the
/// socket tables; scans processes only when one of the ports is listening.
fn warn_foreign_holders(ws: &Workspace, target: &Target, held: &Holding) {
    // The probe first (a few binds): only a port a server holds is worth asking the kernel
    // about, which keeps the idempotent allocate as fast as it was.
    let busy: Vec<u16> = target
        .ordered(&held.ports)
        .into_iter()
        .filter(|(s, port, _)| {
            let protocol = target
                .config
                .service(s)
                .map_or(Protocol::Tcp, |s| s.protocol);
            !SystemProbe.is_free(*port, protocol)
        })
        .map(|(_, port, _)| port)
        .collect();
    if busy.is_empty() {
        return;
    }
    let listeners = procs::listeners(&busy);
    if listeners.is_empty() {
        return;
    }
    let Ok(reg) = ws.load_unlocked() else {
        return;
    };
    let mut known = ws.known_worktrees(&reg).unwrap_or_default();
    known.extend(ws.known_elsewhere());
    let this = Known {
        path: canonical(&target.wt.path),
        repository: None,
        name: target.wt.key.clone(),
        exists: true,
    };
    for (service, port, _) in target.ordered(&held.ports) {
        let Some(l) = listeners.iter().find(|l| l.port == port) else {
            continue;
        };
        let whose = attribution::classify(l.process.as_ref(), &known, Some(&this));
        if whose == Whose::This {
            continue;
        }
        warn(&format!(
            "{service}: port {port} of worktree {} is held by {} ({whose}); move it: `git worktree-ports allocate {} --move {service}`",
            target.wt.key,
            attribution::describe(l),
            target.wt.key,
        ));
    }
}
