//! The registry model: one repository's allocations, as kept in
//! `<git-common-dir>/worktree-registry/ports.json`.
//!
//! The fields are private; every change goes through a method that keeps the invariants the
//! allocator relies on (ports in 1024-65535, no port registered twice, anywhere in the
//! registry) and writes its own history event, so the history cannot disagree with the ports.
//! - [`codec`]: bytes <-> [`Registry`], the measured serde fast path, kept on its own;
//! - [`one`]: one worktree's ports from the file's bytes, without building the registry
//!   (`get` in a registry of 10,000 worktrees);
//! - [`store`]: the files (paths, lock-free and locked loads, recovery, save).
//!
//! No I/O here.

mod allocations;
pub mod apart;
mod codec;
mod compact;
pub mod one;
mod overlay;
mod ports;
mod records;
pub mod store;

use crate::model::clock::now_rfc3339;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;
use serde_json::value::RawValue;

use crate::model::allocate::Taken;
use crate::model::config::MIN_PORT;
use crate::model::portset::PortSet;
use crate::sys::fsio::FileText;
use allocations::Allocations;
use records::Records;

pub use codec::{Problem, parse};
pub use ports::Ports;
pub use store::{
    Loaded, Lock, Paths, load_ports_unlocked, load_unlocked, mode_for, parse_file_in,
    ports_of_unlocked, record_files,
};

/// The newest registry format version this build understands: 1 keeps the records in
/// `ports.json`, 2 beside it ([`apart`]).
pub const VERSION: u64 = apart::VERSION;

/// The format version of a registry whose records are in `ports.json`.
pub const INLINE_VERSION: u64 = 1;

/// The top-level key of the repository's label in hostnames.
const HOST_LABEL_KEY: &str = "hostname_label";

/// The top-level key of the repository's identity: it moves with the repository (`mv`), so
/// the machine index knows a moved repository for the one it was (design.md, Identity).
pub(crate) const REPOSITORY_ID_KEY: &str = "repository_id";

/// The top-level key of the worktrees removed with their directory gone.
const GONE_KEY: &str = "gone_worktrees";

/// How many removed worktrees are remembered.
pub const GONE_LIMIT: usize = 100;

/// A worktree that was removed: where it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct GoneWorktree {
    /// Its registry key.
    pub key: String,
    /// Where it was.
    pub path: String,
    /// When its entry was removed.
    pub removed_at: String,
}

/// The top-level key of the repository's block claim.
const CLAIM_KEY: &str = "block";

/// The block a block-strategy repository claimed: `{"start": 30100, "base": 30000, "size":
/// 10, "span": 100}` under the registry's `block` key, with the config it was claimed under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Claim {
    /// First port of the block.
    pub start: u16,
    /// `[block] base` when it was claimed.
    pub base: u16,
    /// `[block] size` when it was claimed.
    pub size: u16,
    /// `[block] span` when it was claimed.
    pub span: u16,
}

impl Claim {
    /// The config it was claimed under.
    pub fn config(&self) -> crate::model::config::Block {
        crate::model::config::Block {
            base: self.base,
            size: self.size,
            span: self.span,
        }
    }

    /// Its ports.
    pub fn ports(&self) -> std::ops::RangeInclusive<u16> {
        self.start..=self.start + (self.span - 1)
    }
}

/// The registry document. Unknown keys (top level and per worktree) are kept as they are.
#[derive(Debug, Clone)]
pub struct Registry {
    /// Format version; absent in the seed format (read as 1).
    version: u64,
    /// Service -> inclusive range, as configured when the service last allocated.
    port_ranges: BTreeMap<String, [u16; 2]>,
    /// Worktree key -> service -> port. The seed's shape: `jq .allocated_ports.main.web`.
    allocated_ports: Allocations,
    /// Worktree key -> where it was when it allocated (kept as raw JSON, decoded on access:
    /// a command needs one record, not 10,000; those read, spans of the file read).
    worktrees: Records,
    /// History entries found in the file read (an earlier version kept its history there),
    /// oldest first, as the raw JSON of each: a save moves them to `history.jsonl`.
    history: Vec<Text>,
    /// What this command did, oldest first: appended to `history.jsonl` once the save that
    /// did it is committed.
    events: Vec<Text>,
    /// Keys this version does not know, written back byte for byte.
    extra: BTreeMap<String, Raw>,
    /// The records' own file, when they were read from one ([`apart`]).
    apart_read: Option<ApartRead>,
    /// Where the next write says the records are: None, in `ports.json` (set by the save).
    write_apart: Option<apart::Apart>,
}

