//! The domain error: a stable code (what scripts and tests match on), a one-line message that
//! names the thing and the way out, optional details and suggested ports.
//!
//! Commands return `anyhow::Result`; a failure that carries a [`Error`] keeps its code, any other
//! failure (an I/O error with context) is reported as `IO_ERROR`. Exit code 1 either way.

use std::fmt;

use serde_json::{Value, json};

/// Stable error codes, printed by `--json` failures as `"error": "<CODE>"` (the README's error
/// table is checked against this list).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Code {
    /// The port is held by a process on this machine.
    PortInUse,
    /// The port is registered to another worktree (or another service).
    PortAllocated,
    /// The port is inside the config's `reserved` list.
    SystemReserved,
    /// The port is outside 1024-65535.
    InvalidPort,
    /// No free port is left in a service's range.
    RangeExhausted,
    /// `--port` or `get` named a service the config does not have.
    UnknownService,
    /// No worktree matches the given name or path, or its directory is gone.
    WorktreeNotFound,
    /// The worktree exists but has no ports allocated (`get`).
    NotAllocated,
    /// A bare repository's git dir: there is no current worktree to act on.
    BareRepository,
    /// The main worktree cannot be the target (`remove`).
    MainWorktree,
    /// The hooks directory holds both a hook and the kept previous one.
    HookConflict,
    /// `exec` could not start the command.
    ExecFailed,
    /// A worktree's hostname (from the config's `hostname` template) is another's already.
    HostnameTaken,
    /// The current directory is not inside a git repository.
    NotARepository,
    /// `.worktree-ports/config.toml` cannot be used.
    ConfigInvalid,
    /// `ports.json` and its backup are both unusable.
    RegistryCorrupt,
    /// Another process kept the registry lock past the timeout.
    LockTimeout,
    /// A template failed to render.
    TemplateError,
    /// A git command or libgit2 failed.
    GitFailed,
    /// Anything else (an I/O error reading or writing a file).
    IoError,
    /// The command line is wrong (exit code 2): an unknown option, a bad value.
    UsageError,
}

impl Code {
    /// The stable code string.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::PortInUse => "PORT_IN_USE",
            Code::PortAllocated => "PORT_ALLOCATED",
            Code::SystemReserved => "SYSTEM_RESERVED",
            Code::InvalidPort => "INVALID_PORT",
            Code::RangeExhausted => "RANGE_EXHAUSTED",
            Code::UnknownService => "UNKNOWN_SERVICE",
            Code::WorktreeNotFound => "WORKTREE_NOT_FOUND",
            Code::NotAllocated => "NOT_ALLOCATED",
            Code::BareRepository => "BARE_REPOSITORY",
            Code::MainWorktree => "MAIN_WORKTREE",
            Code::HookConflict => "HOOK_CONFLICT",
            Code::ExecFailed => "EXEC_FAILED",
            Code::HostnameTaken => "HOSTNAME_TAKEN",
            Code::NotARepository => "NOT_A_REPOSITORY",
            Code::ConfigInvalid => "CONFIG_INVALID",
            Code::RegistryCorrupt => "REGISTRY_CORRUPT",
            Code::LockTimeout => "LOCK_TIMEOUT",
            Code::TemplateError => "TEMPLATE_ERROR",
            Code::GitFailed => "GIT_FAILED",
            Code::IoError => "IO_ERROR",
            Code::UsageError => "USAGE_ERROR",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure the tool reports to the user.
#[derive(Debug, Clone)]
pub struct Error {
    /// Stable code.
    pub code: Code,
    /// One line: what went wrong and what to do next.
    pub message: String,
    /// Structured facts for `--json` (port, worktree, pid...).
    pub details: Value,
    /// Free ports to try instead, nearest first (may be empty).
    pub suggestions: Vec<u16>,
}

impl Error {
    /// An error with a code and a message, no details.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Error {
            code,
            message: message.into(),
            details: json!({}),
            suggestions: Vec::new(),
        }
    }

    /// Attach structured details, typed.
    pub fn with(mut self, details: Details) -> Self {
        self.details = serde_json::to_value(details).expect("details serialize");
        self
    }

    /// Attach suggested ports.
    pub fn with_suggestions(mut self, suggestions: Vec<u16>) -> Self {
        self.suggestions = suggestions;
        self
    }

    /// The JSON error object (`--print-schema error`).
    pub fn to_json(&self) -> ErrorAnswer {
        ErrorAnswer {
            success: false,
            error: self.code,
            message: self.message.clone(),
            details: self.details.clone(),
            suggestions: self.suggestions.clone(),
        }
    }
}

