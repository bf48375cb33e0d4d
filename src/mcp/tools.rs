//! The MCP tools: for each, its input (a typed struct: its JSON Schema is the tool's
//! `inputSchema`), the answer it gives (a `--print-schema` name: the tool's `outputSchema`),
//! its hints, and the command line it stands for.
//!
//! A tool call is the CLI run in the directory the call names: its input becomes an argument
//! list (never shell text) that the CLI's own parser reads, so every check, default and
//! message is the command line's. Values go in `--option=value` form and positionals after
//! `--`, so no value is ever taken for an option.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::cli::SchemaName;

/// What a tool may do to the machine (its MCP annotations).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Reads only (`readOnlyHint`).
    Reads,
    /// Takes ports or makes files, never frees or deletes anything.
    Adds,
    /// Frees ports or deletes a worktree (`destructiveHint`).
    Destroys,
}

/// One tool.
pub struct Tool {
    /// Its name (`get_port`).
    pub name: &'static str,
    /// A title for people.
    pub title: &'static str,
    /// What it does, for the agent choosing it.
    pub description: &'static str,
    /// Its hints.
    pub effect: Effect,
    /// Calling it twice with the same input does nothing more (`idempotentHint`).
    pub idempotent: bool,
    /// Its answer's schema.
    pub output: SchemaName,
    /// Its input's JSON Schema.
    pub input: fn() -> schemars::Schema,
    /// Its input -> the command line it stands for; Err: input that does not fit the schema.
    pub plan: fn(serde_json::Value) -> Result<Plan, String>,
}

/// A call, ready to run: where, and the command line (without the program name).
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    /// The directory to run in (relative: to the server's own); None: the server's own.
    pub dir: Option<String>,
    /// The arguments.
    pub argv: Vec<String>,
}

