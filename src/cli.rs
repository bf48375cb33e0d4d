//! Command-line types (clap derive) and the parsing of raw flag values into typed ones, once,
//! at the edge. The help text of every flag is its doc comment. Imports nothing from the rest
//! of the crate, so a build script or a completions/man generator can use it alone.

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Give every git worktree its own, non-conflicting set of service ports.
///
/// The registry lives in <git-common-dir>/worktree-registry/ports.json, shared by all worktrees
/// of the repository. Run as `git worktree-ports <command>` (use -h: git turns --help into a
/// man page lookup).
#[derive(Debug, Parser)]
#[command(
    name = "git-worktree-ports",
    version,
    bin_name = "git worktree-ports",
    arg_required_else_help = true
)]
pub struct Cli {
    /// When to colour the output: auto (a terminal, and NO_COLOR unset), always, never.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto, value_name = "WHEN")]
    pub color: ColorChoice,
    /// Print the JSON Schema of COMMAND's `--json` answer (`error`: of any command's error),
    /// then exit.
    #[arg(long, value_name = "COMMAND", value_enum, exclusive = true)]
    pub print_schema: Option<SchemaName>,
    /// The command to run.
    #[command(subcommand)]
    pub command: Option<Command>,
}

impl Cli {
    /// Parse the process arguments; usage errors (also in `add`'s own flags) exit 2.
    pub fn parse_args() -> Cli {
        Cli::try_parse_args(std::env::args_os()).unwrap_or_else(|e| e.exit())
    }

    /// Parse `args` (the program name first) into typed values, `add`'s git arguments
    /// included: this is the only place they are parsed.
    pub fn try_parse_args<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Cli::try_parse_with(&mut <Cli as clap::CommandFactory>::command(), args)
    }

    /// [`Cli::try_parse_args`] with a command built once and kept (`Cli::command()` costs
    /// 65 µs a call, most of a warm MCP server's `get`).
    pub fn try_parse_with<I, T>(cmd: &mut clap::Command, args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::FromArgMatches;
        let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
        let parsed = (cmd.try_get_matches_from_mut(&args))
            .and_then(|m| Cli::from_arg_matches(&m).map_err(|e| e.format(cmd)));
        let mut cli = parsed.map_err(|mut e| {
            // `exec npm run dev`: the command goes after `--` (so that its own options are
            // never taken for ours); say so instead of only "unexpected argument".
            if e.kind() == clap::error::ErrorKind::UnknownArgument
                && let Some(sub) = (args.iter().skip(1))
                    .filter_map(|a| a.to_str())
                    .find(|a| *a == "exec" || *a == "lease")
            {
                use clap::error::{ContextKind, ContextValue};
                e.insert(
                    ContextKind::Suggested,
                    ContextValue::StyledStrs(vec![
                        format!(
                            "the command goes after `--`: git worktree-ports {sub} -- npm run dev"
                        )
                        .into(),
                    ]),
                );
            }
            e
        })?;
        if let (Some(_), Some(_)) = (&cli.print_schema, &cli.command) {
            return Err(<Cli as clap::CommandFactory>::command().error(
                clap::error::ErrorKind::ArgumentConflict,
                "--print-schema takes no command: git worktree-ports --print-schema <COMMAND>",
            ));
        }
        if let Some(Command::Add(a)) = &mut cli.command {
            a.options = AddOptions::from_args(a);
        }
        Ok(cli)
    }

    /// True when the command asked for JSON output (errors then print JSON too).
    pub fn json(&self) -> bool {
        let Some(command) = &self.command else {
            return false;
        };
        match command {
            Command::Allocate(a) => a.json,
            Command::List(a) => a.json || a.format == Some(ListFormat::Json),
            Command::Get(a) => a.json,
            Command::Exec(_) | Command::Init(_) | Command::Hook(_) => false,
            Command::Hooks(a) => matches!(a.action, HooksAction::Status { json: true }),
            Command::Release(a) => a.json,
            Command::Prune(a) => a.json,
            Command::Check(a) => a.json,
            Command::Add(a) => a.json,
            Command::Completions(_) | Command::InstallMan(_) | Command::Skill(_) => false,
            Command::Mcp(_) => false,
            Command::Remove(a) => a.json,
            Command::Render(a) => a.json,
            Command::Repair(a) => a.json,
            Command::Suggest(a) => a.json,
            Command::Lease(a) => a.json,
            Command::Status(a) => a.json,
            Command::Doctor(a) => a.json,
            Command::Proxy(a) => matches!(a.action, ProxyAction::Status { json: true }),
            Command::Hosts(_) => false,
            Command::Env(a) => a.format == EnvFormat::Json,
        }
    }
}

