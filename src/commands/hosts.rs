//! `hosts`: `/etc/hosts` lines for every worktree hostname the proxy routes (for resolvers
//! that do not map `*.localhost` to loopback: Safari, the macOS resolver, `files dns`). Prints
//! only: a system file is the user's to edit.

use crate::cli::HostsArgs;
use crate::commands::Report;
use crate::proxy::routes::Routes;

/// Run `hosts`.
pub fn run(_: &HostsArgs) -> anyhow::Result<Report> {
    let routes = Routes::read_machine()?;
    let mut out = String::from(
        "# git-worktree-ports: worktree hostnames (add to /etc/hosts where *.localhost does not resolve)\n",
    );
    for name in routes.0.keys() {
        out.push_str(&format!("127.0.0.1 {name}\n::1 {name}\n"));
    }
    Ok(Report::ok(out))
}