/// The tools, in the order `tools/list` gives them.
pub const TOOLS: &[Tool] = &[
    Tool {
        name: "add_worktree",
        title: "Create a worktree with its ports",
        description: "Create a git worktree (`git worktree add`) and give it its own ports on this machine, then render its .env and config files. Use this instead of a plain `git worktree add` when you need the ports at once.",
        effect: Effect::Adds,
        idempotent: false,
        output: SchemaName::Add,
        input: schema::<AddInput>,
        plan: plan::<AddInput>,
    },
    Tool {
        name: "allocate",
        title: "Allocate a worktree's ports",
        description: "Give a worktree its full set of service ports (idempotent: one that has them keeps them), then render its files. `ports` pins services (service -> port or \"auto\"); `move` moves services off ports a foreign process took.",
        effect: Effect::Adds,
        idempotent: true,
        output: SchemaName::Allocate,
        input: schema::<AllocateInput>,
        plan: plan::<AllocateInput>,
    },
    Tool {
        name: "get_port",
        title: "One port of a worktree",
        description: "The port a worktree holds for one service (web, db, ...). Read this before starting a server in a worktree; never guess a port. Writes nothing.",
        effect: Effect::Reads,
        idempotent: true,
        output: SchemaName::Get,
        input: schema::<GetInput>,
        plan: plan::<GetInput>,
    },
    Tool {
        name: "env",
        title: "A worktree's environment",
        description: "The variables to start a worktree's servers with (WEB_PORT, DB_PORT, WORKTREE_SLOT, URLs), allocating the worktree's ports first if it has none.",
        effect: Effect::Adds,
        idempotent: true,
        output: SchemaName::Env,
        input: schema::<EnvInput>,
        plan: plan::<EnvInput>,
    },
    Tool {
        name: "list",
        title: "A repository's worktrees and ports",
        description: "Every worktree of one repository with its ports, slot, hostname and whether anything listens on them.",
        effect: Effect::Reads,
        idempotent: true,
        output: SchemaName::List,
        input: schema::<ListInput>,
        plan: plan::<ListInput>,
    },
    Tool {
        name: "list_machine",
        title: "Every repository's worktrees and ports",
        description: "Every repository this machine's index knows, its worktrees (main first), their ports, URLs and whether anything listens.",
        effect: Effect::Reads,
        idempotent: true,
        output: SchemaName::ListAll,
        input: schema::<ListMachineInput>,
        plan: plan::<ListMachineInput>,
    },
    Tool {
        name: "status",
        title: "Who listens on a worktree's ports",
        description: "For each service of a worktree (or of every worktree with `all`): its port, whether it is up, and which process listens there (pid, command, whether it is this worktree's).",
        effect: Effect::Reads,
        idempotent: true,
        output: SchemaName::Status,
        input: schema::<StatusInput>,
        plan: plan::<StatusInput>,
    },
    Tool {
        name: "check_ports",
        title: "Whether ports are free",
        description: "For each port: free, allocated to which repository, worktree and service, or held by which process. Writes nothing.",
        effect: Effect::Reads,
        idempotent: true,
        output: SchemaName::Check,
        input: schema::<CheckInput>,
        plan: plan::<CheckInput>,
    },
    Tool {
        name: "suggest",
        title: "The next free ports",
        description: "The ports (or slots) the next allocation would get under the repository's policy, and alternatives. Writes nothing.",
        effect: Effect::Reads,
        idempotent: true,
        output: SchemaName::Suggest,
        input: schema::<SuggestInput>,
        plan: plan::<SuggestInput>,
    },
    Tool {
        name: "lease",
        title: "Lease ports for a while",
        description: "Take free ports for a test run or a one-off server, outside every worktree's set, for `ttl` (default 1h). Give them back with release_lease and the lease's id.",
        effect: Effect::Adds,
        idempotent: false,
        output: SchemaName::Lease,
        input: schema::<LeaseInput>,
        plan: plan::<LeaseInput>,
    },
    Tool {
        name: "release",
        title: "Give back a worktree's ports",
        description: "Give back the ports of a worktree (or only some of its services); they may be handed to another worktree at once.",
        effect: Effect::Destroys,
        idempotent: true,
        output: SchemaName::Release,
        input: schema::<ReleaseInput>,
        plan: plan::<ReleaseInput>,
    },
    Tool {
        name: "release_lease",
        title: "Give back a lease",
        description: "Give back the ports of a lease, by the id `lease` answered.",
        effect: Effect::Destroys,
        idempotent: true,
        output: SchemaName::ReleaseLease,
        input: schema::<ReleaseLeaseInput>,
        plan: plan::<ReleaseLeaseInput>,
    },
    Tool {
        name: "remove_worktree",
        title: "Remove a worktree and free its ports",
        description: "`git worktree remove`, then give its ports back. Refused when the worktree has changes, unless `force`.",
        effect: Effect::Destroys,
        idempotent: false,
        output: SchemaName::Remove,
        input: schema::<RemoveInput>,
        plan: plan::<RemoveInput>,
    },
];

/// The tool called `name`.
pub fn find(name: &str) -> Option<&'static Tool> {
    TOOLS.iter().find(|t| t.name == name)
}

fn schema<T: JsonSchema>() -> schemars::Schema {
    schemars::schema_for!(T)
}

fn plan<T: DeserializeOwned + Into<Plan>>(input: serde_json::Value) -> Result<Plan, String> {
    // A tool without arguments may be called with none at all.
    let input = match input {
        serde_json::Value::Null => serde_json::Value::Object(Default::default()),
        v => v,
    };
    serde_json::from_value::<T>(input)
        .map(Into::into)
        .map_err(|e| e.to_string())
}

/// A pinned port, or the automatic choice.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum PortWant {
    /// This port (validated like `--port web=8081`: 1024-65535, free, not another's).
    Port(u32),
    /// `"auto"`: the automatic choice.
    Auto(Auto),
}

/// The word `auto`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Auto {
    /// The automatic choice.
    Auto,
}

/// `--port=SERVICE=PORT` arguments.
fn port_args(ports: &BTreeMap<String, PortWant>) -> impl Iterator<Item = String> + '_ {
    ports.iter().map(|(s, w)| match w {
        PortWant::Port(p) => format!("--port={s}={p}"),
        PortWant::Auto(_) => format!("--port={s}=auto"),
    })
}

