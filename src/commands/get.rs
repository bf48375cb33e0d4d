//! `get <service> [-w <worktree>]`: the port alone on stdout, for scripts. Reads without the
//! lock; never writes, never allocates.

use schemars::JsonSchema;
use serde::Serialize;

use crate::cli::GetArgs;
use crate::commands::Report;
use crate::model::error::{Code, Details, Error, NotAllocated, UnknownService};
use crate::workspace::{Workspace, peer_query};

/// `get --json`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct GetAnswer {
    /// The worktree's name (`main` for the main worktree).
    pub worktree: String,
    /// The service asked for.
    pub service: String,
    /// Its port.
    pub port: u16,
    /// With --repo: the other repository, as it was named.
    pub repository: Option<String>,
}

/// The port alone (`8081`), or the answer with `--json`.
fn answer(args: &GetArgs, worktree: String, port: u16) -> Report {
    Report::ok(format!("{port}\n")).or_answer(
        args.json,
        GetAnswer {
            worktree,
            service: args.service.clone(),
            port,
            repository: args.repo.clone(),
        },
    )
}

/// Run `get`.
pub fn run(args: &GetArgs) -> anyhow::Result<Report> {
    if let Some(repo) = &args.repo {
        return from_peer(repo, args);
    }
    let ws = Workspace::open()?;
    let (key, held) = ws.ports_of(args.worktree.as_deref())?;
    let Some(ports) = held else {
        return Err(Error::new(
            Code::NotAllocated,
            format!(
                "worktree {key} has no ports allocated; run `git worktree-ports allocate` there"
            ),
        )
        .with(Details::NotAllocated(NotAllocated {
            worktree: key.clone(),
            service: None,
            repository: None,
        }))
        .into());
    };
    match ports.get(&args.service) {
        Some(port) => Ok(answer(args, key, *port)),
        None => {
            let names: Vec<&str> = ports.keys().map(String::as_str).collect();
            Err(Error::new(
                Code::UnknownService,
                format!(
                    "worktree {key} has no port for service {:?}; it has: {}",
                    args.service,
                    names.join(", ")
                ),
            )
            .with(Details::UnknownService(UnknownService {
                service: args.service.clone(),
                services: names.iter().map(|n| n.to_string()).collect(),
                worktree: Some(key.clone()),
            }))
            .into())
        }
    }
}

/// `get <service> --repo <repo> [-w <worktree>]`: another repository's port, resolved as the
/// `port()` template function resolves it.
fn from_peer(repo: &str, args: &GetArgs) -> anyhow::Result<Report> {
    let (peers, spec, worktree) = peer_query(repo, args.worktree.as_deref());
    // Read from the worktree named like this one, else the main one: the answer names it.
    match peers.port_of(&spec, &args.service, &worktree) {
        Ok((read, port)) => Ok(answer(args, read.to_string(), port)),
        Err(msg) => Err(Error::new(Code::NotAllocated, msg)
            .with(Details::NotAllocated(NotAllocated {
                worktree,
                service: Some(args.service.clone()),
                repository: Some(repo.to_string()),
            }))
            .into()),
    }
}
