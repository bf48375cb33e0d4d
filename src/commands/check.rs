//! `check <port>... [--json]`: for each port, free, allocated to which worktree and service,
//! or held by which process (TCP or UDP). Exit 1 if any port is not free. Works outside a
//! repository too (then only the machine is asked).

use serde_json::{Value, json};

use crate::allocate::Probe;
use crate::cli::CheckArgs;
use crate::commands::Report;
use crate::config::{MIN_PORT, Protocol};
use crate::error::{Code, classify};
use crate::probe::SystemProbe;
use crate::workspace::Workspace;

/// Run `check`.
pub fn run(args: &CheckArgs) -> anyhow::Result<Report> {
    let registry = match Workspace::open() {
        Ok(ws) => Some(ws.load_unlocked()?),
        Err(e) if classify(&e).code == Code::NotARepository => None,
        Err(e) => return Err(e),
    };
    let taken = registry.as_ref().map(|r| r.taken());
    let mut results: Vec<Value> = Vec::new();
    let mut lines = String::new();
    for &port in &args.ports {
        let (status, text, extra) = match u16::try_from(port).ok().filter(|p| *p >= MIN_PORT) {
            None => ("invalid", "outside 1024-65535".to_string(), json!({})),
            Some(p) => match taken.as_ref().and_then(|t| t.owner(p)) {
                Some(o) => (
                    "allocated",
                    format!("allocated to {o}"),
                    json!({"worktree": o.worktree, "service": o.service}),
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
                            let who = holder
                                .as_ref()
                                .map_or_else(|| "another process".to_string(), |h| h.to_string());
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
