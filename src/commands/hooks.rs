//! `hooks install | uninstall | status [--json]`.

use crate::cli::{HooksAction, HooksArgs};
use crate::commands::Report;
use crate::workspace::{HookState, Installed, PREVIOUS_HOOK, Uninstalled, Workspace};

/// `hooks status --json`: the hooks directory's state.
pub type HooksStatusAnswer = HookState;

/// Run `hooks`.
pub fn run(args: &HooksArgs) -> anyhow::Result<Report> {
    let ws = Workspace::open()?;
    enum Done {
        Install(Installed),
        Uninstall(Uninstalled),
        Status(bool),
    }
    let (state, done) = match &args.action {
        HooksAction::Install => ws.install_hook().map(|(s, d)| (s, Done::Install(d)))?,
        HooksAction::Uninstall => ws.uninstall_hook().map(|(s, d)| (s, Done::Uninstall(d)))?,
        HooksAction::Status { json } => (ws.hook_state()?, Done::Status(*json)),
    };
    let dir = state.dir.clone();
    let hook = state.hook.display();
    Ok(match done {
        Done::Install(installed) => Report::ok(match installed {
            Installed::Fresh { chained: false } => format!(
                "installed {hook}: every `git worktree add` now allocates ports and renders files\n"
            ),
            Installed::Fresh { chained: true } => format!(
                "installed {hook}: every `git worktree add` now allocates ports and renders files\n\
                 your previous hook is kept as {} and still runs first; `git worktree-ports hooks uninstall` puts it back\n",
                dir.join(PREVIOUS_HOOK).display()
            ),
            Installed::Updated => format!("updated {hook} to this version\n"),
            Installed::AlreadyCurrent => format!("already installed: {hook}\n"),
            Installed::Manager(m) => format!(
                "{} manages the hooks in {}, and would drop a hook file written there; nothing was installed.\n{}",
                m.name(),
                dir.display(),
                m.snippet()
            ),
        }),
        Done::Uninstall(uninstalled) => Report::ok(match uninstalled {
            Uninstalled::Removed { restored: true } => {
                format!("removed the hook; your previous hook is back at {hook}\n")
            }
            Uninstalled::Removed { restored: false } => format!("removed {hook}\n"),
            Uninstalled::NotInstalled if state.exists => {
                format!("{hook} is not ours; left it as it is\n")
            }
            Uninstalled::NotInstalled => "no hook of ours is installed; nothing to do\n".into(),
        }),
        Done::Status(json) => {
            if json {
                Report::answer(&state)
            } else {
                let what = match (&state, state.manager) {
                    (s, _) if s.current => "installed (current)".to_string(),
                    (s, _) if s.ours => "installed, outdated: run `git worktree-ports hooks install`".to_string(),
                    (s, Some(m)) if s.through_manager => format!("installed through {} (its configuration runs `git worktree-ports hook post-checkout`)", m.name()),
                    (_, Some(m)) => format!("not installed: {} manages these hooks; `hooks install` prints what to add", m.name()),
                    (s, None) if s.exists => "not installed; another post-checkout hook is there (`hooks install` keeps it and runs it first)".to_string(),
                    _ => "not installed".to_string(),
                };
                let mut out = format!("hooks dir: {}\npost-checkout: {what}\n", dir.display());
                if let Some(prev) = &state.chained {
                    out.push_str(&format!(
                        "chained: {} (your previous hook, runs first)\n",
                        prev.display()
                    ));
                }
                Report::ok(out)
            }
        }
    })
}
