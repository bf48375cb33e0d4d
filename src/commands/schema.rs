//! Typed `--json` answers: every answer is a serialisable struct of its command, printed
//! with a `"schema"` version first ([`Versioned`]); `--print-schema <command>` prints its JSON
//! Schema, generated from the same struct (schemars), so the documented shape and the
//! printed one cannot drift apart.
//!
//! Bump [`VERSION`] when a field is renamed or removed or changes type; adding a field does
//! not bump it (readers must ignore fields they do not know).

use schemars::JsonSchema;
use serde::Serialize;

use crate::cli::SchemaName;

/// The version every answer carries in `"schema"`.
pub const VERSION: u32 = 1;

/// An answer with its schema version.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Versioned<T> {
    /// The version of this answer's shape (see `--print-schema`).
    pub schema: u32,
    /// The command's answer.
    #[serde(flatten)]
    pub answer: T,
}

/// `answer` with its version, as pretty JSON and a newline: how every answer is printed.
pub fn pretty<T: Serialize>(answer: T) -> String {
    let versioned = Versioned {
        schema: VERSION,
        answer,
    };
    json_text(&versioned)
}

/// Pretty JSON and a newline: answers, schemas, and `env --format json` (which carries no
/// version).
pub fn json_text<T: Serialize>(value: &T) -> String {
    format!(
        "{}\n",
        serde_json::to_string_pretty(value).expect("answers serialise")
    )
}

/// The JSON Schema of one answer, as pretty JSON.
pub fn print(name: SchemaName) -> String {
    json_text(&of(name))
}

/// The JSON Schema of one answer (`--print-schema`, and the MCP tools' `outputSchema`).
pub fn of(name: SchemaName) -> schemars::Schema {
    use crate::commands::*;
    use schemars::schema_for;
    let (mut schema, title) = match name {
        SchemaName::Allocate | SchemaName::Add => (
            schema_for!(Versioned<AllocateAnswer>),
            "allocate --json, add --json",
        ),
        SchemaName::List => (schema_for!(Versioned<list::ListAnswer>), "list --json"),
        SchemaName::ListAll => (
            schema_for!(Versioned<list::MachineAnswer>),
            "list --all --json",
        ),
        SchemaName::Release => (
            schema_for!(Versioned<release::ReleaseAnswer>),
            "release --json",
        ),
        SchemaName::ReleaseLease => (
            schema_for!(Versioned<release::LeaseReleaseAnswer>),
            "release --lease ID --json",
        ),
        SchemaName::Prune => (schema_for!(Versioned<prune::PruneAnswer>), "prune --json"),
        SchemaName::Get => (schema_for!(Versioned<get::GetAnswer>), "get --json"),
        SchemaName::Check => (schema_for!(Versioned<check::CheckAnswer>), "check --json"),
        SchemaName::Remove => (
            schema_for!(Versioned<remove::RemoveAnswer>),
            "remove --json",
        ),
        SchemaName::Render => (
            schema_for!(Versioned<render::RenderAnswer>),
            "render --json",
        ),
        SchemaName::Env => (schema_for!(env::EnvAnswer), "env --format json"),
        SchemaName::Repair => (
            schema_for!(Versioned<repair::RepairAnswer>),
            "repair --json",
        ),
        SchemaName::Suggest => (
            schema_for!(Versioned<suggest::SuggestAnswer>),
            "suggest --json",
        ),
        SchemaName::Lease => (schema_for!(Versioned<lease::LeaseAnswer>), "lease --json"),
        SchemaName::Status => (
            schema_for!(Versioned<status::StatusAnswer>),
            "status --json",
        ),
        SchemaName::Doctor => (
            schema_for!(Versioned<doctor::DoctorAnswer>),
            "doctor --json",
        ),
        SchemaName::ProxyStatus => (
            schema_for!(Versioned<proxy::ProxyStatusAnswer>),
            "proxy status --json",
        ),
        SchemaName::HooksStatus => (
            schema_for!(Versioned<hooks::HooksStatusAnswer>),
            "hooks status --json",
        ),
        SchemaName::Error => (
            schema_for!(Versioned<crate::model::error::ErrorAnswer>),
            "any command's error with --json",
        ),
    };
    schema.insert("title".into(), format!("git worktree-ports {title}").into());
    schema
}