/// `--color`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    /// Colour on a terminal, unless NO_COLOR is set.
    Auto,
    /// Always colour (even into a pipe).
    Always,
    /// Never colour.
    Never,
}

/// The answers `--print-schema` documents: one per command with `--json`, and errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SchemaName {
    /// `allocate --json` and `add --json`.
    Allocate,
    /// `add --json` (the same answer as allocate).
    Add,
    /// `list --json`.
    List,
    /// `list --all --json`.
    ListAll,
    /// `release --json`.
    Release,
    /// `release --lease ID --json`.
    ReleaseLease,
    /// `prune --json`.
    Prune,
    /// `check --json`.
    Check,
    /// `get --json`.
    Get,
    /// `remove --json`.
    Remove,
    /// `render --json`.
    Render,
    /// `env --format json`.
    Env,
    /// `repair --json`.
    Repair,
    /// `suggest --json`.
    Suggest,
    /// `lease --json`.
    Lease,
    /// `status --json`.
    Status,
    /// `doctor --json`.
    Doctor,
    /// `proxy status --json`.
    ProxyStatus,
    /// `hooks status --json`.
    HooksStatus,
    /// Any command's error with `--json`.
    Error,
}

/// A subcommand's arguments, defined only when clap parses that subcommand (clap's
/// `Command::defer`): building all 24 subcommands' arguments was most of every command's
/// start (their code paged in, their values allocated), for the one a run uses. Help, man
/// pages and completions build the whole command first (`Command::build`).
#[derive(Debug, Clone)]
pub struct Deferred<T>(pub T);

impl<T> std::ops::Deref for Deferred<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> std::ops::DerefMut for Deferred<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

impl<T: clap::FromArgMatches> clap::FromArgMatches for Deferred<T> {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        T::from_arg_matches(m).map(Deferred)
    }
    fn from_arg_matches_mut(m: &mut clap::ArgMatches) -> Result<Self, clap::Error> {
        T::from_arg_matches_mut(m).map(Deferred)
    }
    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        self.0.update_from_arg_matches(m)
    }
    fn update_from_arg_matches_mut(&mut self, m: &mut clap::ArgMatches) -> Result<(), clap::Error> {
        self.0.update_from_arg_matches_mut(m)
    }
}

impl<T: Args> Args for Deferred<T> {
    fn group_id() -> Option<clap::Id> {
        T::group_id()
    }
    fn augment_args(cmd: clap::Command) -> clap::Command {
        match EAGER.get() {
            true => T::augment_args(cmd),
            false => cmd.defer(|c| keep_about(c, T::augment_args)),
        }
    }
    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        match EAGER.get() {
            true => T::augment_args_for_update(cmd),
            false => cmd.defer(|c| keep_about(c, T::augment_args_for_update)),
        }
    }
}

