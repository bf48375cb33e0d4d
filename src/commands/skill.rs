//! `skill`: the agent skill shipped with the tool (`skills/git-worktree-ports/SKILL.md`, in
//! the Agent Skills format: `name` and `description` front matter, then what an agent needs),
//! or the snippet for a repository's `AGENTS.md`. Embedded at build time; reads nothing.

use crate::cli::SkillArgs;
use crate::commands::Report;

/// The skill, as shipped.
pub const SKILL: &str = include_str!("../../skills/git-worktree-ports/SKILL.md");

/// The `AGENTS.md` snippet, as shipped.
pub const AGENTS_MD: &str = include_str!("../../skills/git-worktree-ports/AGENTS.md");

/// Run `skill`.
pub fn run(args: &SkillArgs) -> Report {
    Report::ok(
        match args.agents_md {
            true => AGENTS_MD,
            false => SKILL,
        }
        .to_string(),
    )
}
