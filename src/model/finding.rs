//! `doctor`'s vocabulary: every finding's stable code and how much it matters. The README's
//! finding table is checked against this list (`tests/cli/docs.rs`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Something is broken (a template that does not render, a config that does not parse).
    Error,
    /// Something needs attention (exit 1 while one is left).
    Warning,
    /// Worth knowing; never fails `doctor`.
    Info,
}

impl Severity {
    /// The word `doctor` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

/// A finding's stable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum FindingCode {
    /// An entry whose worktree is gone (directory deleted, or git no longer has it).
    GoneAllocation,
    /// A worktree without ports.
    NoAllocation,
    /// A worktree whose config cannot be read.
    ConfigInvalid,
    /// A port held for a service the config no longer has.
    ServiceNotInConfig,
    /// A port outside its service's range (or the repository's block).
    PortOutsideRange,
    /// Rendered files out of date.
    StaleFiles,
    /// A template that does not render.
    RenderFails,
    /// An allocated port that a process outside its worktree listens on.
    PortHeldElsewhere,
    /// An allocated port held by a process left running by a deleted worktree.
    PortHeldByOrphan,
    /// Our hook, from an older version.
    HookOutdated,
    /// No hook of ours.
    HookMissing,
    /// A hook manager owns the hooks directory.
    HookManager,
    /// A machine-index entry whose repository is gone.
    IndexGoneRepository,
    /// A port two owners hold on this machine (two registries, a lease, a claimed block).
    PortShared,
    /// A host port written as a number (compose, package.json, devcontainer).
    LiteralPort,
    /// `ports:` in a compose override file without `!override`.
    ComposeOverrideAppends,
    /// `${VAR}` in a compose file without a default.
    NoFallback,
}

impl FindingCode {
    /// The code as printed (`gone-allocation`).
    pub fn as_str(self) -> &'static str {
        match self {
            FindingCode::GoneAllocation => "gone-allocation",
            FindingCode::NoAllocation => "no-allocation",
            FindingCode::ConfigInvalid => "config-invalid",
            FindingCode::ServiceNotInConfig => "service-not-in-config",
            FindingCode::PortOutsideRange => "port-outside-range",
            FindingCode::StaleFiles => "stale-files",
            FindingCode::RenderFails => "render-fails",
            FindingCode::PortHeldElsewhere => "port-held-elsewhere",
            FindingCode::PortHeldByOrphan => "port-held-by-orphan",
            FindingCode::HookOutdated => "hook-outdated",
            FindingCode::HookMissing => "hook-missing",
            FindingCode::HookManager => "hook-manager",
            FindingCode::IndexGoneRepository => "index-gone-repository",
            FindingCode::PortShared => "port-shared",
            FindingCode::LiteralPort => "literal-port",
            FindingCode::ComposeOverrideAppends => "compose-override-appends",
            FindingCode::NoFallback => "no-fallback",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every code the schema lists prints as its serialized name (one spelling per code).
    #[test]
    fn printed_codes_are_the_serialized_ones() {
        let schema = serde_json::to_value(schemars::schema_for!(FindingCode)).unwrap();
        let names: Vec<&str> = (schema["oneOf"].as_array().unwrap().iter())
            .map(|v| v["const"].as_str().unwrap())
            .collect();
        assert_eq!(names.len(), 17, "{schema:#}");
        for name in names {
            let code: FindingCode = serde_json::from_value(serde_json::json!(name)).unwrap();
            assert_eq!(code.as_str(), name);
        }
        for s in [Severity::Error, Severity::Warning, Severity::Info] {
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                serde_json::json!(s.as_str())
            );
        }
    }
}