thread_local! {
    /// Set while [`full_command`] builds.
    static EAGER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The command line with every subcommand's arguments defined at once, exactly as a parse
/// defines the one it enters: for what describes them all (completions, man pages).
pub fn full_command() -> clap::Command {
    EAGER.set(true);
    let cmd = <Cli as clap::CommandFactory>::command();
    EAGER.set(false);
    cmd
}

/// `augment` run late, as `defer` runs it: after the subcommand's own doc comment set its
/// about, which the arguments struct's doc comment must not replace (run in place, the
/// subcommand's came last).
fn keep_about(cmd: clap::Command, augment: fn(clap::Command) -> clap::Command) -> clap::Command {
    let about = cmd.get_about().cloned();
    let long_about = cmd.get_long_about().cloned();
    let cmd = augment(cmd);
    let cmd = match about {
        Some(a) => cmd.about(a),
        None => cmd.about(None::<&str>),
    };
    match long_about {
        Some(a) => cmd.long_about(a),
        None => cmd.long_about(None::<&str>),
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a worktree (`git worktree add`), allocate its ports and render its files.
    Add(Deferred<Box<AddArgs>>),
    /// List every allocation.
    #[command(visible_alias = "ls")]
    List(Deferred<ListArgs>),
    /// Each service's port, whether something listens on it and whose it is; files up to date.
    Status(Deferred<StatusArgs>),
    /// Print the port of one service, alone, for scripts: PORT=$(git worktree-ports get web).
    Get(Deferred<GetArgs>),
    /// Print the worktree's port variables (WEB_PORT=8081 ...), allocating if needed.
    Env(Deferred<EnvArgs>),
    /// Run a command with the worktree's port variables set, allocating if needed.
    Exec(Deferred<ExecArgs>),
    /// Allocate ports for the current (or named) worktree and print them.
    Allocate(Deferred<AllocateArgs>),
    /// Give a worktree's ports back (all, or only some services).
    Release(Deferred<ReleaseArgs>),
    /// Remove a worktree (`git worktree remove`) and give its ports back.
    Remove(Deferred<RemoveArgs>),
    /// Drop allocations of worktrees git no longer has, or whose directory is gone.
    Prune(Deferred<PruneArgs>),
    /// Render the worktree's templates (default: `.env`) with its ports.
    Render(Deferred<RenderArgs>),
    /// Tell, for each port, whether it is free, allocated to a worktree, or held by a process.
    Check(Deferred<CheckArgs>),
    /// Suggest the next free ports (or slots, or blocks) under the repository's strategy.
    Suggest(Deferred<SuggestArgs>),
    /// Lease free ports for a while, machine-wide (temporary services, parallel test runs).
    Lease(Deferred<LeaseArgs>),
    /// Find what is wrong between the registry, git, the machine and the project's files.
    Doctor(Deferred<DoctorArgs>),
    /// Rebuild a damaged registry from git's worktree list and every readable record.
    Repair(Deferred<RepairArgs>),
    /// Write a commented .worktree-ports/config.toml and templates/.env.tera to start from.
    Init(Deferred<InitArgs>),
    /// Install, remove or inspect the post-checkout hook (plain `git worktree add` allocates).
    Hooks(Deferred<HooksArgs>),
    /// The proxy that routes <worktree>.<repo>.localhost to each worktree's server.
    Proxy(Deferred<ProxyArgs>),
    /// Print /etc/hosts lines for every worktree hostname (writes nothing).
    Hosts(Deferred<HostsArgs>),
    /// Print a shell's completion script (bash, zsh and fish also complete `git worktree-ports`).
    Completions(Deferred<CompletionsArgs>),
    /// Write the man pages where `man` (and `git worktree-ports --help`) finds them.
    InstallMan(Deferred<InstallManArgs>),
    /// Print the agent skill (SKILL.md, in the Agent Skills format) that tells a coding agent
    /// when and how to use this tool; --agents-md: a snippet for a repository's AGENTS.md.
    Skill(Deferred<SkillArgs>),
    /// Serve the Model Context Protocol on stdin/stdout for a coding agent: every tool acts
    /// on the repository or worktree path it is given. Register it with the agent as
    /// `git-worktree-ports mcp` (README: Coding agents).
    Mcp(Deferred<McpArgs>),
    /// Entry points for git hooks (internal; the installed hook calls this).
    #[command(hide = true)]
    Hook(Deferred<HookArgs>),
}

impl Command {
    /// True for the commands that serve until stopped (`proxy run`, `mcp`).
    pub fn serves(&self) -> bool {
        match self {
            Command::Mcp(_) => true,
            Command::Proxy(a) => matches!(a.action, ProxyAction::Run { .. }),
            _ => false,
        }
    }
}

/// A shell `completions` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    /// bash (also completes `git worktree-ports` with git's bash completion loaded).
    Bash,
    /// zsh (also completes `git worktree-ports` through zsh's `_git`).
    Zsh,
    /// fish.
    Fish,
    /// PowerShell.
    Powershell,
    /// elvish.
    Elvish,
}

/// `mcp` arguments.
#[derive(Debug, Args)]
pub struct McpArgs {}

/// `completions` arguments.
#[derive(Debug, Args)]
#[command(
    after_help = "bash: git worktree-ports completions bash > \"${XDG_DATA_HOME:-$HOME/.local/share}/bash-completion/completions/git-worktree-ports\"
zsh:  git worktree-ports completions zsh > ~/.zfunc/_git-worktree-ports  (with fpath+=~/.zfunc before compinit)
fish: git worktree-ports completions fish > ~/.config/fish/conf.d/git-worktree-ports.fish"
)]
pub struct CompletionsArgs {
    /// The shell to write the script for.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// `skill` arguments.
#[derive(Debug, Args)]
#[command(
    after_help = "Claude Code: mkdir -p ~/.claude/skills/git-worktree-ports && git worktree-ports skill > ~/.claude/skills/git-worktree-ports/SKILL.md
A repository: git worktree-ports skill --agents-md >> AGENTS.md"
)]
pub struct SkillArgs {
    /// Print the AGENTS.md snippet instead of the skill.
    #[arg(long)]
    pub agents_md: bool,
}

/// `install-man` arguments.
#[derive(Debug, Args)]
pub struct InstallManArgs {
    /// Write the pages into DIR (default: share/man/man1 beside the binary's bin directory
    /// when writable, else $XDG_DATA_HOME/man/man1, i.e. ~/.local/share/man/man1).
    #[arg(long, value_name = "DIR", value_hint = clap::ValueHint::DirPath)]
    pub dir: Option<std::path::PathBuf>,
}