/// `--name=value` when there is a value.
fn opt(name: &str, value: &Option<String>) -> Option<String> {
    value.as_ref().map(|v| format!("--{name}={v}"))
}

/// `--no-render` when the input says `"render": false` (rendering is the default).
fn no_render(render: Option<bool>) -> Option<String> {
    (render == Some(false)).then(|| "--no-render".to_string())
}

fn argv(parts: impl IntoIterator<Item = Option<String>>) -> Vec<String> {
    parts.into_iter().flatten().collect()
}

fn s(text: &str) -> Option<String> {
    Some(text.to_string())
}

/// `add_worktree`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AddInput {
    /// A directory of the repository to add the worktree to (absolute, or relative to the
    /// directory the server was started in).
    pub repository: String,
    /// Where the new worktree goes (relative: to `repository`).
    pub path: String,
    /// A new branch to create for it (`git worktree add -b`); default: one named after the
    /// path's last component. Omit it to check out an existing branch given as `base`.
    pub branch: Option<String>,
    /// The commit, branch or tag to start from (default: HEAD).
    pub base: Option<String>,
    /// Pins: service -> port, or "auto".
    #[serde(default)]
    pub ports: BTreeMap<String, PortWant>,
    /// Render the worktree's templates (.env) after allocating (default: true).
    pub render: Option<bool>,
}

impl From<AddInput> for Plan {
    fn from(i: AddInput) -> Plan {
        let mut argv = argv([s("add"), s("--json"), i.branch.map(|b| format!("-b={b}"))]);
        argv.extend(port_args(&i.ports));
        argv.extend(no_render(i.render));
        argv.extend(["--".to_string(), i.path]);
        argv.extend(i.base);
        Plan {
            dir: Some(i.repository),
            argv,
        }
    }
}

/// `allocate`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AllocateInput {
    /// The worktree's directory, or any directory of its repository with `worktree` set
    /// (absolute, or relative to the directory the server was started in).
    pub path: String,
    /// A worktree of that repository (git name, `main`, or path); default: the one `path`
    /// is in.
    pub worktree: Option<String>,
    /// Pins: service -> port, or "auto". For a worktree that has ports, a pin moves the
    /// service and frees its old port.
    #[serde(default)]
    pub ports: BTreeMap<String, PortWant>,
    /// Services to move to other free ports (off a port a foreign process took).
    #[serde(default, rename = "move")]
    pub moves: Vec<String>,
    /// Render the worktree's templates (.env) after allocating (default: true).
    pub render: Option<bool>,
}

impl From<AllocateInput> for Plan {
    fn from(i: AllocateInput) -> Plan {
        let mut argv = argv([s("allocate"), s("--json")]);
        argv.extend(port_args(&i.ports));
        argv.extend(i.moves.iter().map(|m| format!("--move={m}")));
        argv.extend(no_render(i.render));
        argv.push("--".into());
        argv.extend(i.worktree);
        Plan {
            dir: Some(i.path),
            argv,
        }
    }
}

/// `get_port`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GetInput {
    /// The worktree's directory, or any directory of its repository with `worktree` set
    /// (absolute, or relative to the directory the server was started in).
    pub path: String,
    /// The service (web, db, ...).
    pub service: String,
    /// A worktree of that repository (git name, `main`, or path); default: the one `path`
    /// is in.
    pub worktree: Option<String>,
    /// Another repository of this machine (its name in list_machine, or its path): its
    /// worktree named like this one, else its main worktree.
    pub repository: Option<String>,
}

impl From<GetInput> for Plan {
    fn from(i: GetInput) -> Plan {
        let argv = argv([
            s("get"),
            s("--json"),
            opt("worktree", &i.worktree),
            opt("repo", &i.repository),
            s("--"),
            Some(i.service),
        ]);
        Plan {
            dir: Some(i.path),
            argv,
        }
    }
}

