//! `env [-w <worktree>] [--format dotenv|shell|json]`: the worktree's port variables,
//! allocating first when it has none (`git worktree add --no-checkout` runs no hook).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Serialize;

use crate::cli::{EnvArgs, EnvFormat};
use crate::commands::{Report, schema, slot_var};
use crate::model::config::default_env_name;
use crate::model::error::{Code, Error};
use crate::workspace::{Workspace, peer_query, template_context};

/// `env --format json`: variable -> value, the same variables as the dotenv form (a flat
/// map a script can load as it is, so it carries no `"schema"` field).
pub type EnvAnswer = BTreeMap<String, EnvValue>;

/// A variable's value: a port or slot number, or a URL or hostname.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum EnvValue {
    /// `WEB_PORT`, `WORKTREE_SLOT`.
    Number(u64),
    /// `WEB_URL`, `WORKTREE_HOSTNAME`.
    Text(String),
}

impl std::fmt::Display for EnvValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EnvValue::Number(n) => write!(f, "{n}"),
            EnvValue::Text(t) => f.write_str(t),
        }
    }
}

/// Run `env`.
pub fn run(args: &EnvArgs) -> anyhow::Result<Report> {
    let number = |(k, v): (String, u16)| (k, EnvValue::Number(v.into()));
    let vars: Vec<(String, EnvValue)> = match &args.repo {
        Some(repo) => peer_vars(repo, args)?.into_iter().map(number).collect(),
        None => {
            let ws = Workspace::open()?;
            let target = ws.target(args.worktree.as_deref())?;
            let held = ws.ensure_ports(&target, &BTreeMap::new())?;
            ws.after_allocation(&target, &held);
            let mut vars: Vec<(String, EnvValue)> = (target.vars(&held.ports).into_iter())
                .chain(slot_var(held.slot))
                .map(number)
                .collect();
            // URLs of the HTTP services, and the hostname.
            let ctx = template_context(&ws, &target, &held);
            vars.extend((ctx.text_vars().into_iter()).map(|(k, v)| (k, EnvValue::Text(v))));
            vars
        }
    };
    Ok(match args.format {
        EnvFormat::Dotenv => Report::ok(vars.iter().map(|(k, v)| format!("{k}={v}\n")).collect()),
        EnvFormat::Shell => Report::ok(
            vars.iter()
                .map(|(k, v)| format!("export {k}={v}\n"))
                .collect(),
        ),
        EnvFormat::Json => {
            let map: EnvAnswer = vars.into_iter().collect();
            Report::ok(schema::json_text(&map))
        }
    })
}

/// `env --repo <repo>`: another repository's ports, named after its services (NAME_PORT),
/// from its worktree named like the current one (or `-w`), else its main worktree.
fn peer_vars(repo: &str, args: &EnvArgs) -> anyhow::Result<Vec<(String, u16)>> {
    let (peers, spec, worktree) = peer_query(repo, args.worktree.as_deref());
    let (_, ports) = peers
        .worktree_ports(&spec, &worktree)
        .map_err(|m| Error::new(Code::NotAllocated, m))?;
    Ok(ports
        .iter()
        .map(|(s, p)| (default_env_name(s), *p))
        .collect())
}
