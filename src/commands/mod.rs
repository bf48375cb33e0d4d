//! One file per subcommand: arguments -> [`Workspace`] -> a [`Report`]. No command module
//! imports another; what several share is the workflow in `workspace` or the presentation
//! helpers here. Warnings go to stderr as they happen.

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::Serialize;

use crate::cli::{Command, PortArg, PortValue};
use crate::model::allocate::Want;
use crate::workspace::{FileAction, Holding, Rendered, Target, Workspace};

pub mod add;
pub mod allocate;
pub mod check;
pub mod completions;
pub mod doctor;
pub mod env;
pub mod exec;
pub mod get;
pub mod hook;
pub mod hooks;
pub mod hosts;
pub mod init;
pub mod install_man;
pub mod lease;
pub mod list;
pub mod proxy;
pub mod prune;
pub mod release;
pub mod remove;
pub mod render;
pub mod repair;
pub mod schema;
pub mod skill;
pub mod status;
pub mod suggest;

/// Run one command line's command: the one dispatch match (`lib::run` prints what it
/// answers; the MCP server answers with it).
pub fn run(command: &Command) -> anyhow::Result<Report> {
    Ok(match command {
        Command::Completions(a) => completions::run(a)?,
        Command::Skill(a) => skill::run(a),
        Command::InstallMan(a) => install_man::run(a)?,
        Command::Allocate(a) => allocate::run(a)?,
        Command::List(a) => list::run(a)?,
        Command::Get(a) => get::run(a)?,
        Command::Release(a) => release::run(a)?,
        Command::Prune(a) => prune::run(a)?,
        Command::Check(a) => check::run(a)?,
        Command::Add(a) => add::run(a)?,
        Command::Remove(a) => remove::run(a)?,
        Command::Render(a) => render::run(a)?,
        Command::Env(a) => env::run(a)?,
        Command::Exec(a) => exec::run(a)?,
        Command::Init(a) => init::run(a)?,
        Command::Hooks(a) => hooks::run(a)?,
        Command::Repair(a) => repair::run(a)?,
        Command::Suggest(a) => suggest::run(a)?,
        Command::Lease(a) => lease::run(a)?,
        Command::Status(a) => status::run(a)?,
        Command::Doctor(a) => doctor::run(a)?,
        Command::Proxy(a) => proxy::run(a)?,
        Command::Hosts(a) => hosts::run(a)?,
        Command::Hook(a) => hook::run(a),
        Command::Mcp(_) => anyhow::bail!("`mcp` is served by lib::run, not a command's answer"),
    })
}

/// What clap says of a command line it refused, in one line: its first, without `error: `
/// (`--json`'s USAGE_ERROR, and the MCP server's for arguments a tool passes on).
pub fn usage_message(err: &clap::Error) -> String {
    let text = err.render().to_string();
    let first = text.lines().next().unwrap_or_default();
    first.strip_prefix("error: ").unwrap_or(first).to_string()
}

/// What a command produced.
#[derive(Debug, Default)]
pub struct Report {
    /// Text for stdout.
    pub stdout: String,
    /// False when the command ran but its answer is "no" (`check` of a busy port): exit 1.
    pub success: bool,
}

impl Report {
    /// A successful report.
    pub fn ok(stdout: String) -> Report {
        Report {
            stdout,
            success: true,
        }
    }

    /// A typed answer, with its `"schema"` version, as pretty JSON.
    pub fn answer<T: serde::Serialize>(answer: T) -> Report {
        Report::ok(schema::pretty(answer))
    }

    /// This report, or `answer` as JSON when `json` is set.
    pub fn or_answer<T: serde::Serialize>(self, json: bool, answer: T) -> Report {
        if json { Report::answer(answer) } else { self }
    }
}

/// `allocate --json` and `add --json`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct AllocateAnswer {
    /// The worktree's name (`main` for the main worktree).
    pub worktree: String,
    /// Its directory.
    pub path: String,
    /// Its branch, if any.
    pub branch: Option<String>,
    /// Service -> port.
    pub ports: BTreeMap<String, u16>,
    /// Its slot (`strategy = "slots"` / `"block"`).
    pub slot: Option<u32>,
    /// Its hostname (`feature.app.localhost`).
    pub hostname: Option<String>,
    /// HTTP service -> its direct URL (`http://feature.app.localhost:8081`).
    pub urls: BTreeMap<String, String>,
    /// What `range = "auto"` chose, and why.
    pub range_choices: Vec<String>,
    /// The files rendered (empty with --no-render).
    pub rendered: Vec<FileAnswer>,
}

/// One rendered file.
#[derive(Debug, Serialize, JsonSchema)]
pub struct FileAnswer {
    /// Relative to the worktree.
    pub path: String,
    /// What happened to it.
    pub action: FileAction,
}