/// `env`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnvInput {
    /// The worktree's directory, or any directory of its repository with `worktree` set
    /// (absolute, or relative to the directory the server was started in).
    pub path: String,
    /// A worktree of that repository (git name, `main`, or path); default: the one `path`
    /// is in.
    pub worktree: Option<String>,
}

impl From<EnvInput> for Plan {
    fn from(i: EnvInput) -> Plan {
        Plan {
            dir: Some(i.path),
            argv: argv([s("env"), s("--format=json"), opt("worktree", &i.worktree)]),
        }
    }
}

/// `list`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListInput {
    /// A directory of the repository (absolute, or relative to the directory the server
    /// was started in).
    pub path: String,
}

impl From<ListInput> for Plan {
    fn from(i: ListInput) -> Plan {
        Plan {
            dir: Some(i.path),
            argv: argv([s("list"), s("--json")]),
        }
    }
}

/// `list_machine`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListMachineInput {
    /// A directory to run in (a repository moved since it was listed is shown where it is
    /// when this is inside it); default: the server's own.
    pub path: Option<String>,
}

impl From<ListMachineInput> for Plan {
    fn from(i: ListMachineInput) -> Plan {
        Plan {
            dir: i.path,
            argv: argv([s("list"), s("--all"), s("--json")]),
        }
    }
}

/// `status`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusInput {
    /// The worktree's directory, or any directory of its repository with `worktree` or
    /// `all` set (absolute, or relative to the directory the server was started in).
    pub path: String,
    /// A worktree of that repository (git name, `main`, or path); default: the one `path`
    /// is in.
    pub worktree: Option<String>,
    /// Every worktree of the repository.
    #[serde(default)]
    pub all: bool,
    /// Every worktree of every repository of the machine.
    #[serde(default)]
    pub machine: bool,
}

impl From<StatusInput> for Plan {
    fn from(i: StatusInput) -> Plan {
        Plan {
            dir: Some(i.path),
            argv: argv([
                s("status"),
                s("--json"),
                opt("worktree", &i.worktree),
                i.all.then(|| "--all".into()),
                i.machine.then(|| "--machine".into()),
            ]),
        }
    }
}

/// `check_ports`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckInput {
    /// The ports to check.
    #[schemars(length(min = 1))]
    pub ports: Vec<u32>,
    /// A directory of a repository (its registry counts even when the machine index does
    /// not list it); default: the server's own.
    pub path: Option<String>,
}

impl From<CheckInput> for Plan {
    fn from(i: CheckInput) -> Plan {
        let mut argv = argv([s("check"), s("--json"), s("--")]);
        argv.extend(i.ports.iter().map(u32::to_string));
        Plan { dir: i.path, argv }
    }
}

/// `suggest`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SuggestInput {
    /// A directory of the repository (absolute, or relative to the directory the server
    /// was started in).
    pub path: String,
    /// Only this service (default: every service of the repository's config).
    pub service: Option<String>,
    /// How many suggestions (1-100, default 3).
    pub count: Option<u16>,
}

impl From<SuggestInput> for Plan {
    fn from(i: SuggestInput) -> Plan {
        let mut argv = argv([
            s("suggest"),
            s("--json"),
            i.count.map(|c| format!("--count={c}")),
            s("--"),
        ]);
        argv.extend(i.service);
        Plan {
            dir: Some(i.path),
            argv,
        }
    }
}

/// `lease`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LeaseInput {
    /// How many ports (1-1000, default 1).
    pub count: Option<u16>,
    /// The pool to lease from, `A-B` (default: $GIT_WORKTREE_PORTS_LEASE_RANGE of the
    /// server, else 40000-49999).
    pub range: Option<String>,
    /// How long the lease lasts: 90s, 15m, 2h, 1d (default 1h).
    pub ttl: Option<String>,
}

impl From<LeaseInput> for Plan {
    fn from(i: LeaseInput) -> Plan {
        Plan {
            dir: None,
            argv: argv([
                s("lease"),
                s("--json"),
                i.count.map(|c| format!("--count={c}")),
                opt("range", &i.range),
                opt("ttl", &i.ttl),
            ]),
        }
    }
}