/// The records' own file as read: where, its committed bytes, how many lines they are.
#[derive(Debug, Clone)]
struct ApartRead {
    at: apart::Apart,
    file: Arc<FileText>,
    lines: usize,
}

/// A JSON value kept as the bytes it was read as: written back byte for byte (a number above
/// 2^64, which `serde_json::Value` would turn into a float, stays what it was).
#[derive(Debug, Clone)]
pub struct Raw(Box<RawValue>);

impl PartialEq for Raw {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

/// What the registry remembers about a worktree besides its ports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorktreeRecord {
    /// Absolute path of the worktree.
    pub path: String,
    /// Branch checked out (None when detached).
    pub branch: Option<String>,
    /// When the worktree first got ports (RFC 3339).
    pub allocated_at: String,
    /// The identity of the worktree that owns the entry: the same token is kept in the
    /// worktree's own git dir (`worktree-ports/id`), which git deletes with the worktree. A new
    /// worktree that git gives a dead one's name has no token, so it never takes over the dead
    /// one's ports. None in records written before identities (adopted on first use).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The docker compose project name of the worktree: decided when it first allocated,
    /// unique among the repository's worktrees, and kept, so that a stack's containers and
    /// volumes keep their names. None in records written before it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compose_project_name: Option<String>,
    /// A small number, stable for the worktree's life (main 0, then the lowest free), reused
    /// after it is released: for names registered in advance (OAuth redirect URLs, tunnels).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slot: Option<u32>,
    /// Its hostname (`feature.app.localhost`): decided when it first allocated, unique on the
    /// machine, and kept. None in records written before it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Keys this version does not know, byte for byte.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Raw>,
}

/// Text as it was read: a span of the file's text, shared by every value read from it (a
/// 10,000-worktree registry's keys, records and history entries were 31,000 allocations and a
/// megabyte copied per read), or text of its own.
#[derive(Debug, Clone)]
pub(crate) enum Text {
    /// `file[start..end]`.
    Read {
        file: Arc<FileText>,
        start: u32,
        end: u32,
    },
    /// Written here.
    Own(Box<str>),
}

impl Text {
    /// `text`, which is a part of `file` when it was borrowed from it (else copied).
    pub(crate) fn read(file: &Arc<FileText>, text: &str) -> Text {
        let start = (text.as_ptr() as usize).wrapping_sub(file.as_ptr() as usize);
        let span = (start.checked_add(text.len()))
            .filter(|end| file.get(start..*end).is_some_and(|t| std::ptr::eq(t, text)))
            .and_then(|end| Some((u32::try_from(start).ok()?, u32::try_from(end).ok()?)));
        match span {
            Some((start, end)) => Text::Read {
                file: Arc::clone(file),
                start,
                end,
            },
            None => Text::Own(text.into()),
        }
    }

    /// The file this text is a span of, and where: None for text of its own.
    pub(crate) fn span(&self) -> Option<(&Arc<FileText>, usize, usize)> {
        match self {
            Text::Read { file, start, end } => Some((file, *start as usize, *end as usize)),
            Text::Own(_) => None,
        }
    }

    /// The text.
    pub(crate) fn get(&self) -> &str {
        match self {
            Text::Read { file, start, end } => &file[*start as usize..*end as usize],
            Text::Own(text) => text,
        }
    }

    /// `value` encoded.
    fn of<T: Serialize>(value: &T) -> Text {
        let text = serde_json::to_string(value).expect("a registry value serializes");
        Text::Own(text.into_boxed_str())
    }
}

