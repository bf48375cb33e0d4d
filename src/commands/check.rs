//! `check <port>... [--json]`: for each port, free, allocated to which repository, worktree
//! and service (any repository of the machine index), or held by which process (TCP or UDP).
//! Exit 1 if any port is not free. Works outside a repository too.

use schemars::JsonSchema;
use serde::Serialize;

use crate::cli::CheckArgs;
use crate::commands::Report;
use crate::workspace::{self, CheckedPort, PortStatus};

/// `check --json`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct CheckAnswer {
    /// Each port asked about, in the order given.
    pub ports: Vec<CheckedPort>,
    /// Whether every one is free (the exit code says the same: 0, else 1).
    pub all_free: bool,
}

/// Run `check`.
pub fn run(args: &CheckArgs) -> anyhow::Result<Report> {
    let checked = workspace::check(&args.ports)?;
    let lines: String = (checked.iter())
        .map(|(c, text)| format!("{}: {text}\n", c.port))
        .collect();
    let results: Vec<CheckedPort> = checked.into_iter().map(|(c, _)| c).collect();
    let all_free = results.iter().all(|r| r.status == PortStatus::Free);
    let mut report = Report::ok(lines).or_answer(
        args.json,
        CheckAnswer {
            ports: results,
            all_free,
        },
    );
    report.success = all_free;
    Ok(report)
}