/// `repair` arguments.
#[derive(Debug, Args)]
pub struct RepairArgs {
    /// Show what would be kept and dropped; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print JSON; its shape: `git worktree-ports --print-schema repair`.
    #[arg(long)]
    pub json: bool,
}

/// `hooks` arguments.
#[derive(Debug, Args)]
pub struct HooksArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: HooksAction,
}

/// `hooks` subcommands.
#[derive(Debug, Subcommand)]
pub enum HooksAction {
    /// Install the post-checkout hook (keeping and chaining to an existing one).
    Install,
    /// Remove the hook, putting back the one that was there before.
    Uninstall,
    /// Where the hook is, whether it is ours, current, and chained.
    Status {
        /// Print JSON; its shape: `git worktree-ports --print-schema hooks-status`.
        #[arg(long)]
        json: bool,
    },
}

/// `hook` arguments (internal).
#[derive(Debug, Args)]
pub struct HookArgs {
    /// Which hook is running.
    #[command(subcommand)]
    pub kind: HookKind,
}

/// Hooks the binary handles.
#[derive(Debug, Subcommand)]
pub enum HookKind {
    /// post-checkout: <old-head> <new-head> <branch-flag>, as git passes them.
    PostCheckout {
        /// git's arguments (pre-commit passes them in PRE_COMMIT_* variables instead).
        #[arg(allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// A `--port SERVICE=PORT|auto` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortArg {
    /// Service name.
    pub service: String,
    /// The requested port, or the automatic choice.
    pub want: PortValue,
}

/// The value of `--port SERVICE=...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortValue {
    /// `auto`: the automatic choice.
    Auto,
    /// A number (validated by the allocator, so it may be out of u16 range).
    Pin(u32),
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
        PortValue::Auto
    } else {
        PortValue::Pin(
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
    /// Move these services to other free ports (the old ones are given back): for a port a
    /// foreign process took. Repeatable, or comma-separated.
    #[arg(long = "move", value_name = "SERVICE", value_delimiter = ',')]
    pub moves: Vec<String>,
    /// Do not render templates (`.env`) after allocating.
    #[arg(long)]
    pub no_render: bool,
    /// Print JSON; its shape: `git worktree-ports --print-schema allocate`.
    #[arg(long)]
    pub json: bool,
}

/// `add` arguments: `git worktree add`'s own options, typed, plus this tool's.
#[derive(Debug, Args)]
#[command(
    after_help = "The git options are passed to `git worktree add` as given; see git-worktree(1)."
)]
pub struct AddArgs {
    /// Where the new worktree goes.
    #[arg(value_name = "PATH", value_hint = clap::ValueHint::DirPath)]
    pub path: String,
    /// The commit, branch or tag to check out (default: a new branch named after PATH).
    #[arg(value_name = "COMMIT-ISH")]
    pub commit_ish: Option<String>,
    /// git: create a new branch NAME starting at COMMIT-ISH.
    #[arg(short = 'b', value_name = "NAME", conflicts_with_all = ["reset_branch", "detach"], help_heading = "git worktree add options")]
    pub new_branch: Option<String>,
    /// git: create or reset branch NAME to COMMIT-ISH.
    #[arg(
        short = 'B',
        value_name = "NAME",
        conflicts_with = "detach",
        help_heading = "git worktree add options"
    )]
    pub reset_branch: Option<String>,
    /// git: check out even if the branch is checked out elsewhere (twice: even if locked).
    #[arg(short, long, action = clap::ArgAction::Count, help_heading = "git worktree add options")]
    pub force: u8,
    /// git: detach HEAD in the new worktree.
    #[arg(long, help_heading = "git worktree add options")]
    pub detach: bool,
    /// git: do not check out files (--checkout is the default).
    #[arg(
        long,
        overrides_with = "checkout",
        help_heading = "git worktree add options"
    )]
    pub no_checkout: bool,
    /// git: check out files (the default).
    #[arg(long, hide = true)]
    pub checkout: bool,
    /// git: keep the new worktree locked.
    #[arg(long, help_heading = "git worktree add options")]
    pub lock: bool,
    /// git: with --lock, the reason.
    #[arg(
        long,
        value_name = "TEXT",
        requires = "lock",
        allow_hyphen_values = true,
        help_heading = "git worktree add options"
    )]
    pub reason: Option<String>,
    /// git: suppress git's feedback messages.
    #[arg(short, long, help_heading = "git worktree add options")]
    pub quiet: bool,
    /// git: set up the new branch to track COMMIT-ISH.
    #[arg(
        long,
        overrides_with = "no_track",
        help_heading = "git worktree add options"
    )]
    pub track: bool,
    /// git: do not set up tracking.
    #[arg(long, help_heading = "git worktree add options")]
    pub no_track: bool,
    /// git: base a new branch on a same-named remote-tracking branch.
    #[arg(
        long,
        overrides_with = "no_guess_remote",
        help_heading = "git worktree add options"
    )]
    pub guess_remote: bool,
    /// git: do not guess a remote branch.
    #[arg(long, help_heading = "git worktree add options")]
    pub no_guess_remote: bool,
    /// git: create the worktree with an empty, unborn branch (named by -b, else after PATH).
    #[arg(long, conflicts_with_all = ["detach", "commit_ish"], help_heading = "git worktree add options")]
    pub orphan: bool,
    /// Ask for a specific port (SERVICE=PORT) or the automatic choice (SERVICE=auto); repeatable.
    #[arg(long = "port", value_name = "SERVICE=PORT", value_parser = parse_port_arg)]
    pub ports: Vec<PortArg>,
    /// Do not render templates (`.env`) after allocating.
    #[arg(long)]
    pub no_render: bool,
    /// Print JSON; its shape: `git worktree-ports --print-schema add`.
    #[arg(long)]
    pub json: bool,
    /// The same, as `git worktree add` arguments plus ours (filled in by [`Cli::try_parse_args`]).
    #[arg(skip)]
    pub options: AddOptions,
}

