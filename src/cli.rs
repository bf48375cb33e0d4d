//! Command-line types (clap derive) and the parsing of raw flag values into typed ones. The
//! help text of every flag is its doc comment.

use clap::{Args, Parser, Subcommand};

use crate::allocate::Want;

/// Give every git worktree its own, non-conflicting set of service ports.
///
/// The registry lives in <git-common-dir>/worktree-registry/ports.json, shared by all worktrees
/// of the repository. Run as `git worktree-ports <command>` (use -h: git turns --help into a
/// man page lookup).
#[derive(Debug, Parser)]
#[command(name = "git-worktree-ports", version, bin_name = "git worktree-ports")]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// True when the command asked for JSON output (errors then print JSON too).
    pub fn json(&self) -> bool {
        match &self.command {
            Command::Allocate(a) => a.json,
            Command::List(a) => a.json,
            Command::Get(_) => false,
            Command::Release(a) => a.json,
            Command::Prune(a) => a.json,
            Command::Check(a) => a.json,
        }
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Allocate ports for the current (or named) worktree and print them.
    Allocate(AllocateArgs),
    /// List every allocation.
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Print the port of one service, alone, for scripts: PORT=$(git worktree-ports get web).
    Get(GetArgs),
    /// Give a worktree's ports back (all, or only some services).
    Release(ReleaseArgs),
    /// Drop allocations of worktrees git no longer has, or whose directory is gone.
    Prune(PruneArgs),
    /// Tell, for each port, whether it is free, allocated to a worktree, or held by a process.
    Check(CheckArgs),
}

/// A `--port SERVICE=PORT|auto` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortArg {
    /// Service name.
    pub service: String,
    /// The requested port, or the automatic choice.
    pub want: Want,
}

/// Parse `web=8081` / `web=auto`.
pub fn parse_port_arg(s: &str) -> Result<PortArg, String> {
    let (service, value) = s
        .split_once('=')
        .ok_or_else(|| format!("expected SERVICE=PORT or SERVICE=auto, got {s:?}"))?;
    let service = service.trim();
    if service.is_empty() {
        return Err(format!("missing service name in {s:?}"));
    }
    let value = value.trim();
    let want = if value.eq_ignore_ascii_case("auto") {
        Want::Auto
    } else {
        Want::Pin(
            value
                .parse::<u32>()
                .map_err(|_| format!("{value:?} is not a port number or \"auto\""))?,
        )
    };
    Ok(PortArg {
        service: service.to_string(),
        want,
    })
}

/// `allocate` arguments.
#[derive(Debug, Args)]
pub struct AllocateArgs {
    /// Worktree to allocate for (git name, `main`, or path); default: the current one.
    pub worktree: Option<String>,
    /// Ask for a specific port (SERVICE=PORT) or the automatic choice (SERVICE=auto); repeatable.
    /// For a worktree that has ports, SERVICE=PORT moves the service and frees its old port.
    #[arg(long = "port", value_name = "SERVICE=PORT", value_parser = parse_port_arg)]
    pub ports: Vec<PortArg>,
    /// Print JSON: {"worktree", "path", "ports"}.
    #[arg(long)]
    pub json: bool,
}

/// `list` arguments.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print JSON: {"worktrees": [{"name", "path", "branch", "ports", "exists"}]}.
    #[arg(long)]
    pub json: bool,
}

/// `get` arguments.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// Service name (web, db, ...).
    pub service: String,
    /// Worktree (git name, `main`, or path); default: the current one.
    #[arg(short, long, value_name = "NAME|PATH")]
    pub worktree: Option<String>,
}

/// `release` arguments.
#[derive(Debug, Args)]
pub struct ReleaseArgs {
    /// Worktree (git name, `main`, or path); default: the current one.
    pub worktree: Option<String>,
    /// Release only this service; repeatable. Default: every service of the worktree.
    #[arg(long = "service", value_name = "SERVICE")]
    pub services: Vec<String>,
    /// Print JSON: {"worktree", "released": {service: port}}.
    #[arg(long)]
    pub json: bool,
}

/// `prune` arguments.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Show what would be pruned; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print JSON: {"dry_run", "pruned": [{"name", "path", "reason", "ports"}]}.
    #[arg(long)]
    pub json: bool,
}

/// `check` arguments.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Ports to check.
    #[arg(required = true, value_name = "PORT")]
    pub ports: Vec<u32>,
    /// Print JSON: {"ports": [{"port", "status", ...}], "all_free"}.
    #[arg(long)]
    pub json: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn port_args_parse() {
        assert_eq!(
            parse_port_arg("web=8081").unwrap(),
            PortArg {
                service: "web".into(),
                want: Want::Pin(8081)
            }
        );
        assert_eq!(parse_port_arg("db=auto").unwrap().want, Want::Auto);
        assert_eq!(parse_port_arg("db=70000").unwrap().want, Want::Pin(70000));
        assert!(parse_port_arg("web").is_err());
        assert!(parse_port_arg("=80").is_err());
        assert!(parse_port_arg("web=eighty").is_err());
    }
}