impl PartialEq for Text {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

/// A worktree key: a span of the file's text when it was written there without escapes, else
/// its own. Ordered, compared and looked up as the string it is.
#[derive(Debug, Clone)]
pub(crate) struct Key(Text);

impl Key {
    /// The key.
    pub(crate) fn as_str(&self) -> &str {
        self.0.get()
    }
}

impl From<&str> for Key {
    fn from(key: &str) -> Key {
        Key(Text::Own(key.into()))
    }
}

impl std::borrow::Borrow<str> for Key {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Key {}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A worktree record as the raw JSON it was read as (or written from): decoded only when a
/// command asks, written back byte for byte otherwise, unknown keys included.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordJson(Text);

impl RecordJson {
    /// Encode a record.
    pub fn new(record: &WorktreeRecord) -> RecordJson {
        RecordJson(Text::of(record))
    }
}

impl WorktreeRecord {
    /// A record's JSON decoded; None when it is not a record (no `path`): metadata only, the
    /// ports are validated elsewhere, so a damaged record costs its path, not the registry.
    fn decode(raw: &str) -> Option<WorktreeRecord> {
        serde_json::from_str(raw).ok()
    }
}

/// How a record holds its compose project name, as this tool writes it.
const COMPOSE_FIELD: &str = "\"compose_project_name\":\"";

/// The text of a JSON string whose opening quote is already behind: up to its closing quote.
/// Compose names are `[a-z0-9_-]` only, so there are no escapes to undo.
fn quoted(rest: &str) -> &str {
    &rest[..rest.find('"').unwrap_or(rest.len())]
}

/// One history entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// A service of a worktree got a port.
    Assigned {
        /// Registry key.
        worktree: &'a str,
        /// Service name.
        service: &'a str,
        /// The port.
        port: u16,
    },
    /// A service of a worktree gave its port back.
    Released {
        /// Registry key.
        worktree: &'a str,
        /// Service name.
        service: &'a str,
        /// The port.
        port: u16,
    },
    /// `repair` rebuilt the registry.
    Repaired,
}

impl Event<'_> {
    /// `{"timestamp", "action", "worktree", "service", "port"}`, as the seed wrote them.
    fn to_json(self) -> Text {
        #[derive(Serialize)]
        struct Entry<'a> {
            timestamp: String,
            action: &'a str,
            worktree: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            service: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            port: Option<u16>,
        }
        let (action, worktree, service, port) = match self {
            Event::Assigned {
                worktree,
                service,
                port,
            } => ("assigned", worktree, Some(service), Some(port)),
            Event::Released {
                worktree,
                service,
                port,
            } => ("released", worktree, Some(service), Some(port)),
            Event::Repaired => ("repaired", "*", None, None),
        };
        let entry = Entry {
            timestamp: now_rfc3339(),
            action,
            worktree,
            service,
            port,
        };
        Text::of(&entry)
    }
}

/// A change refused because it would register a port twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortConflict {
    /// The port.
    pub port: u16,
    /// Registry key of the worktree that holds it.
    pub worktree: String,
    /// Service that holds it.
    pub service: String,
}

impl std::fmt::Display for PortConflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "port {} is already registered to worktree {} (service {})",
            self.port, self.worktree, self.service
        )
    }
}

impl std::error::Error for PortConflict {}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            version: INLINE_VERSION,
            port_ranges: BTreeMap::new(),
            allocated_ports: Allocations::default(),
            worktrees: Records::default(),
            history: Vec::new(),
            events: Vec::new(),
            extra: BTreeMap::new(),
            apart_read: None,
            write_apart: None,
        }
    }
}

/// The same document (what `ports.json` holds): this command's history entries, which go to
/// `history.jsonl`, are not part of it.
impl PartialEq for Registry {
    fn eq(&self, other: &Self) -> bool {
        self.version == other.version
            && self.port_ranges == other.port_ranges
            && self.allocated_ports == other.allocated_ports
            && self.worktrees == other.worktrees
            && self.extra == other.extra
            && self.history.len() == other.history.len()
            && self.history == other.history
    }
}

impl Registry {
    /// The ports of worktree `key`.
    pub fn ports(&self, key: &str) -> Option<&Ports> {
        self.allocated_ports.get(key)
    }

    /// Every (worktree key, ports), sorted by key.
    pub fn allocations(&self) -> impl Iterator<Item = (&str, &Ports)> {
        self.allocated_ports.iter().map(|(k, p)| (k.as_str(), p))
    }

