//! `git worktree-ports mcp`: the Model Context Protocol on stdin/stdout (the official Rust
//! SDK, `rmcp`, on the proxy's tokio), for coding agents.
//!
//! The agents' island: a tool call is the CLI's own command run in the directory the call
//! names ([`tools`]), its typed `--json` answer returned as `structuredContent` (the
//! tool's `outputSchema` is that answer's `--print-schema`), its warnings in the text. A
//! failure is a result with `isError: true` carrying the CLI's error object (stable code and
//! message); input that does not fit a tool's schema is a JSON-RPC error.
//!
//! Calls run one at a time: the working directory is the process's, and each call sets it.
//! The protocol keeps private copies of stdin and stdout; fd 0 and fd 1 point at /dev/null
//! and stderr before anything runs, so no child process or stray print can corrupt it.

pub mod tools;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ErrorData,
    Implementation, ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig,
    ToolAnnotations,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::{ServerHandler, ServiceExt};

use crate::cli::{Cli, McpArgs};
use crate::commands::{self, Report};
use crate::model::error::{self, Code, Error};

use tools::{Effect, Plan, Tool};

/// What the server tells a client about itself when it connects.
const INSTRUCTIONS: &str = "Every git worktree on this machine gets its own set of service ports (web, db, ...), which no other worktree and no running process holds. Before starting a server in a worktree, ask for its port (get_port) or its environment (env) and use it; never pick a port yourself. For a test run's or one-off server's ports, take a lease. Every tool takes the path of the repository or worktree it acts on.";

/// Serve MCP on stdin/stdout until the client closes stdin.
pub fn serve(_args: &McpArgs) -> anyhow::Result<Report> {
    // Each call names its repository by path: an inherited GIT_DIR must not answer instead.
    crate::sys::git::forget_repository_environment();
    // A server outlives any file it reads: never mapped (fsio::never_map).
    crate::sys::fsio::never_map();
    let (input, output) = crate::sys::stdio::take_for_protocol()?;
    let start = std::env::current_dir()?;
    let server = Server {
        state: Arc::new(State {
            start,
            turn: Mutex::new(<Cli as clap::CommandFactory>::command()),
        }),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(4)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let transport = (
            tokio::fs::File::from_std(input),
            tokio::fs::File::from_std(output),
        );
        let running = server
            .serve(transport)
            .await
            .map_err(|e| anyhow::anyhow!("the MCP client did not initialize: {e}"))?;
        running.waiting().await?;
        anyhow::Ok(())
    })?;
    Ok(Report::ok(String::new()))
}

/// The server: stateless between calls but for where it started.
#[derive(Clone)]
struct Server {
    state: Arc<State>,
}

struct State {
    /// The directory the server started in: relative paths are relative to it.
    start: PathBuf,
    /// Held while a call runs (it sets the process's working directory); the command line
    /// parser, built once.
    turn: Mutex<clap::Command>,
}

impl ServerHandler for Server {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(
                "git-worktree-ports",
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions(INSTRUCTIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(
            tools::TOOLS.iter().map(definition).collect(),
        ))
    }

    fn get_tool(&self, name: &str) -> Option<rmcp::model::Tool> {
        tools::find(name).map(definition)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let Some(tool) = tools::find(&request.name) else {
            return Err(ErrorData::invalid_params(
                format!(
                    "no tool {:?}; the tools are: {}",
                    request.name,
                    (tools::TOOLS.iter().map(|t| t.name))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                None,
            ));
        };
        let input = request
            .arguments
            .map_or(serde_json::Value::Null, serde_json::Value::Object);
        let plan = (tool.plan)(input).map_err(|e| {
            ErrorData::invalid_params(format!("arguments of {}: {e}", tool.name), None)
        })?;
        let state = Arc::clone(&self.state);
        let result = tokio::task::spawn_blocking(move || state.call(plan))
            .await
            .unwrap_or_else(|e| {
                // A panic in a command: the call fails, the server goes on.
                failure(&Error::new(
                    Code::GitFailed,
                    format!("internal error in {}: {e}", tool.name),
                ))
            });
        Ok(result.into())
    }
}

impl State {
    /// Run one call: in its directory, under the turn, warnings collected.
    fn call(&self, plan: Plan) -> CallToolResult {
        let mut parser = self.turn.lock().unwrap_or_else(|e| e.into_inner());
        let dir = match &plan.dir {
            Some(d) => self.start.join(d),
            None => self.start.clone(),
        };
        if let Err(e) = enter(&dir) {
            return failure(&e);
        }
        let argv = std::iter::once("git-worktree-ports".to_string()).chain(plan.argv);
        let cli = match Cli::try_parse_with(&mut parser, argv) {
            Ok(cli) => cli,
            Err(e) => return failure(&usage(&e)),
        };
        let command = cli.command.as_ref().expect("every plan names a command");
        let (outcome, warnings) = crate::output::warn::capture(|| commands::run(command));
        match outcome {
            Ok(report) => answer(&report, warnings),
            Err(e) => {
                let mut r = failure(&error::classify(&e));
                r.content.extend(notes(warnings));
                r
            }
        }
    }
}

/// Make `dir` the working directory; a path that is no directory is the caller's error.
fn enter(dir: &Path) -> Result<(), Error> {
    std::env::set_current_dir(dir).map_err(|e| {
        Error::new(
            Code::NotARepository,
            format!(
                "{} is no directory here ({e}); pass the path of a repository or worktree",
                dir.display()
            ),
        )
    })
}

/// A value the command line's parser refused (`--ttl 5x`, `--count 0`): the message clap
/// would print, as the CLI's USAGE_ERROR.
fn usage(e: &clap::Error) -> Error {
    Error::new(Code::UsageError, commands::usage_message(e))
}

/// A command's answer: its JSON as `structuredContent` and as text, then its warnings.
fn answer(report: &Report, warnings: Vec<String>) -> CallToolResult {
    match serde_json::from_str::<serde_json::Value>(&report.stdout) {
        Ok(value) => {
            let mut r = CallToolResult::structured(value);
            r.content.extend(notes(warnings));
            r
        }
        Err(e) => failure(&Error::new(
            Code::GitFailed,
            format!("internal error: the answer is not JSON ({e})"),
        )),
    }
}

/// The CLI's error object (`{"success": false, "error": CODE, "message", ...}`) as an
/// error result; its text is `CODE: message`.
fn failure(e: &Error) -> CallToolResult {
    let value = serde_json::to_value(e.to_json()).expect("errors serialise");
    let mut r = CallToolResult::structured_error(value);
    r.content = vec![ContentBlock::text(format!("{}: {}", e.code.as_str(), e))];
    r
}

/// Warnings as one text block.
fn notes(warnings: Vec<String>) -> Option<ContentBlock> {
    (!warnings.is_empty()).then(|| ContentBlock::text(warnings.join("\n")))
}

/// A tool as `tools/list` describes it.
fn definition(t: &Tool) -> rmcp::model::Tool {
    let object = |schema: schemars::Schema| -> Arc<serde_json::Map<String, serde_json::Value>> {
        match schema.to_value() {
            serde_json::Value::Object(m) => Arc::new(m),
            _ => Arc::new(Default::default()),
        }
    };
    let annotations = ToolAnnotations::with_title(t.title)
        .read_only(t.effect == Effect::Reads)
        .destructive(t.effect == Effect::Destroys)
        .idempotent(t.idempotent)
        .open_world(false);
    rmcp::model::Tool::new(t.name, t.description, object((t.input)()))
        .with_title(t.title)
        .with_raw_output_schema(object(commands::schema::of(t.output)))
        .with_annotations(annotations)
}
