//! `init`: write a commented `.worktree-ports/config.toml` (the built-in services) and
//! `.worktree-ports/templates/.env.tera` into the current worktree, for the user to edit and
//! commit. Never overwrites: an existing file is kept and reported.

use std::fmt::Write as _;
use std::io::Write as _;

use anyhow::Context as _;

use crate::cli::InitArgs;
use crate::commands::Report;
use crate::model::config::{CONFIG_PATH, Config};
use crate::render::{BUILTIN_ENV, TEMPLATES_DIR};
use crate::sys::fsio;
use crate::workspace::Workspace;

/// Run `init`.
pub fn run(_args: &InitArgs) -> anyhow::Result<Report> {
    let ws = Workspace::open()?;
    let target = ws.target(None)?;
    let files = [
        (CONFIG_PATH.to_string(), config_text()),
        (format!("{TEMPLATES_DIR}/.env.tera"), env_template_text()),
    ];
    let mut out = String::new();
    for (rel, text) in files {
        let path = target.wt.path.join(&rel);
        fsio::create_dirs(path.parent().expect("has parent"))
            .with_context(|| format!("could not create {}", path.display()))?;
        // create_new: an existing file (even one created a moment ago) is never replaced;
        // 0644 whatever the umask.
        match fsio::new_file(&path) {
            Ok(mut f) => {
                f.write_all(text.as_bytes())
                    .with_context(|| format!("could not write {}", path.display()))?;
                writeln!(out, "wrote {rel}").ok();
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                writeln!(out, "kept {rel} (it exists)").ok();
            }
            Err(e) => {
                return Err(e).with_context(|| format!("could not create {}", path.display()));
            }
        }
    }
    out.push_str("edit them, commit them, and every worktree gets these services and files\n");
    Ok(Report::ok(out))
}

/// The config file `init` writes: the built-in services, commented.
pub fn config_text() -> String {
    let mut s = String::from(
        "# git-worktree-ports: the services every worktree of this repository gets.\n\
         # Each worktree gets, per service, the lowest port of its range that no other worktree\n\
         # holds and no process on the machine listens on.\n\
         \n\
         # Ports never handed out (single ports or \"low-high\" ranges).\n\
         reserved = []\n",
    );
    for svc in Config::builtin().services {
        write!(
            s,
            "\n[services.{}]\nrange = [{}, {}]  # inclusive\nenv = \"{}\"  # the variable in .env, `env` and `exec`\nprotocol = \"{}\"  # tcp | udp | both: which must be free\n",
            svc.name,
            svc.range.0,
            svc.range.1,
            svc.env,
            svc.protocol.as_str()
        )
        .ok();
    }
    s
}

/// The `.env` template `init` writes: the built-in one, with a note on the variables.
pub fn env_template_text() -> String {
    format!(
        "{{#- Rendered to .env in every worktree by git-worktree-ports (only its marked block is managed).\n    \
         Variables: ports (service -> port), services [{{name, port, env, protocol}}],\n    \
         worktree {{name, path, branch, is_main}}, repo {{name, common_dir}}, compose_project_name. -#}}\n{BUILTIN_ENV}"
    )
}