/// `add`'s arguments, split into git's and ours.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AddOptions {
    /// For `git worktree add`, in order.
    pub git_args: Vec<String>,
    /// --port values.
    pub ports: Vec<PortArg>,
    /// --no-render.
    pub no_render: bool,
    /// --json.
    pub json: bool,
    /// The new worktree's path (git's first positional argument).
    pub path: Option<String>,
    /// The branch `-b` creates, if any.
    pub new_branch: Option<String>,
    /// The branch `-B` creates or resets, if any.
    pub reset_branch: Option<String>,
}

impl AddOptions {
    /// `git worktree add`'s argument list from the typed options: options first, then `--`
    /// (so a path that starts with `-` stays a path), the path and the commit-ish.
    pub fn from_args(a: &AddArgs) -> AddOptions {
        let mut git: Vec<String> = Vec::new();
        for _ in 0..a.force {
            git.push("--force".into());
        }
        let flags = [
            (a.detach, "--detach"),
            (a.no_checkout, "--no-checkout"),
            (a.lock, "--lock"),
            (a.quiet, "--quiet"),
            (a.track, "--track"),
            (a.no_track, "--no-track"),
            (a.guess_remote, "--guess-remote"),
            (a.no_guess_remote, "--no-guess-remote"),
            (a.orphan, "--orphan"),
        ];
        git.extend(
            flags
                .iter()
                .filter(|(on, _)| *on)
                .map(|(_, f)| f.to_string()),
        );
        if let Some(r) = &a.reason {
            git.push(format!("--reason={r}"));
        }
        if let Some(b) = &a.new_branch {
            git.extend(["-b".to_string(), b.clone()]);
        }
        if let Some(b) = &a.reset_branch {
            git.extend(["-B".to_string(), b.clone()]);
        }
        git.push("--".into());
        git.push(a.path.clone());
        git.extend(a.commit_ish.clone());
        AddOptions {
            git_args: git,
            ports: a.ports.clone(),
            no_render: a.no_render,
            json: a.json,
            path: Some(a.path.clone()),
            new_branch: a.new_branch.clone(),
            reset_branch: a.reset_branch.clone(),
        }
    }
}

/// `remove` arguments.
#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// Worktree to remove (git name or path).
    pub worktree: String,
    /// Remove it even with changes or untracked files (git worktree remove --force).
    #[arg(short, long)]
    pub force: bool,
    /// Print JSON; its shape: `git worktree-ports --print-schema remove`.
    #[arg(long)]
    pub json: bool,
}

/// `render` arguments.
#[derive(Debug, Args)]
pub struct RenderArgs {
    /// Worktree (git name, `main`, or path); default: the current one.
    #[arg(short, long, value_name = "NAME|PATH", conflicts_with = "all")]
    pub worktree: Option<String>,
    /// Render every worktree that has ports.
    #[arg(long)]
    pub all: bool,
    /// Overwrite files the tool did not write, or that were edited, or that git tracks.
    #[arg(long)]
    pub force: bool,
    /// Print JSON; its shape: `git worktree-ports --print-schema render`.
    #[arg(long)]
    pub json: bool,
}

