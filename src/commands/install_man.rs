//! `install-man [--dir DIR]`: the man pages, generated from the clap definitions
//! (clap_mangen): `git-worktree-ports.1` and one `git-worktree-ports-<command>.1` per command.
//! By default they go where man-db looks for the installed binary: `share/man/man1` beside
//! its `bin` directory (man-db derives `<prefix>/share/man` from each `<prefix>/bin` in PATH),
//! else `$XDG_DATA_HOME/man/man1` (`~/.local/share/man/man1`). Then `man git-worktree-ports`
//! and `git worktree-ports --help` (git asks man) work.
//!
//! Writes only the pages, each atomically; prints where they went.

use crate::cli::InstallManArgs;
use crate::commands::Report;
use crate::workspace;

/// Run `install-man`.
pub fn run(args: &InstallManArgs) -> anyhow::Result<Report> {
    let pages = pages();
    let dir = workspace::install_man_pages(args.dir.as_deref(), &pages)?;
    let mut out = format!("wrote {} man pages to {}\n", pages.len(), dir.display());
    if args.dir.is_none() {
        out.push_str("try: man git-worktree-ports, or git worktree-ports --help\n");
    } else {
        out.push_str(&format!(
            "man finds them when {} is in MANPATH\n",
            dir.parent().unwrap_or(&dir).display()
        ));
    }
    Ok(Report::ok(out))
}

/// Every page: (file name, roff source). The hidden `hook` command has none.
pub fn pages() -> Vec<(String, Vec<u8>)> {
    let mut cmd = crate::cli::full_command()
        .name("git-worktree-ports")
        .bin_name("git-worktree-ports")
        .disable_help_subcommand(true);
    cmd.build();
    let mut pages = Vec::new();
    collect(&cmd, "git-worktree-ports", "git worktree-ports", &mut pages);
    pages
}

/// `name`: the page's (`git-worktree-ports-list`); `usage`: how it is typed (`git
/// worktree-ports list`).
fn collect(cmd: &clap::Command, name: &str, usage: &str, pages: &mut Vec<(String, Vec<u8>)>) {
    let page = cmd
        .clone()
        .name(name.to_string())
        .bin_name(usage.to_string())
        .version(env!("CARGO_PKG_VERSION"));
    let mut roff = Vec::new();
    clap_mangen::Man::new(page)
        .render(&mut roff)
        .expect("rendering into memory");
    pages.push((format!("{name}.1"), roff));
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let sub_name = sub.get_name();
        collect(
            sub,
            &format!("{name}-{sub_name}"),
            &format!("{usage} {sub_name}"),
            pages,
        );
    }
}
