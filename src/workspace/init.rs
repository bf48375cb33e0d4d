//! `init`'s starting files: a commented `.worktree-ports/config.toml` (the built-in services)
//! and `.worktree-ports/templates/.env.tera`, created in the target worktree, never replacing
//! a file that exists.

use std::fmt::Write as _;
use std::io::Write as _;

use anyhow::Context as _;

use crate::model::config::{CONFIG_PATH, Config};
use crate::render::{BUILTIN_ENV, TEMPLATES_DIR};
use crate::sys::fsio;

use super::Target;

/// Create the starting files in `target`; each relative path with true when it was written,
/// false when it existed and was kept (even one created a moment ago: never replaced).
/// Files are 0644 and directories 0755 whatever the umask.
pub fn write_starting_files(target: &Target) -> anyhow::Result<Vec<(String, bool)>> {
    let files = [
        (CONFIG_PATH.to_string(), config_text()),
        (format!("{TEMPLATES_DIR}/.env.tera"), env_template_text()),
    ];
    let mut out = Vec::new();
    for (rel, text) in files {
        let path = target.wt.path.join(&rel);
        fsio::create_dirs(path.parent().expect("has parent"))
            .with_context(|| format!("could not create {}", path.display()))?;
        match fsio::new_file(&path) {
            Ok(mut f) => {
                f.write_all(text.as_bytes())
                    .with_context(|| format!("could not write {}", path.display()))?;
                out.push((rel, true));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => out.push((rel, false)),
            Err(e) => {
                return Err(e).with_context(|| format!("could not create {}", path.display()));
            }
        }
    }
    Ok(out)
}

/// The config file `init` writes: the built-in services, commented.
fn config_text() -> String {
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
fn env_template_text() -> String {
    format!(
        "{{#- Rendered to .env in every worktree by git-worktree-ports (only its marked block is managed).\n    \
         Variables: ports (service -> port), services [{{name, port, env, protocol}}],\n    \
         worktree {{name, path, branch, is_main}}, repo {{name, common_dir}}, compose_project_name. -#}}\n{BUILTIN_ENV}"
    )
}
