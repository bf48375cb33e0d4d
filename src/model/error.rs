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

    /// Attach structured details.
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
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

/// A failure with `--json`, on stdout (the exit code is 1).
#[derive(Debug, serde::Serialize, schemars::JsonSchema)]
pub struct ErrorAnswer {
    /// Always false.
    pub success: bool,
    /// The stable code (the README's error table).
    pub error: Code,
    /// What went wrong and what to do, as the text form says it.
    pub message: String,
    /// Facts for scripts; which keys depends on the code (port, service, worktree, holder...).
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
            .with_details(json!({"port": 8081}))
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