/// `release`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseInput {
    /// The worktree's directory, or any directory of its repository with `worktree` set
    /// (absolute, or relative to the directory the server was started in).
    pub path: String,
    /// A worktree of that repository (git name, `main`, or path); default: the one `path`
    /// is in.
    pub worktree: Option<String>,
    /// Only these services (default: all of them).
    #[serde(default)]
    pub services: Vec<String>,
}

impl From<ReleaseInput> for Plan {
    fn from(i: ReleaseInput) -> Plan {
        let mut argv = argv([s("release"), s("--json")]);
        argv.extend(i.services.iter().map(|s| format!("--service={s}")));
        argv.push("--".into());
        argv.extend(i.worktree);
        Plan {
            dir: Some(i.path),
            argv,
        }
    }
}

/// `release_lease`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseLeaseInput {
    /// The lease's id, as `lease` answered it.
    pub id: String,
}

impl From<ReleaseLeaseInput> for Plan {
    fn from(i: ReleaseLeaseInput) -> Plan {
        Plan {
            dir: None,
            argv: vec![
                "release".into(),
                "--json".into(),
                format!("--lease={}", i.id),
            ],
        }
    }
}

/// `remove_worktree`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveInput {
    /// A directory of the repository (absolute, or relative to the directory the server
    /// was started in); not the worktree being removed.
    pub path: String,
    /// The worktree to remove (git name or path).
    pub worktree: String,
    /// Remove it even with changes or untracked files.
    #[serde(default)]
    pub force: bool,
}

impl From<RemoveInput> for Plan {
    fn from(i: RemoveInput) -> Plan {
        Plan {
            dir: Some(i.path),
            argv: argv([
                s("remove"),
                s("--json"),
                i.force.then(|| "--force".into()),
                s("--"),
                Some(i.worktree),
            ]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn plan_of(name: &str, input: serde_json::Value) -> Result<Plan, String> {
        (find(name).unwrap().plan)(input)
    }

    /// A value that looks like an option stays a value: options are `--name=value`, and
    /// positionals follow `--`.
    #[test]
    fn values_never_become_options() {
        let p = plan_of(
            "get_port",
            json!({"path": "/r", "service": "--json", "worktree": "--all"}),
        )
        .unwrap();
        assert_eq!(
            p.argv,
            ["get", "--json", "--worktree=--all", "--", "--json"]
        );
        let p = plan_of(
            "add_worktree",
            json!({"repository": "/r", "path": "-x", "branch": "b", "base": "--orphan",
                   "ports": {"web": 8081, "db": "auto"}, "render": false}),
        )
        .unwrap();
        assert_eq!(
            p.argv,
            [
                "add",
                "--json",
                "-b=b",
                "--port=db=auto",
                "--port=web=8081",
                "--no-render",
                "--",
                "-x",
                "--orphan"
            ]
        );
        assert_eq!(p.dir.as_deref(), Some("/r"));
    }

    /// Input that does not fit the schema is refused before anything runs: an unknown
    /// field, a wrong type, a word other than "auto".
    #[test]
    fn input_outside_the_schema_is_refused() {
        for (tool, input) in [
            (
                "get_port",
                json!({"path": "/r", "service": "web", "extra": 1}),
            ),
            ("get_port", json!({"path": 7, "service": "web"})),
            ("allocate", json!({"path": "/r", "ports": {"web": "soon"}})),
            ("check_ports", json!({"ports": "8080"})),
            ("lease", json!({"count": 70000})),
        ] {
            assert!(plan_of(tool, input.clone()).is_err(), "{tool} {input}");
        }
        assert!(plan_of("list_machine", serde_json::Value::Null).is_ok());
    }

    /// Every tool's input schema is an object schema that closes its properties.
    #[test]
    fn every_input_schema_is_a_closed_object() {
        for tool in TOOLS {
            let schema = (tool.input)();
            let obj = schema.as_object().unwrap();
            assert_eq!(obj["type"], "object", "{}", tool.name);
            assert_eq!(obj["additionalProperties"], false, "{}", tool.name);
        }
    }
}