/// Output format of `env`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EnvFormat {
    /// WEB_PORT=8081
    Dotenv,
    /// export WEB_PORT=8081
    Shell,
    /// {"WEB_PORT": 8081}
    Json,
}

/// `env` arguments.
#[derive(Debug, Args)]
pub struct EnvArgs {
    /// Worktree (git name, `main`, or path); default: the current one.
    #[arg(short, long, value_name = "NAME|PATH")]
    pub worktree: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = EnvFormat::Dotenv)]
    pub format: EnvFormat,
    /// Another repository of this machine (name in `list --all`, or path): the ports of its
    /// worktree named like the current one, else of its main worktree, as NAME_PORT.
    #[arg(long, value_name = "NAME|PATH")]
    pub repo: Option<String>,
}

/// `exec` arguments.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Worktree (git name, `main`, or path); default: the current one.
    #[arg(short, long, value_name = "NAME|PATH")]
    pub worktree: Option<String>,
    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// `init` arguments.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Worktree to write the files into (git name, `main`, or path); default: the current one
    /// (a bare repository has none: name one).
    pub worktree: Option<String>,
}

/// `list` arguments.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Every repository of the machine index, not only this one.
    #[arg(long)]
    pub all: bool,
    /// With --all: one row per port, sorted by port.
    #[arg(long, value_enum, requires = "all")]
    pub sort: Option<ListSort>,
    /// Leave out the LIVE column (whether anything listens on the worktree's ports).
    #[arg(long)]
    pub no_probe: bool,
    /// Print JSON; its shape: `git worktree-ports --print-schema list` / `--print-schema list-all`.
    #[arg(long)]
    pub json: bool,
    /// With --all: `markdown` prints one Markdown table row per port (repository, worktree,
    /// slot, service, port, URL), for a `PORTS.md`; `json` is --json; `table` the default.
    #[arg(long, value_enum, requires = "all", conflicts_with = "sort")]
    pub format: Option<ListFormat>,
}

/// What `list --all` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ListFormat {
    /// The aligned table (the default).
    Table,
    /// A Markdown table, one row per port.
    Markdown,
    /// JSON, as --json.
    Json,
}

/// How `list --all` orders its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ListSort {
    /// One row per port, lowest first.
    Port,
}

/// `get` arguments.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// Service name (web, db, ...).
    pub service: String,
    /// Worktree (git name, `main`, or path); default: the current one. With --repo: a
    /// worktree name of that repository.
    #[arg(short, long, value_name = "NAME|PATH")]
    pub worktree: Option<String>,
    /// Another repository of this machine (its name in `list --all`, or its path): its
    /// worktree of the same name as the current one when it has one, else its main worktree.
    #[arg(long, value_name = "NAME|PATH")]
    pub repo: Option<String>,
    /// Print JSON; its shape: `git worktree-ports --print-schema get`.
    #[arg(long)]
    pub json: bool,
}

/// `proxy` arguments.
#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: ProxyAction,
}

/// `proxy` subcommands.
#[derive(Debug, Subcommand)]
pub enum ProxyAction {
    /// Run the proxy in the foreground (Ctrl-C stops it).
    Run {
        /// The port to listen on, on 127.0.0.1 and ::1 (default: the last one used, else 7355).
        #[arg(long)]
        port: Option<u16>,
    },
    /// Start the proxy in the background (nothing to do if it runs).
    Start {
        /// The port to listen on, on 127.0.0.1 and ::1 (default: the last one used, else 7355).
        #[arg(long)]
        port: Option<u16>,
    },
    /// Stop the background proxy.
    Stop,
    /// Whether it runs, on which port, and its routes.
    Status {
        /// Print JSON; its shape: `git worktree-ports --print-schema proxy-status`.
        #[arg(long)]
        json: bool,
    },
}

/// `hosts` arguments.
#[derive(Debug, Args)]
pub struct HostsArgs {}

/// `doctor` arguments.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Apply the safe fixes (prune, move off a held port, re-render, update the hook, drop
    /// gone repositories from the index); never edits your compose or package files.
    #[arg(long)]
    pub fix: bool,
    /// Print JSON; its shape: `git worktree-ports --print-schema doctor`.
    #[arg(long)]
    pub json: bool,
}

/// `status` arguments.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Worktree (git name, `main`, or path); default: the current one.
    #[arg(short, long, value_name = "NAME|PATH", conflicts_with_all = ["all", "machine"])]
    pub worktree: Option<String>,
    /// Every worktree of the repository.
    #[arg(long, conflicts_with = "machine")]
    pub all: bool,
    /// Every worktree of every repository of the machine index.
    #[arg(long)]
    pub machine: bool,
    /// Print JSON; its shape: `git worktree-ports --print-schema status`.
    #[arg(long)]
    pub json: bool,
}

