//! `check <port>... [--json]`: for each port, free, allocated to which repository, worktree
//! and service (any repository of the machine index), or held by which process (TCP or UDP).
//! Exit 1 if any port is not free. Works outside a repository too.

use serde_json::{Value, json};

use crate::allocate::Probe;
use crate::attribution::{self, Known};
use crate::cli::CheckArgs;
use crate::commands::Report;
use crate::config::{MIN_PORT, Protocol};
use crate::error::{Code, classify};
use crate::machine::Machine;
use crate::probe::SystemProbe;
use crate::procs;
use crate::workspace::{Elsewhere, Workspace, canonical, warn};

/// Run `check`.
pub fn run(args: &CheckArgs) -> anyhow::Result<Report> {
    let (ws, registry, me) = match Workspace::open() {
        Ok(ws) => {
            let reg = ws.load_unlocked()?;
            let me = ws.canonical_common_dir();
            (Some(ws), Some(reg), Some(me))
        }
        Err(e) if classify(&e).code == Code::NotARepository => (None, None, None),
        Err(e) => return Err(e),
    };
    // Whose a listener is, against every worktree known here (read once, when first needed).
    let known = std::cell::OnceCell::new();
    let attribute = |port: u16| -> Option<String> {
        let l = procs::listeners(&[port]).into_iter().next()?;
        let known: &Vec<Known> = known.get_or_init(|| match (&ws, &registry) {
            (Some(ws), Some(reg)) => {
                let mut k = ws.known_worktrees(reg).unwrap_or_default();
                k.extend(ws.known_elsewhere());
                k
            }
            _ => Vec::new(),
        });
        let here = ws
            .as_ref()
            .and_then(|ws| ws.repo().current().ok().flatten());
        let this = here.map(|w| Known {
            path: canonical(&w.path),
            repository: None,
            name: w.key,
            exists: true,
        });
        let whose = attribution::classify(l.process.as_ref(), known, this.as_ref());
        Some(format!("{} ({whose})", attribution::describe(&l)))
    };
    let elsewhere = match Machine::from_env() {
        Ok(machine) => {
            let (index, warnings) = machine.read();
            warnings.iter().for_each(|w| warn(w));
            Elsewhere::read(&index, me.as_deref())
        }
        Err(_) => Elsewhere::default(),
    };
    let mut all = registry.as_ref().map(|r| r.taken()).unwrap_or_default();
    elsewhere.add_to(&mut all);
    let taken = Some(all);
    let mut results: Vec<Value> = Vec::new();
    let mut lines = String::new();
    for &port in &args.ports {
        let (status, text, extra) = match u16::try_from(port).ok().filter(|p| *p >= MIN_PORT) {
            None => ("invalid", "outside 1024-65535".to_string(), json!({})),
            Some(p) => match taken.as_ref().and_then(|t| t.owner(p)) {
                Some(o) => (
                    if o.lease { "leased" } else { "allocated" },
                    {
                        // Beside the owner, whoever listens on it now, and whose that is.
                        let holder = [Protocol::Tcp, Protocol::Udp]
                            .into_iter()
                            .find(|proto| !SystemProbe.is_free(p, *proto))
                            .map(|proto| match attribute(p) {
                                Some(text) => text,
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
                    match o.lease {
                        true => json!({"lease": o.worktree}),
                        false => json!({
                            "worktree": o.worktree,
                            "service": o.service,
                            "repository": o.repository.map(|r| r.display().to_string()),
                        }),
                    },
                ),
                None => {
                    let busy: Vec<Protocol> = [Protocol::Tcp, Protocol::Udp]
                        .into_iter()
                        .filter(|proto| !SystemProbe.is_free(p, *proto))
                        .collect();
                    match busy.first() {
                        None => ("free", "free".to_string(), json!({})),
                        Some(proto) => {
                            let holder = SystemProbe.holder(p, *proto);
                            let who = match attribute(p) {
                                Some(text) => text,
                                None => holder.as_ref().map_or_else(
                                    || "another process".to_string(),
                                    |h| h.to_string(),
                                ),
                            };
                            (
                                "in_use",
                                format!("in use ({}) by {who}", proto.as_str()),
                                json!({
                                    "protocol": proto.as_str(),
                                    "pid": holder.as_ref().and_then(|h| h.pid),
                                    "command": holder.as_ref().and_then(|h| h.command.clone()),
                                    "uid": holder.as_ref().and_then(|h| h.uid),
                                }),
                            )
                        }
                    }
                }
            },
        };
        let mut entry = json!({"port": port, "status": status});
        if let (Some(e), Some(x)) = (entry.as_object_mut(), extra.as_object()) {
            e.extend(x.clone());
        }
        results.push(entry);
        lines.push_str(&format!("{port}: {text}\n"));
    }
    let all_free = results.iter().all(|r| r["status"] == "free");
    let mut report = if args.json {
        Report::json(&json!({"ports": results, "all_free": all_free}))
    } else {
        Report::ok(lines)
    };
    report.success = all_free;
    Ok(report)
}