/// The `details` of an error: which shape depends on the code (each variant says for which).
/// Built typed where the error is made ([`Error::with`]); printed as the object it
/// serializes to, with no key this type does not document.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum Details {
    /// PORT_ALLOCATED: the port is another worktree's (or another service's).
    PortAllocated(PortAllocated),
    /// PORT_IN_USE: a process holds the port.
    PortInUse(PortInUse),
    /// SYSTEM_RESERVED: the config's `reserved` list holds the port.
    Reserved(Reserved),
    /// INVALID_PORT, and RANGE_EXHAUSTED for a move inside a block: a service and a port.
    ServicePort(ServicePort),
    /// UNKNOWN_SERVICE.
    UnknownService(UnknownService),
    /// NOT_ALLOCATED: the worktree (of another repository, with `--repo`) has no ports.
    NotAllocated(NotAllocated),
    /// PORT_IN_USE for the proxy's own port.
    ProxyPort(ProxyPort),
    /// CONFIG_INVALID: the config file.
    Config(ConfigFile),
    /// RANGE_EXHAUSTED: no free port in a service's range.
    RangeFull(RangeFull),
    /// RANGE_EXHAUSTED: no free block for a block-strategy repository.
    NoBlock(NoBlock),
    /// RANGE_EXHAUSTED: no free slot in the repository's block.
    NoSlot(NoSlot),
    /// RANGE_EXHAUSTED: not enough free ports for a lease.
    LeasePool(LeasePool),
    /// NOT_ALLOCATED: a lease id `release --lease` does not know.
    Lease(LeaseId),
    /// WORKTREE_NOT_FOUND: no worktree by that name or path.
    NoSuchWorktree(NoSuchWorktree),
    /// WORKTREE_NOT_FOUND: the worktree's directory is gone.
    WorktreeGone(WorktreeGone),
    /// HOSTNAME_TAKEN.
    Hostname(HostnameTaken),
    /// TEMPLATE_ERROR: files a render refused to overwrite.
    Refused(Refused),
    /// TEMPLATE_ERROR: the template (and line) that failed.
    Template(TemplateAt),
    /// REGISTRY_CORRUPT: `ports.json` and its backup are unusable.
    Registry(RegistryDamage),
    /// REGISTRY_CORRUPT: `ports.json` is from a newer version.
    Newer(NewerRegistry),
    /// LOCK_TIMEOUT.
    Lock(LockTimeout),
    /// GIT_FAILED: libgit2's message when it could not open the repository.
    Libgit2(Libgit2),
    /// Every other error: no details.
    None(NoDetails),
}

/// A port of a service of the worktree allocating, and the range it was to come from.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PortAllocated {
    /// The service asking.
    pub service: String,
    /// The port asked for.
    pub port: u16,
    /// The service's range (or the block's slot).
    pub range: [u16; 2],
    /// The worktree that holds it (a lease id for a lease; empty for a block).
    pub worktree: String,
    /// That worktree's service holding it.
    pub owner_service: String,
    /// Another repository's path, when the holder is there.
    pub repository: Option<String>,
}

/// A port a process holds.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PortInUse {
    /// The service asking.
    pub service: String,
    /// The port asked for.
    pub port: u16,
    /// The service's range.
    pub range: [u16; 2],
    /// `tcp`, `udp` or `both`: what must be free.
    pub protocol: String,
    /// The holder's pid, when it can be read.
    pub pid: Option<u32>,
    /// The holder's command name.
    pub command: Option<String>,
    /// The socket's owner.
    pub uid: Option<u32>,
}

/// A reserved port.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Reserved {
    /// The service asking.
    pub service: String,
    /// The port asked for.
    pub port: u16,
    /// The service's range.
    pub range: [u16; 2],
    /// The named range (`reserved = ["system"]`) that holds it, when it is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reserved_range: Option<String>,
}

/// A service and a port.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServicePort {
    /// The service.
    pub service: String,
    /// The port (as given: it may be out of range).
    pub port: u32,
}

/// A service the config (or the worktree) does not have.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UnknownService {
    /// The name given.
    pub service: String,
    /// The services there are.
    pub services: Vec<String>,
    /// The worktree asked about, when one was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worktree: Option<String>,
}

/// A worktree without ports.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NotAllocated {
    /// The worktree.
    pub worktree: String,
    /// The service asked for, with `--repo`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The repository asked (`--repo`), as given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
}

/// The proxy's port.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProxyPort {
    /// The port it could not listen on.
    pub port: u16,
}

/// A config file.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Its path.
    pub file: String,
}

/// A full range.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RangeFull {
    /// The service.
    pub service: String,
    /// Its range.
    pub range: [u16; 2],
    /// Ports of it allocated to worktrees (or leased, or claimed).
    pub allocated: u32,
    /// Ports of it reserved.
    pub reserved: u32,
    /// Ports of it processes hold.
    pub in_use: u32,
}

/// No free block.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoBlock {
    /// `[block] base`.
    pub base: u16,
    /// `[block] span`.
    pub span: u16,
    /// Blocks other repositories claimed.
    pub claimed: u32,
    /// Blocks where other repositories hold ports.
    pub used: u32,
}

/// No free slot.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoSlot {
    /// The block: first and last port.
    pub block: [u16; 2],
    /// Slots in it.
    pub slots: u32,
    /// Ports per slot.
    pub size: u16,
    /// The worktrees holding slots.
    pub worktrees: Vec<SlotHolder>,
    /// The free slots that could not be used, and why.
    pub skipped: Vec<SlotSkipped>,
}