    /// The record of worktree `key` (None when it has none, or it cannot be decoded).
    pub fn record(&self, key: &str) -> Option<WorktreeRecord> {
        WorktreeRecord::decode(self.worktrees.get(key)?)
    }

    /// True when `key` has ports or a record.
    pub fn knows(&self, key: &str) -> bool {
        self.allocated_ports.contains_key(key) || self.worktrees.contains_key(key)
    }

    /// The range `port_ranges` remembers for `service`.
    pub fn port_range(&self, service: &str) -> Option<[u16; 2]> {
        self.port_ranges.get(service).copied()
    }

    /// Remember `service`'s configured range; true when it changed.
    pub fn set_port_range(&mut self, service: &str, range: [u16; 2]) -> bool {
        if self.port_range(service) == Some(range) {
            return false;
        }
        self.port_ranges.insert(service.to_string(), range);
        true
    }

    /// The block this repository claimed (block strategy), as recorded; None when it has
    /// none or the record is not a valid claim (then a new one is made).
    pub fn claim(&self) -> Option<Claim> {
        let c: Claim = serde_json::from_str(self.extra.get(CLAIM_KEY)?.0.get()).ok()?;
        let valid = c.size >= 1
            && c.span >= c.size
            && c.span.is_multiple_of(c.size)
            && c.start >= c.base
            && c.start >= MIN_PORT
            && u32::from(c.start) + u32::from(c.span) - 1 <= 65535;
        valid.then_some(c)
    }

    /// Record the repository's block claim; true when it changed.
    pub fn set_claim(&mut self, claim: Claim) -> bool {
        if self.claim() == Some(claim) {
            return false;
        }
        let raw = serde_json::value::to_raw_value(&claim).expect("a claim serializes");
        self.extra.insert(CLAIM_KEY.to_string(), Raw(raw));
        true
    }

    /// Set `key`'s record; true when it changed.
    pub fn set_record(&mut self, key: &str, record: &WorktreeRecord) -> bool {
        let json = RecordJson::new(record);
        if self.worktrees.get(key) == Some(json.0.get()) {
            return false;
        }
        self.worktrees.insert(key, json);
        true
    }

