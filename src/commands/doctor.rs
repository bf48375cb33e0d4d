//! `doctor [--fix] [--json]`: reconcile the registry, git, the machine and the project's files.
//! Each finding has a severity, what was found and the fix. Exit 1 when something needs
//! attention (an error or a warning left unfixed). `--fix` applies only the safe fixes (prune
//! an entry whose worktree is gone, move a service off a port another process holds,
//! re-render stale files, update our outdated hook, drop index entries of vanished
//! repositories) and says what it did; it never edits the user's compose, package or
//! devcontainer files.

use schemars::JsonSchema;
use serde::Serialize;

use crate::cli::DoctorArgs;
use crate::commands::{Colour, Report, paint, table};
use crate::model::finding::{FindingCode, Severity};
use crate::workspace::{self, Finding};

/// Run `doctor`.
pub fn run(args: &DoctorArgs) -> anyhow::Result<Report> {
    let findings = workspace::diagnose(args.fix)?;
    let attention = findings.iter().any(Finding::open);
    let mut report = match args.json {
        true => Report::answer(DoctorAnswer {
            findings: findings.iter().map(to_json).collect(),
            needs_attention: attention,
        }),
        false => Report::ok(text(&findings, args.fix)),
    };
    report.success = !attention;
    Ok(report)
}

fn to_json(f: &Finding) -> FindingAnswer {
    FindingAnswer {
        severity: f.severity,
        code: f.code,
        message: f.message.clone(),
        fix: f.fix.clone(),
        safe_fix: f.action.is_some(),
        fixed: f.outcome.as_ref().and_then(|o| o.as_ref().ok().cloned()),
        fix_failed: f.outcome.as_ref().and_then(|o| o.as_ref().err().cloned()),
    }
}

/// `doctor --json`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct DoctorAnswer {
    /// Everything found, most severe first.
    pub findings: Vec<FindingAnswer>,
    /// Whether any error or warning is left unfixed (the exit code says the same: 1).
    pub needs_attention: bool,
}

/// One finding of `doctor --json`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct FindingAnswer {
    /// How much it matters.
    pub severity: Severity,
    /// A stable code (the README's finding table).
    pub code: FindingCode,
    /// What is wrong, naming the file, port, worktree or process.
    pub message: String,
    /// What to do about it.
    pub fix: String,
    /// Whether `doctor --fix` does that safely.
    pub safe_fix: bool,
    /// After `--fix`: what was done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fixed: Option<String>,
    /// After `--fix`: why the fix failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix_failed: Option<String>,
}

fn text(findings: &[Finding], fixing: bool) -> String {
    if findings.is_empty() {
        return "no problems found\n".to_string();
    }
    let mut rows = Vec::new();
    for f in findings {
        let colour = match f.severity {
            Severity::Error => Colour::Red,
            Severity::Warning => Colour::Yellow,
            Severity::Info => Colour::Dim,
        };
        rows.push(vec![
            paint(f.severity.as_str(), colour),
            f.code.as_str().to_string(),
            f.message.clone(),
        ]);
        let fix = match &f.outcome {
            Some(Ok(done)) => paint(&format!("fixed: {done}"), Colour::Green),
            Some(Err(e)) => paint(&format!("fix failed: {e}"), Colour::Red),
            None if f.action.is_some() => {
                format!("fix: {} (safe: `doctor --fix` applies it)", f.fix)
            }
            None => format!("fix: {}", f.fix),
        };
        rows.push(vec![String::new(), String::new(), fix]);
    }
    let mut out = table(&rows);
    let open = findings.iter().filter(|f| f.open()).count();
    let safe = findings
        .iter()
        .filter(|f| f.action.is_some() && f.outcome.is_none())
        .count();
    let need = |n: usize| match n {
        1 => "1 finding needs attention".to_string(),
        n => format!("{n} findings need attention"),
    };
    out.push_str(&match (open, fixing, safe) {
        (0, _, _) => "nothing needs attention\n".to_string(),
        (n, false, 1) => format!(
            "{}; `git worktree-ports doctor --fix` applies the safe fix\n",
            need(n)
        ),
        (n, false, s) if s > 1 => format!(
            "{}; `git worktree-ports doctor --fix` applies the {s} safe fixes\n",
            need(n)
        ),
        (n, _, _) => format!("{}\n", need(n)),
    });
    out
}
