//! `env [-w <worktree>] [--format dotenv|shell|json]`: the worktree's port variables,
//! allocating first when it has none (`git worktree add --no-checkout` runs no hook).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::cli::{EnvArgs, EnvFormat};
use crate::commands::{Ctx, Report, allocate};
use crate::config::Config;

/// Run `env`.
pub fn run(args: &EnvArgs) -> anyhow::Result<Report> {
    let vars = vars(args.worktree.as_deref())?;
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

/// (`WEB_PORT`, 8081) in config order (services the config no longer has come last).
pub fn vars(worktree: Option<&str>) -> anyhow::Result<Vec<(String, u16)>> {
    let ctx = Ctx::open()?;
    let wt = ctx.target(worktree)?;
    let config = Config::load(&wt.path)?;
    let ports = allocate::ensure(&ctx, &wt, &config, &BTreeMap::new())?;
    Ok(allocate::ordered(&config, &ports)
        .into_iter()
        .map(|(_, port, env)| (env, port))
        .collect())
}