    /// For the record of every worktree but `except`: its key, and the raw JSON that follows
    /// `field` in it (None when the record has no such field). Reads the raw text of the
    /// records with one SIMD searcher, without decoding 10,000 of them (a per-record
    /// `str::find` was a tenth of a fresh 10,000-worktree allocation).
    fn raw_after<'s>(
        &'s self,
        except: &'s str,
        field: &'s str,
    ) -> impl Iterator<Item = (&'s str, Option<&'s str>)> + 's {
        let finder = memchr::memmem::Finder::new(field);
        self.worktrees
            .iter()
            .filter(move |r| r.key != except)
            .map(move |r| {
                let rest = finder
                    .find(r.raw.as_bytes())
                    .map(|at| &r.raw[at + field.len()..]);
                (r.key, rest)
            })
    }

    /// The compose project names the records of every worktree but `except` hold;
    /// `legacy(key)` names a record from before the field (what it was rendered with then).
    pub fn compose_names_except(
        &self,
        except: &str,
        legacy: &dyn Fn(&str) -> String,
    ) -> std::collections::HashSet<String> {
        self.raw_after(except, COMPOSE_FIELD)
            .map(|(k, rest)| match rest {
                Some(rest) => quoted(rest).to_string(),
                None => legacy(k),
            })
            .collect()
    }

    /// True when the record of a worktree other than `except` holds the compose project name
    /// `name` (or, for a record from before the field, `legacy_is(key, name)`). Allocates
    /// nothing: asked once per fresh allocation.
    pub fn compose_name_used(
        &self,
        except: &str,
        name: &str,
        legacy_is: &dyn Fn(&str, &str) -> bool,
    ) -> bool {
        self.raw_after(except, COMPOSE_FIELD)
            .any(|(k, rest)| match rest {
                Some(rest) => quoted(rest) == name,
                None => legacy_is(k, name),
            })
    }

    /// The hostnames the records of every worktree but `except` hold, with their keys.
    pub fn hostnames_except<'s>(&'s self, except: &'s str) -> Vec<(&'s str, &'s str)> {
        self.raw_after(except, "\"hostname\":\"")
            .filter_map(|(k, rest)| Some((quoted(rest?), k)))
            .collect()
    }

    /// The repository's label in hostnames (`app` in `feature.app.localhost`), once decided.
    pub fn host_label(&self) -> Option<String> {
        serde_json::from_str(self.extra.get(HOST_LABEL_KEY)?.0.get()).ok()
    }

    /// Keep the repository's label; true when it changed.
    pub fn set_host_label(&mut self, label: &str) -> bool {
        if self.host_label().as_deref() == Some(label) {
            return false;
        }
        let raw = serde_json::value::to_raw_value(label).expect("a string serializes");
        self.extra.insert(HOST_LABEL_KEY.to_string(), Raw(raw));
        true
    }

    /// The repository's identity token, once one was given.
    pub fn repository_id(&self) -> Option<String> {
        serde_json::from_str(self.extra.get(REPOSITORY_ID_KEY)?.0.get()).ok()
    }

    /// Keep the repository's identity token; true when it changed.
    pub fn set_repository_id(&mut self, id: &str) -> bool {
        if self.repository_id().as_deref() == Some(id) {
            return false;
        }
        let raw = serde_json::value::to_raw_value(id).expect("a string serializes");
        self.extra.insert(REPOSITORY_ID_KEY.to_string(), Raw(raw));
        true
    }

    /// The slots the records of every worktree but `except` hold (nothing collected: a fresh
    /// allocation among 10,000 worktrees asks it once).
    pub fn slots_except<'s>(&'s self, except: &'s str) -> impl Iterator<Item = u32> + 's {
        self.slots_with_holders(except).map(|(s, _)| s)
    }

    /// (slot, worktree) of every worktree but `except` whose record holds a slot.
    pub fn slot_holders_except<'s>(&'s self, except: &'s str) -> Vec<(u32, &'s str)> {
        self.slots_with_holders(except).collect()
    }

    fn slots_with_holders<'s>(&'s self, except: &'s str) -> impl Iterator<Item = (u32, &'s str)> {
        self.raw_after(except, "\"slot\":").filter_map(|(k, rest)| {
            let rest = rest?;
            let end = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            Some((rest[..end].parse().ok()?, k))
        })
    }

    /// How many worktrees the registry holds (ports or records), to size work by.
    pub fn size(&self) -> usize {
        self.allocated_ports.len() + self.worktrees.len()
    }

    /// Every registered port with its owner.
    pub fn taken(&self) -> Taken<'_> {
        let n = self.allocated_ports.iter().map(|(_, p)| p.len()).sum();
        let mut taken = Taken::with_capacity(n);
        for (wt, ports) in self.allocated_ports.iter() {
            // validate() and every change keep ports unique: a conflict cannot happen.
            taken.insert_worktree(None, wt.as_str(), ports.iter(), &mut |_, _, _| {});
        }
        taken
    }

    /// Every worktree key that has ports or a record, sorted.
    pub fn keys(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = self
            .allocated_ports
            .iter()
            .map(|(k, _)| k.as_str())
            .chain(self.worktrees.keys())
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// The key of the worktree recorded at `path` (for worktrees git no longer has).
    pub fn key_recorded_at(&self, path: &Path) -> Option<&str> {
        self.worktrees
            .iter()
            .find(|r| WorktreeRecord::decode(r.raw).is_some_and(|r| Path::new(&r.path) == path))
            .map(|r| r.key)
    }

    /// Give worktree `key` exactly `ports`, logging what was assigned and released. Refused,
    /// with nothing changed, when a port is outside 1024-65535 or registered to anyone else
    /// (another worktree, or another service of this one).
    pub fn set_ports(
        &mut self,
        key: &str,
        ports: &BTreeMap<String, u16>,
    ) -> Result<(), PortConflict> {
        let old = self.allocated_ports.get(key).cloned().unwrap_or_default();
        self.put_ports(key, ports)?;
        for (service, port) in old.iter() {
            if ports.get(service) != Some(&port) {
                self.log(Event::Released {
                    worktree: key,
                    service,
                    port,
                });
            }
        }
        for (service, &port) in ports {
            if old.get(service) != Some(port) {
                self.log(Event::Assigned {
                    worktree: key,
                    service,
                    port,
                });
            }
        }
        Ok(())
    }

    /// Give worktree `key` exactly `ports` without history events (`repair` logs one event for
    /// the whole rebuild). Same checks as [`Registry::set_ports`].
    pub fn restore_ports(
        &mut self,
        key: &str,
        ports: &BTreeMap<String, u16>,
    ) -> Result<(), PortConflict> {
        self.put_ports(key, ports)
    }

    fn put_ports(&mut self, key: &str, ports: &BTreeMap<String, u16>) -> Result<(), PortConflict> {
        let mut mine: Vec<(u16, &str)> = ports.iter().map(|(s, p)| (*p, s.as_str())).collect();
        mine.sort_unstable();
        if let Some(w) = mine.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(PortConflict {
                port: w[0].0,
                worktree: key.to_string(),
                service: w[0].1.to_string(),
            });
        }
        if let Some(&(port, service)) = mine.iter().find(|(p, _)| *p < MIN_PORT) {
            return Err(PortConflict {
                port,
                worktree: "(none: ports below 1024 are never registered)".into(),
                service: service.to_string(),
            });
        }
        // Every other worktree: each port looked up in a set of 8 KB (a search of `mine` per
        // port was a tenth of the choosing among 10,000 worktrees), the key compared only
        // where one is found (`key`'s own ports may stay).
        let wanted: PortSet = mine.iter().map(|(p, _)| *p).collect();
        for (other, held) in self.allocated_ports.iter() {
            for (service, port) in held.iter() {
                if wanted.contains(port) && other.as_str() != key {
                    return Err(PortConflict {
                        port,
                        worktree: other.to_string(),
                        service: service.to_string(),
                    });
                }
            }
        }
        if ports.is_empty() {
            self.allocated_ports.remove(key);
        } else {
            self.allocated_ports
                .insert(Key::from(key), Ports::from(ports));
        }
        Ok(())
    }

    /// Give back the ports of `services` of worktree `key` (a worktree left with none loses
    /// its record too); returns what was released.
    pub fn release_services(&mut self, key: &str, services: &[String]) -> BTreeMap<String, u16> {
        let mut released = BTreeMap::new();
        let Some(mut ports) = self.allocated_ports.get(key).cloned() else {
            return released;
        };
        for s in services {
            if let Some(p) = ports.remove(s) {
                released.insert(s.clone(), p);
            }
        }
        if ports.is_empty() {
            self.allocated_ports.remove(key);
            self.worktrees.remove(key);
        } else if !released.is_empty() {
            self.allocated_ports.insert(Key::from(key), ports);
        }
        for (service, &port) in &released {
            self.log(Event::Released {
                worktree: key,
                service,
                port,
            });
        }
        released
    }

    /// Remove a worktree entirely; returns its ports (empty if it had none).
    pub fn remove_worktree(&mut self, key: &str) -> BTreeMap<String, u16> {
        self.worktrees.remove(key);
        let ports = self.allocated_ports.remove(key).unwrap_or_default();
        for (service, port) in ports.iter() {
            self.log(Event::Released {
                worktree: key,
                service,
                port,
            });
        }
        ports.to_map()
    }

    /// [`Registry::remove_worktree`] for a worktree whose directory is gone: its path is
    /// remembered (the newest [`GONE_LIMIT`]), so a server still running from the deleted
    /// directory can be named as its orphan (`status`, `prune --reap`).
    pub fn remove_gone_worktree(&mut self, key: &str) -> BTreeMap<String, u16> {
        if let Some(record) = self.record(key) {
            let mut gone = self.gone_worktrees();
            gone.retain(|g| g.path != record.path);
            gone.push(GoneWorktree {
                key: key.to_string(),
                path: record.path,
                removed_at: now_rfc3339(),
            });
            let excess = gone.len().saturating_sub(GONE_LIMIT);
            gone.drain(..excess);
            let raw = serde_json::value::to_raw_value(&gone).expect("gone worktrees serialize");
            self.extra.insert(GONE_KEY.to_string(), Raw(raw));
        }
        self.remove_worktree(key)
    }

    /// Worktrees removed while their directory was gone, oldest first.
    pub fn gone_worktrees(&self) -> Vec<GoneWorktree> {
        self.extra
            .get(GONE_KEY)
            .and_then(|raw| serde_json::from_str(raw.0.get()).ok())
            .unwrap_or_default()
    }

    /// Drop every allocation and record, keeping ranges, history and unknown keys (`repair`
    /// starts from this).
    pub fn clear_allocations(&mut self) {
        self.allocated_ports.clear();
        self.worktrees.clear();
    }

    /// Note a history entry, appended to `history.jsonl` by the save that commits it.
    pub fn log(&mut self, event: Event<'_>) {
        self.events.push(event.to_json());
    }

    /// The history entries found in the file read (a save moves them to `history.jsonl`;
    /// those it could not move are written back into `ports.json`).
    pub(super) fn file_history(&self) -> &[Text] {
        &self.history
    }

    /// Forget the history entries of the file read: they are in `history.jsonl` now.
    pub(super) fn history_moved(&mut self) {
        self.history.clear();
    }

    /// This command's history entries, taken out to be appended.
    pub(super) fn take_events(&mut self) -> Vec<Text> {
        std::mem::take(&mut self.events)
    }

    /// Where a registry of version 2 keeps its records (its `records` key, taken from the
    /// keys kept as they are); None for an earlier version, whose `records` key, if it has
    /// one, is not this tool's.
    pub(super) fn records_named(&mut self) -> Result<Option<apart::Apart>, Problem> {
        if self.version < apart::VERSION {
            return Ok(None);
        }
        if self.worktrees.len() > 0 {
            return Err(Problem::Invalid(format!(
                "a version {} registry keeps its records apart, yet it has `worktrees`",
                self.version
            )));
        }
        let raw = self.extra.remove(apart::KEY).ok_or_else(|| {
            Problem::Invalid(format!(
                "version {} without `{}`: where its records are",
                self.version,
                apart::KEY
            ))
        })?;
        serde_json::from_str(raw.0.get())
            .map(Some)
            .map_err(|e| Problem::Invalid(format!("`{}`: {e}", apart::KEY)))
    }

    /// The records read from their own file (`file`, the committed bytes of `at`).
    pub(super) fn set_records_apart(
        &mut self,
        at: apart::Apart,
        file: Arc<FileText>,
        read: apart::Read,
    ) {
        self.worktrees = read.records;
        self.apart_read = Some(ApartRead {
            at,
            file,
            lines: read.lines,
        });
    }

    /// Where the records were read from, when from their own file.
    pub fn records_apart(&self) -> Option<apart::Apart> {
        self.apart_read.as_ref().map(|r| r.at)
    }

    /// How many records there are.
    pub(super) fn records_len(&self) -> usize {
        self.worktrees.len()
    }

    /// The lines a save appends to the records' file (into `out`), and where the file's
    /// committed bytes end: None when the records are to be written whole instead (they
    /// were not read from that file, or it would hold too many lines for its records).
    pub(super) fn records_appended(&self, out: &mut Vec<u8>) -> Option<(apart::Apart, usize)> {
        let read = self.apart_read.as_ref()?;
        if !(self.worktrees.file()).is_some_and(|f| Arc::ptr_eq(f, &read.file)) {
            return None;
        }
        let n = apart::lines(self.worktrees.changes(), out);
        (!apart::too_long(read.lines + n, self.worktrees.len())).then_some((read.at, n))
    }

    /// Every record, a line each, into `out` (a records file written whole).
    pub(super) fn records_whole(&self, out: &mut Vec<u8>) {
        for item in self.worktrees.iter() {
            apart::line(out, item.key, item.raw);
        }
    }

    /// Where the next write says the records are (None: in `ports.json`); after an append of
    /// `added` lines, the file read holds them too.
    pub(super) fn records_written(&mut self, at: Option<apart::Apart>, added: Option<usize>) {
        self.write_apart = at;
        match (at, added, &mut self.apart_read) {
            (Some(at), Some(n), Some(read)) => {
                read.at = at;
                read.lines += n;
            }
            _ => self.apart_read = None,
        }
    }

    /// Check what the rest of the tool relies on: known version, ports in 1024-65535, no port
    /// registered twice, sane ranges.
    pub fn validate(&self) -> Result<(), Problem> {
        if self.version > VERSION {
            return Err(Problem::Newer(self.version));
        }
        let mut seen = PortSet::new();
        for (wt, ports) in self.allocated_ports.iter() {
            for (svc, port) in ports.iter() {
                if port < MIN_PORT {
                    return Err(Problem::Invalid(format!(
                        "allocated_ports.{wt}.{svc} = {port} is outside 1024-65535"
                    )));
                }
                if !seen.insert(port) {
                    return Err(Problem::Invalid(format!(
                        "port {port} is registered twice (again as allocated_ports.{wt}.{svc})"
                    )));
                }
            }
        }
        for (svc, [lo, hi]) in &self.port_ranges {
            if lo > hi {
                return Err(Problem::Invalid(format!(
                    "port_ranges.{svc} [{lo}, {hi}] is reversed"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn map(pairs: &[(&str, u16)]) -> BTreeMap<String, u16> {
        pairs.iter().map(|(s, p)| (s.to_string(), *p)).collect()
    }

    fn actions(r: &Registry) -> Vec<String> {
        r.events
            .iter()
            .map(|h| {
                let v: Value = serde_json::from_str(h.get()).unwrap();
                format!(
                    "{} {} {} {}",
                    v["action"].as_str().unwrap(),
                    v["worktree"].as_str().unwrap(),
                    v["service"].as_str().unwrap_or("-"),
                    v["port"]
                )
            })
            .collect()
    }

    #[test]
    fn set_ports_keeps_ports_unique_and_logs_every_change() {
        let mut r = Registry::default();
        r.set_ports("a", &map(&[("web", 8080), ("db", 5432)]))
            .unwrap();
        // Another worktree, or another service of the same one, cannot take a held port.
        let err = r.set_ports("b", &map(&[("web", 8080)])).unwrap_err();
        assert_eq!((err.port, err.worktree.as_str()), (8080, "a"));
        assert!(
            r.set_ports("a", &map(&[("web", 8081), ("db", 8081)]))
                .is_err()
        );
        assert!(r.set_ports("b", &map(&[("web", 80)])).is_err());
        assert!(r.ports("b").is_none(), "a refused change changes nothing");
        // A move releases the old port and assigns the new one; the old one is free again.
        r.set_ports("a", &map(&[("web", 8081), ("db", 5432)]))
            .unwrap();
        r.set_ports("b", &map(&[("web", 8080)])).unwrap();
        assert_eq!(
            actions(&r),
            [
                "assigned a db 5432",
                "assigned a web 8080",
                "released a web 8080",
                "assigned a web 8081",
                "assigned b web 8080",
            ]
        );
        assert!(r.validate().is_ok());
    }

    #[test]
    fn releasing_the_last_service_forgets_the_worktree() {
        let mut r = Registry::default();
        r.set_ports("a", &map(&[("web", 8080), ("db", 5432)]))
            .unwrap();
        r.set_record(
            "a",
            &WorktreeRecord {
                path: "/x".into(),
                branch: None,
                allocated_at: now_rfc3339(),
                id: None,
                compose_project_name: None,
                slot: None,
                hostname: None,
                extra: BTreeMap::new(),
            },
        );
        assert_eq!(
            r.release_services("a", &["db".into()]),
            map(&[("db", 5432)])
        );
        assert!(r.knows("a"));
        assert_eq!(
            r.release_services("a", &["web".into()]),
            map(&[("web", 8080)])
        );
        assert!(!r.knows("a"));
        assert!(r.release_services("a", &["web".into()]).is_empty());
    }

    #[test]
    fn history_events_are_typed_and_kept_apart_from_the_file_history() {
        let mut r = Registry::default();
        for i in 0..1010 {
            r.log(Event::Assigned {
                worktree: &format!("w{i}"),
                service: "web",
                port: 2000,
            });
        }
        r.log(Event::Repaired);
        assert_eq!(r.events.len(), 1011);
        assert!(
            r.history.is_empty(),
            "events are not written into ports.json"
        );
        assert_eq!(actions(&r).last().unwrap(), "repaired * - null");
        assert!(actions(&r)[0].starts_with("assigned w0 web"));
        assert_eq!(r.take_events().len(), 1011);
        assert!(r.events.is_empty());
    }
}
