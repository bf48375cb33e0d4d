//! `env [-w <worktree>] [--format dotenv|shell|json]`: the worktree's port variables,
//! allocating first when it has none (`git worktree add --no-checkout` runs no hook).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::cli::{EnvArgs, EnvFormat};
use crate::commands::Report;
use crate::workspace::Workspace;

/// Run `env`.
pub fn run(args: &EnvArgs) -> anyhow::Result<Report> {
    let ws = Workspace::open()?;
    let target = ws.target(args.worktree.as_deref())?;
    let held = ws.ensure_ports(&target, &BTreeMap::new())?;
    let vars = target.vars(&held.ports);
    Ok(match args.format {
        EnvFormat::Dotenv => Report::ok(vars.iter().map(|(k, v)| format!("{k}={v}\n")).collect()),
        EnvFormat::Shell => Report::ok(
            vars.iter()
                .map(|(k, v)| format!("export {k}={v}\n"))
                .collect(),
        ),
        EnvFormat::Json => {
            let map: Map<String, Value> =
                vars.into_iter().map(|(k, v)| (k, Value::from(v))).collect();
            Report::json(&Value::Object(map))
        }
    })
}