/// The end of `allocate` and `add`: render (unless told not to), then the worktree's ports
/// as text or as `{"worktree", "path", "branch", "ports", "rendered"}`.
pub fn render_and_report(
    ws: &Workspace,
    target: &Target,
    held: &Holding,
    render: bool,
    json: bool,
) -> anyhow::Result<Report> {
    let rendered = if render {
        Some(ws.render(target, held, false)?)
    } else {
        None
    };
    ws.after_allocation(target, held);
    let ports = &held.ports;
    let wt = &target.wt;
    if json {
        let ctx = crate::workspace::template_context(ws, target, held);
        return Ok(Report::answer(AllocateAnswer {
            worktree: wt.key.clone(),
            path: wt.path.to_string_lossy().into_owned(),
            branch: wt.branch.clone(),
            ports: ports.clone(),
            slot: held.slot,
            hostname: (!ctx.hostname.is_empty()).then(|| ctx.hostname.clone()),
            urls: ctx.urls.clone(),
            range_choices: target.config.range_choices.clone(),
            rendered: rendered.as_ref().map(files).unwrap_or_default(),
        }));
    }
    let mut out = describe(target, ports);
    if let Some(r) = &rendered {
        out.push_str(&render_summary(&wt.path, r));
    }
    Ok(Report::ok(out))
}

/// `ports of worktree feature (/path):` and one line per service.
pub fn describe(target: &Target, ports: &BTreeMap<String, u16>) -> String {
    let wt = &target.wt;
    let mut out = format!("ports of worktree {} ({}):\n", wt.key, wt.path.display());
    for choice in &target.config.range_choices {
        out.push_str(&format!("  ({choice})\n"));
    }
    let rows: Vec<Vec<String>> = target
        .ordered(ports)
        .into_iter()
        .map(|(name, port, env)| vec![format!("  {name}"), port.to_string(), env])
        .collect();
    out.push_str(&table(&rows));
    out
}

/// `[{"path": ".env", "action": "written"}]`.
pub fn files(r: &Rendered) -> Vec<FileAnswer> {
    (r.files.iter())
        .map(|(p, a)| FileAnswer {
            path: p.to_string_lossy().into_owned(),
            action: a.clone(),
        })
        .collect()
}

/// `rendered .env, config/app.toml in /path` (or `... up to date in`; nothing when there
/// were no files).
pub fn render_summary(worktree: &std::path::Path, r: &Rendered) -> String {
    let names = |want: FileAction| -> Vec<String> {
        r.files
            .iter()
            .filter(|(_, a)| *a == want)
            .map(|(p, _)| p.display().to_string())
            .collect()
    };
    let written = names(FileAction::Written);
    let unchanged = names(FileAction::Unchanged);
    let mut out = String::new();
    if !written.is_empty() {
        out.push_str(&format!(
            "rendered {} in {}\n",
            written.join(", "),
            worktree.display()
        ));
    }
    let removed = names(FileAction::Removed);
    if !removed.is_empty() {
        out.push_str(&format!(
            "removed {} in {} (rendered by the tool from templates that are gone)\n",
            removed.join(", "),
            worktree.display()
        ));
    }
    if written.is_empty() && !unchanged.is_empty() {
        out.push_str(&format!(
            "{} up to date in {}\n",
            unchanged.join(", "),
            worktree.display()
        ));
    }
    out
}

/// The files a render wrote, for one-line summaries.
pub fn written_files(r: &Rendered) -> Vec<PathBuf> {
    r.files
        .iter()
        .filter(|(_, a)| *a == FileAction::Written)
        .map(|(p, _)| p.clone())
        .collect()
}

/// Terminal columns `s` takes: East Asian wide characters count two, combining marks none,
/// colour escapes (`ESC [ ... m`) none.
fn visible_width(s: &str) -> usize {
    use unicode_width::UnicodeWidthChar;
    let mut n = 0;
    let mut in_escape = false;
    for c in s.chars() {
        match (in_escape, c) {
            (false, '\x1b') => in_escape = true,
            (false, _) => n += c.width().unwrap_or(0),
            (true, 'm') => in_escape = false,
            (true, _) => {}
        }
    }
    n
}

pub use crate::output::colour::{Colour, paint, set as set_colour};

/// Left-aligned columns separated by two spaces; trailing spaces trimmed. Colour escapes
/// ([`paint`]) take no width.
pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| visible_width(s))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if c + 1 < row.len() {
                let pad = widths[c] - visible_width(cell) + 2;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `--port` values as the allocator takes them.
pub fn wants(ports: &[PortArg]) -> BTreeMap<String, Want> {
    ports
        .iter()
        .map(|p| {
            let want = match p.want {
                PortValue::Auto => Want::Auto,
                PortValue::Pin(n) => Want::Pin(n),
            };
            (p.service.clone(), want)
        })
        .collect()
}

pub use crate::workspace::{ports_inline, slot_var};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let rows = vec![
            vec!["A".to_string(), "BB".to_string(), "C".to_string()],
            vec!["long".to_string(), "x".to_string(), "".to_string()],
        ];
        assert_eq!(table(&rows), "A     BB  C\nlong  x\n");
        let coloured = vec![
            vec!["\x1b[32mup\x1b[0m".to_string(), "x".to_string()],
            vec!["down".to_string(), "y".to_string()],
        ];
        assert_eq!(table(&coloured), "\x1b[32mup\x1b[0m    x\ndown  y\n");
    }

    /// Wide (CJK) characters take two columns, a combining accent none: the next column
    /// still starts at the same place on screen.
    #[test]
    fn table_aligns_wide_and_non_ascii_names() {
        let rows = vec![
            vec!["機能".to_string(), "1".to_string()],
            vec!["cafe\u{301}".to_string(), "2".to_string()],
            vec!["ab".to_string(), "3".to_string()],
        ];
        assert_eq!(table(&rows), "機能  1\ncafe\u{301}  2\nab    3\n");
    }
}
