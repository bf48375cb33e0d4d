//! `check`: what each port is (free, allocated to which repository, worktree and service,
//! leased, inside another repository's block, or held by which process), against the
//! machine-wide taken set and the live sockets. Works outside a repository too.

use schemars::JsonSchema;
use serde::Serialize;

use crate::machine::Machine;
use crate::model::allocate::{Holder, Probe};
use crate::model::attribution::{self, KnownWorktree};
use crate::model::config::{MIN_PORT, Protocol};
use crate::model::error::{Code, classify};
use crate::sys::probe::SystemProbe;
use crate::sys::procs;

use super::{OutsideHoldings, Workspace, known_this, machine_taken, warn};

/// One port of `check --json`; which fields are present depends on `status`.
#[derive(Debug, Default, Serialize, JsonSchema)]
pub struct CheckedPort {
    /// The port as given (it may be out of range: `invalid`).
    pub port: u32,
    /// What it is.
    pub status: PortStatus,
    /// `leased`: the lease's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease: Option<String>,
    /// `allocated`: the worktree it belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worktree: Option<String>,
    /// `allocated`: the service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// `allocated` in another repository (or inside its claimed block): that repository.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// `in_use`: `tcp` or `udp`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// `in_use`: the holder's pid, when it can be seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// `in_use`: the holder's command.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// `in_use`: the holder's user id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
}

/// What a checked port is.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PortStatus {
    /// Nobody has it and nothing listens.
    #[default]
    Free,
    /// A worktree of this or another repository has it.
    Allocated,
    /// A lease has it.
    Leased,
    /// Not allocated, but a process holds it.
    InUse,
    /// Outside 1024-65535.
    Invalid,
}

/// Check `ports`: each one's answer, with a line saying it for a person.
pub fn check(ports: &[u32]) -> anyhow::Result<Vec<(CheckedPort, String)>> {
    let ws = match Workspace::open() {
        Ok(ws) => Some(ws),
        Err(e) if classify(&e).code == Code::NotARepository => None,
        Err(e) => return Err(e),
    };
    let view = match &ws {
        Some(ws) => Some(ws.view()?),
        None => None,
    };
    // Whose a listener is, against every worktree known here and the current one (read
    // once, when first needed).
    let known = std::cell::OnceCell::new();
    // The listener of `proto` on a port: one look per busy port, for the text and the JSON.
    let listener = |port: u16, proto: Protocol| {
        (procs::listeners(&[port]).into_iter()).find(|l| l.protocol == proto.as_str())
    };
    let attribute = |l: &crate::model::attribution::Listener| -> String {
        let (known, this): &(Vec<KnownWorktree>, Option<KnownWorktree>) =
            known.get_or_init(|| match &view {
                Some(view) => {
                    let ws = view.workspace();
                    let mut k = view.known_worktrees().unwrap_or_default();
                    k.extend(ws.known_elsewhere());
                    let here = ws.repo().current().ok().flatten();
                    (k, here.as_ref().map(known_this))
                }
                _ => (Vec::new(), None),
            });
        let whose = attribution::classify(l.process.as_ref(), known, this.as_ref());
        format!("{} ({whose})", attribution::describe(l))
    };
    let elsewhere = match Machine::from_env() {
        Ok(machine) => {
            let (index, warnings) = machine.read();
            warnings.iter().for_each(|w| warn(w));
            match &view {
                Some(view) => {
                    view.workspace()
                        .other_registries(&index, &view.registry, super::Detail::Owners)
                }
                _ => OutsideHoldings::read(&index, super::Me::default(), super::Detail::Owners),
            }
        }
        Err(_) => OutsideHoldings::default(),
    };
    let (all, _) = machine_taken(view.as_ref().map(|v| &v.registry), &elsewhere);
    let taken = Some(all);
    let mut results: Vec<(CheckedPort, String)> = Vec::new();
    for &port in ports {
        let (status, text, extra) = match u16::try_from(port).ok().filter(|p| *p >= MIN_PORT) {
            None => (
                PortStatus::Invalid,
                "outside 1024-65535".to_string(),
                CheckedPort::default(),
            ),
            Some(p) => match taken.as_ref().and_then(|t| t.owner(p)) {
                Some(o) => (
                    if o.lease {
                        PortStatus::Leased
                    } else {
                        PortStatus::Allocated
                    },
                    {
                        // Beside the owner, whoever listens on it now, and whose that is.
                        let holder = [Protocol::Tcp, Protocol::Udp]
                            .into_iter()
                            .find(|proto| !SystemProbe.is_free(p, *proto))
                            .map(|proto| match listener(p, proto) {
                                Some(l) => attribute(&l),
                                None => SystemProbe.holder(p, proto).map_or_else(
                                    || "another process".to_string(),
                                    |h| h.to_string(),
                                ),
                            });
                        let verb = if o.lease { "leased:" } else { "allocated to" };
                        match holder {
                            Some(h) => format!("{verb} {o}; in use by {h}"),
                            None => format!("{verb} {o}"),
                        }
                    },
                    match (o.lease, o.block || o.gone) {
                        (true, _) => CheckedPort {
                            lease: Some(o.worktree.to_string()),
                            ..CheckedPort::default()
                        },
                        // Inside another repository's block, or kept by a gone one: that repository, no
                        // worktree.
                        (false, true) => CheckedPort {
                            repository: o.repository.map(|r| r.display().to_string()),
                            ..CheckedPort::default()
                        },
                        (false, false) => CheckedPort {
                            worktree: Some(o.worktree.to_string()),
                            service: Some(o.service.to_string()),
                            repository: o.repository.map(|r| r.display().to_string()),
                            ..CheckedPort::default()
                        },
                    },
                ),
                None => {
                    let busy: Vec<Protocol> = [Protocol::Tcp, Protocol::Udp]
                        .into_iter()
                        .filter(|proto| !SystemProbe.is_free(p, *proto))
                        .collect();
                    match busy.first() {
                        None => (PortStatus::Free, "free".to_string(), CheckedPort::default()),
                        Some(proto) => {
                            let (holder, who) = match listener(p, *proto) {
                                Some(l) => (Some(Holder::of(&l)), attribute(&l)),
                                None => {
                                    let h = SystemProbe.holder(p, *proto);
                                    let who = h.as_ref().map_or_else(
                                        || "another process".to_string(),
                                        |h| h.to_string(),
                                    );
                                    (h, who)
                                }
                            };
                            (
                                PortStatus::InUse,
                                format!("in use ({}) by {who}", proto.as_str()),
                                CheckedPort {
                                    protocol: Some(proto.as_str().to_string()),
                                    pid: holder.as_ref().and_then(|h| h.pid),
                                    command: holder.as_ref().and_then(|h| h.command.clone()),
                                    uid: holder.as_ref().and_then(|h| h.uid),
                                    ..CheckedPort::default()
                                },
                            )
                        }
                    }
                }
            },
        };
        results.push((
            CheckedPort {
                port,
                status,
                ..extra
            },
            text,
        ));
    }
    Ok(results)
}