/// `lease` arguments.
#[derive(Debug, Args)]
pub struct LeaseArgs {
    /// How many ports.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub count: u16,
    /// The pool to lease from (default: $GIT_WORKTREE_PORTS_LEASE_RANGE, else the dynamic
    /// range 40000-49999).
    #[arg(long, value_name = "A-B", value_parser = parse_port_range)]
    pub range: Option<(u16, u16)>,
    /// How long the lease lasts: 90s, 15m, 2h, 1d (default without a command: 1h; with a
    /// command: until it exits).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub ttl: Option<u64>,
    /// Print JSON (without a command); its shape: `git worktree-ports --print-schema lease`.
    #[arg(long)]
    pub json: bool,
    /// Run this command with LEASE_PORT, LEASE_PORTS and LEASE_ID set, and give the ports
    /// back when it exits (its exit code passes through).
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// `8000-8099` -> (8000, 8099).
fn parse_port_range(text: &str) -> Result<(u16, u16), String> {
    let bad = || format!("{text:?} is not a port range such as 40000-49999");
    let (a, b) = text.split_once('-').ok_or_else(bad)?;
    let a: u16 = a.trim().parse().map_err(|_| bad())?;
    let b: u16 = b.trim().parse().map_err(|_| bad())?;
    if a < 1024 || a > b {
        return Err(format!(
            "{text:?}: write the lower port first, both in 1024-65535"
        ));
    }
    Ok((a, b))
}

/// `90`, `90s`, `15m`, `2h`, `1d` -> seconds (at least 1).
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 90s, 15m, 2h or 1d"))?;
    let unit = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("{text:?}: the unit is s, m, h or d")),
    };
    // A hundred years is "hold it": longer ones are refused rather than left to wrap into
    // a past expiry (18446744073709551615s once did, and the port was leased again at once).
    const MAX: u64 = 100 * 365 * 86400;
    match n.checked_mul(unit) {
        Some(secs @ 1..=MAX) => Ok(secs),
        _ => Err(format!("{text:?}: a duration of 1s to 100 years (36500d)")),
    }
}

/// `release` arguments.
#[derive(Debug, Args)]
pub struct ReleaseArgs {
    /// Worktree (git name, `main`, or path); default: the current one.
    #[arg(conflicts_with = "lease")]
    pub worktree: Option<String>,
    /// Give back the ports of this lease (`lease` printed its id); works anywhere.
    #[arg(long, value_name = "ID", conflicts_with = "services")]
    pub lease: Option<String>,
    /// Release only this service; repeatable. Default: every service of the worktree.
    #[arg(long = "service", value_name = "SERVICE")]
    pub services: Vec<String>,
    /// Print JSON; its shape: `git worktree-ports --print-schema release` / `--print-schema release-lease`.
    #[arg(long)]
    pub json: bool,
}

/// `prune` arguments.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Prune every repository of the machine index, and drop the index entries of
    /// repositories that are gone.
    #[arg(long)]
    pub all: bool,
    /// Also list processes still running in deleted worktrees (pid, command, ports).
    #[arg(long)]
    pub reap: bool,
    /// With --reap: stop them (SIGTERM, then SIGKILL after a grace period).
    #[arg(long, requires = "reap")]
    pub yes: bool,
    /// Show what would be pruned; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print JSON; its shape: `git worktree-ports --print-schema prune`.
    #[arg(long)]
    pub json: bool,
}

/// `suggest` arguments.
#[derive(Debug, Args)]
pub struct SuggestArgs {
    /// Only this service (default: every service of the worktree's config).
    pub service: Option<String>,
    /// How many suggestions: the next one, then alternatives.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=100))]
    pub count: u16,
    /// Print JSON; its shape: `git worktree-ports --print-schema suggest`.
    #[arg(long)]
    pub json: bool,
}