/// A worktree and its slot.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SlotHolder {
    /// The worktree.
    pub worktree: String,
    /// Its slot.
    pub slot: u32,
}

/// A slot that could not be used.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SlotSkipped {
    /// The slot.
    pub slot: u32,
    /// The first port that stopped it.
    pub port: u16,
    /// Why.
    pub reason: String,
}

/// Too few free ports for a lease.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LeasePool {
    /// The pool.
    pub range: [u16; 2],
    /// Ports asked for.
    pub count: usize,
    /// Ports free there.
    pub free: usize,
}

/// A lease id.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LeaseId {
    /// The id given.
    pub lease: String,
}

/// A worktree name or path that names none.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoSuchWorktree {
    /// What was given.
    pub worktree: String,
    /// The worktrees there are.
    pub worktrees: Vec<String>,
}

/// A worktree whose directory is gone.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorktreeGone {
    /// Its name.
    pub worktree: String,
    /// Where it was.
    pub path: String,
}

/// A hostname another worktree (or a route) has.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HostnameTaken {
    /// The hostname.
    pub hostname: String,
    /// Who has it: a worktree, or `main` for a service route.
    pub holder: String,
}

/// Files a render refused to touch.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Refused {
    /// One line per file: which, and why.
    pub refused: Vec<String>,
}

/// Where a template failed.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateAt {
    /// The template (or templates directory).
    pub template: String,
    /// The line, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
}

/// A damaged registry.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegistryDamage {
    /// `ports.json`.
    pub file: String,
    /// What is wrong with it.
    pub problem: String,
    /// Its backup.
    pub backup: String,
    /// What is wrong with the backup.
    pub backup_problem: String,
}

/// A registry from a newer version.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewerRegistry {
    /// `ports.json`.
    pub file: String,
    /// Its version.
    pub version: u64,
}

/// A lock held too long.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LockTimeout {
    /// The lock file.
    pub lock: String,
    /// How long we waited.
    pub timeout_secs: f64,
}

/// libgit2's message.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Libgit2 {
    /// What libgit2 said.
    pub libgit2: String,
}

/// No details: `{}`.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoDetails {}

/// A failure with `--json`, on stdout (the exit code is 1).
#[derive(Debug, serde::Serialize, schemars::JsonSchema)]
pub struct ErrorAnswer {
    /// Always false.
    pub success: bool,
    /// The stable code (the README's error table).
    pub error: Code,
    /// What went wrong and what to do, as the text form says it.
    pub message: String,
    /// Facts for scripts; which shape depends on the code (each shape says for which).
    #[schemars(with = "Details")]
    pub details: Value,
    /// Free ports to try instead, when the error is about a port.
    pub suggestions: Vec<u16>,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if !self.suggestions.is_empty() {
            let list: Vec<String> = self.suggestions.iter().map(u16::to_string).collect();
            write!(f, " (free instead: {})", list.join(", "))?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

/// The domain error inside an `anyhow::Error`, or an `IO_ERROR` built from its chain.
pub fn classify(err: &anyhow::Error) -> Error {
    match err.downcast_ref::<Error>() {
        Some(e) => e.clone(),
        None => Error::new(Code::IoError, format!("{err:#}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape_matches_the_seed() {
        let e = Error::new(Code::PortAllocated, "port 8081 is allocated to feature")
            .with(Details::ProxyPort(ProxyPort { port: 8081 }))
            .with_suggestions(vec![8082, 8083, 8084]);
        let v = serde_json::to_value(e.to_json()).unwrap();
        assert_eq!(v["success"], false);
        assert_eq!(v["error"], "PORT_ALLOCATED");
        assert_eq!(v["details"]["port"], 8081);
        assert_eq!(v["suggestions"], json!([8082, 8083, 8084]));
        assert_eq!(
            e.to_string(),
            "port 8081 is allocated to feature (free instead: 8082, 8083, 8084)"
        );
    }

    /// Every code the schema lists prints as its serialized name (one spelling per code).
    #[test]
    fn every_code_prints_as_its_schema_names_it() {
        let schema = serde_json::to_value(schemars::schema_for!(Code)).unwrap();
        let names: Vec<&str> = (schema["oneOf"].as_array().unwrap().iter())
            .map(|v| v["const"].as_str().unwrap())
            .collect();
        assert_eq!(names.len(), 21, "{schema:#}");
        for name in names {
            let code: Code = serde_json::from_value(json!(name)).unwrap();
            assert_eq!(code.as_str(), name);
        }
    }

    #[test]
    fn anyhow_context_keeps_the_domain_code() {
        let err = anyhow::Error::from(Error::new(Code::LockTimeout, "timed out"));
        assert_eq!(classify(&err).code, Code::LockTimeout);
        let io = anyhow::anyhow!("disk full").context("could not write x");
        assert_eq!(classify(&io).code, Code::IoError);
        assert_eq!(classify(&io).message, "could not write x: disk full");
    }
}