/// `check` arguments.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Ports to check.
    #[arg(required = true, value_name = "PORT")]
    pub ports: Vec<u32>,
    /// Print JSON; its shape: `git worktree-ports --print-schema check`.
    #[arg(long)]
    pub json: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only the commands that serve until stopped keep malloc's defaults (lib::run).
    #[test]
    fn only_proxy_run_and_mcp_serve() {
        let serves = |args: &[&str]| {
            let cli = Cli::try_parse_args(
                std::iter::once("git-worktree-ports").chain(args.iter().copied()),
            )
            .unwrap();
            cli.command.unwrap().serves()
        };
        assert!(serves(&["proxy", "run"]));
        assert!(serves(&["mcp"]));
        for args in [
            &["proxy", "start"][..],
            &["proxy", "status"],
            &["allocate"],
            &["get", "web"],
            &["lease", "--", "true"],
        ] {
            assert!(!serves(args), "{args:?}");
        }
    }

    /// Issue 26, item 6: `--ttl 18446744073709551615s` was accepted and wrapped to a past
    /// expiry. Durations past a hundred years are refused.
    #[test]
    fn issue26_6_durations_that_overflow_are_refused() {
        assert_eq!(parse_duration("90s"), Ok(90));
        assert_eq!(parse_duration("2h"), Ok(7200));
        assert_eq!(parse_duration("36500d"), Ok(36500 * 86400));
        for bad in [
            "0s",
            "36501d",
            "18446744073709551615s",
            "300000000000000000d",
            "1y",
            "",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    fn add(args: &[&str]) -> Result<AddOptions, clap::Error> {
        let cli = Cli::try_parse_args(["git-worktree-ports", "add"].iter().chain(args))?;
        let Some(Command::Add(a)) = cli.command else {
            panic!("not add")
        };
        Ok(a.0.options)
    }

    #[test]
    fn add_options_are_typed_and_become_git_arguments() {
        let o = add(&[
            "-b",
            "feat",
            "--port",
            "web=8090",
            "../x",
            "--json",
            "origin/main",
            "--no-render",
            "--port=db=auto",
            "--lock",
            "--reason",
            "--json",
        ])
        .unwrap();
        assert_eq!(
            o.git_args,
            [
                "--lock",
                "--reason=--json",
                "-b",
                "feat",
                "--",
                "../x",
                "origin/main"
            ]
        );
        assert_eq!(o.path.as_deref(), Some("../x"));
        assert_eq!(o.new_branch.as_deref(), Some("feat"));
        assert!(o.json && o.no_render);
        assert_eq!(o.ports.len(), 2);

        // Regression (issue 15, item 10): git's attached forms were not recognised, so the
        // branch -bNAME created was left behind by a rollback.
        let o = add(&["-bfeat", "../x"]).unwrap();
        assert_eq!(
            (o.new_branch.as_deref(), o.path.as_deref()),
            (Some("feat"), Some("../x"))
        );
        assert_eq!(
            add(&["-B", "feat", "../x"])
                .unwrap()
                .reset_branch
                .as_deref(),
            Some("feat")
        );
        assert_eq!(
            add(&["-Bfeat", "../x"]).unwrap().reset_branch.as_deref(),
            Some("feat")
        );
        assert_eq!(
            add(&["-ff", "-q", "../x"]).unwrap().git_args,
            ["--force", "--force", "--quiet", "--", "../x"]
        );

        assert_eq!(
            add(&["--", "--odd-path"]).unwrap().path.as_deref(),
            Some("--odd-path")
        );
        for bad in [
            &["-b", "x"][..],
            &["x", "--port"],
            &["x", "--port=web"],
            &["x", "--no-such-git-flag"],
            &["-b", "a", "-B", "b", "x"],
            &["--reason", "r", "x"],
        ] {
            let err = add(bad).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad:?}: {err}");
        }
    }

    /// Regression (issue 14): `add`'s own options were parsed three times, and a bad one
    /// surfaced as GIT_FAILED from the command instead of a usage error.
    #[test]
    fn add_options_are_parsed_once_into_typed_values_and_bad_ones_are_usage_errors() {
        let cli = Cli::try_parse_args([
            "git-worktree-ports",
            "add",
            "../x",
            "--port",
            "web=8090",
            "--json",
        ])
        .unwrap();
        let Some(Command::Add(a)) = &cli.command else {
            panic!("not add")
        };
        assert_eq!(a.options.path.as_deref(), Some("../x"));
        assert_eq!(a.options.ports[0].want, PortValue::Pin(8090));
        assert!(cli.json());
        let err = Cli::try_parse_args(["git-worktree-ports", "add", "../x", "--port", "web"])
            .unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn port_args_parse() {
        assert_eq!(
            parse_port_arg("web=8081").unwrap(),
            PortArg {
                service: "web".into(),
                want: PortValue::Pin(8081)
            }
        );
        assert_eq!(parse_port_arg("db=auto").unwrap().want, PortValue::Auto);
        assert_eq!(
            parse_port_arg("db=70000").unwrap().want,
            PortValue::Pin(70000)
        );
        assert!(parse_port_arg("web").is_err());
        assert!(parse_port_arg("=80").is_err());
        assert!(parse_port_arg("web=eighty").is_err());
    }
}
