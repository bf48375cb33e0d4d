//! `<git-common-dir>/worktree-registry/ports.json`: the model, validation, the lock, the atomic
//! save and recovery. Reads and writes only files inside `worktree-registry/`; never prints
//! (warnings are returned to the caller).
//!
//! Protocol (design.md "Locking and writing the registry"):
//! - writers lock `ports.lock`, a file that is never renamed or deleted;
//! - under the lock: drop leftover temp files, read + validate, recover a damaged file from
//!   `ports.json.bak` (keeping the damaged one as `ports.json.corrupt-<ts>`), refuse when both
//!   are bad: starting empty over a damaged file would hand ports out twice;
//! - save = temp file (`create_new`, `sync_all`) + rename + directory fsync, then the same bytes
//!   to `ports.json.bak`, so the backup is always the last committed state;
//! - readers take no lock: a rename gives them the old or the new file, never half of one.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use crate::allocate::Taken;
use crate::config::MIN_PORT;
use crate::error::{Code, Error};
use crate::fault;

/// The registry format version this build writes and understands.
pub const VERSION: u64 = 1;

/// History entries kept; older ones are dropped on save.
pub const HISTORY_LIMIT: usize = 1000;

/// Default time to wait for the registry lock.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// Environment variable overriding the lock timeout (seconds, fractions allowed).
pub const LOCK_TIMEOUT_ENV: &str = "GIT_WORKTREE_PORTS_LOCK_TIMEOUT";

/// The registry document. Unknown keys (top level and per worktree) are kept as they are.
#[derive(Debug, Clone, Serialize)]
pub struct Registry {
    /// Format version; absent in the seed format (read as 1).
    pub version: u64,
    /// Service -> inclusive range, as configured when the service last allocated.
    pub port_ranges: BTreeMap<String, [u16; 2]>,
    /// Worktree key -> service -> port. The seed's shape: `jq .allocated_ports.main.web`.
    pub allocated_ports: BTreeMap<String, Ports>,
    /// Worktree key -> where it was when it allocated (kept as raw JSON, decoded on access:
    /// a command needs one record, not 10,000).
    pub worktrees: BTreeMap<String, RecordJson>,
    /// What happened, oldest first, at most [`HISTORY_LIMIT`] entries. Kept as the raw JSON
    /// of each entry: commands only append to it, so it is never decoded.
    pub history: Vec<Box<RawValue>>,
    /// Keys this version does not know, written back untouched.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
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
    /// Keys this version does not know.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A worktree record as the raw JSON it was read as (or written from): decoded only when a
/// command asks, written back byte for byte otherwise, unknown keys included.
#[derive(Debug, Clone)]
pub struct RecordJson(Box<RawValue>);

impl RecordJson {
    /// Encode a record.
    pub fn new(record: &WorktreeRecord) -> RecordJson {
        RecordJson(serde_json::value::to_raw_value(record).expect("record serializes"))
    }

    /// Decode it; None when it is not a record (no `path`): metadata only, the ports are
    /// validated elsewhere, so a damaged record costs its path, not the registry.
    pub fn get(&self) -> Option<WorktreeRecord> {
        serde_json::from_str(self.0.get()).ok()
    }
}

/// One worktree's ports: service -> port, sorted by service, each service once.
///
/// Not a `BTreeMap<String, u16>`: 10,000 worktrees would be 10,000 trees and 50,000 copies of
/// the same five service names. Here a worktree is one small vector, and the names read from
/// one file are shared (reading a 10,000-worktree registry took 2.5x as long with maps).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ports(Vec<(Arc<str>, u16)>);

impl Ports {
    /// The port of `service`.
    pub fn get(&self, service: &str) -> Option<u16> {
        self.find(service).ok().map(|i| self.0[i].1)
    }

    /// Give `service` the port `port`; returns the port it had.
    pub fn insert(&mut self, service: &str, port: u16) -> Option<u16> {
        match self.find(service) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, port)),
            Err(i) => {
                self.0.insert(i, (Arc::from(service), port));
                None
            }
        }
    }

    /// Take `service`'s port away; returns it.
    pub fn remove(&mut self, service: &str) -> Option<u16> {
        self.find(service).ok().map(|i| self.0.remove(i).1)
    }

    /// (service, port), sorted by service.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u16)> {
        self.0.iter().map(|(s, p)| (&**s, *p))
    }

    /// How many services have a port.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when no service has a port.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// As a map, for the commands' output.
    pub fn to_map(&self) -> BTreeMap<String, u16> {
        self.iter().map(|(s, p)| (s.to_owned(), p)).collect()
    }

    fn find(&self, service: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(s, _)| (**s).cmp(service))
    }

    /// Sort read entries; a service named twice keeps its last port, as a JSON object read
    /// into a map would.
    fn from_read(mut entries: Vec<(Arc<str>, u16)>) -> Ports {
        if !entries.is_sorted_by(|a, b| a.0 < b.0) {
            entries.reverse();
            entries.sort_by(|a, b| a.0.cmp(&b.0)); // stable: the last read comes first
            entries.dedup_by(|later, first| later.0 == first.0);
        }
        Ports(entries)
    }
}

impl From<&BTreeMap<String, u16>> for Ports {
    fn from(map: &BTreeMap<String, u16>) -> Ports {
        Ports(
            map.iter()
                .map(|(s, p)| (Arc::from(s.as_str()), *p))
                .collect(),
        )
    }
}

impl Serialize for Ports {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

/// Reads `allocated_ports`, sharing each service name among all worktrees.
struct AllocatedPorts(BTreeMap<String, Ports>);

impl<'de> Deserialize<'de> for AllocatedPorts {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = AllocatedPorts;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of worktrees")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<AllocatedPorts, A::Error> {
                let mut names = Names::default();
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some(key) = map.next_key::<String>()? {
                    let ports = map.next_value_seed(PortsSeed(&mut names))?;
                    entries.push((key, ports));
                }
                Ok(AllocatedPorts(entries.into_iter().collect()))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// The service names read so far, each kept once.
#[derive(Default)]
struct Names {
    /// The name last seen at each position of a worktree's object: worktrees list the same
    /// services in the same order, so this finds a name with one compare, no hashing.
    by_position: Vec<Arc<str>>,
    all: HashSet<Arc<str>>,
}

impl Names {
    fn share(&mut self, position: usize, name: &str) -> Arc<str> {
        if let Some(known) = self.by_position.get(position)
            && **known == *name
        {
            return Arc::clone(known);
        }
        let shared = match self.all.get(name) {
            Some(known) => Arc::clone(known),
            None => {
                let new: Arc<str> = Arc::from(name);
                self.all.insert(Arc::clone(&new));
                new
            }
        };
        match self.by_position.get_mut(position) {
            Some(slot) => *slot = Arc::clone(&shared),
            None => self.by_position.push(Arc::clone(&shared)),
        }
        shared
    }
}

/// Reads one worktree's ports, taking service names from (and adding them to) `.0`.
struct PortsSeed<'n>(&'n mut Names);

impl<'de> serde::de::DeserializeSeed<'de> for PortsSeed<'_> {
    type Value = Ports;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Ports, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for PortsSeed<'_> {
    type Value = Ports;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object of service ports")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Ports, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0));
        while let Some(Name(name)) = map.next_key()? {
            let port: u16 = map.next_value()?;
            entries.push((self.0.share(entries.len(), &name), port));
        }
        Ok(Ports::from_read(entries))
    }
}

/// A string borrowed from the input when it has no escapes (serde's own `Cow` always copies).
struct Name<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Name<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Name<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a service name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(Visit)
    }
}

impl PartialEq for RecordJson {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

impl Serialize for RecordJson {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for RecordJson {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Box::<RawValue>::deserialize(d).map(RecordJson)
    }
}

impl PartialEq for Registry {
    fn eq(&self, other: &Self) -> bool {
        self.version == other.version
            && self.port_ranges == other.port_ranges
            && self.allocated_ports == other.allocated_ports
            && self.worktrees == other.worktrees
            && self.extra == other.extra
            && self.history.len() == other.history.len()
            && self
                .history
                .iter()
                .zip(&other.history)
                .all(|(a, b)| a.get() == b.get())
    }
}

// Deserialize by hand: `#[serde(flatten)]` (to keep unknown keys) makes serde buffer the whole
// input into an intermediate tree first, once for the document and once per worktree record,
// which made parsing a 10,000-worktree registry 4x slower. These visitors read each value once.

impl<'de> Deserialize<'de> for Registry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Registry;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a registry object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Registry, A::Error> {
                let mut reg = Registry::default();
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "version" => reg.version = map.next_value()?,
                        "port_ranges" => reg.port_ranges = map.next_value::<Sorted<_, _>>()?.0,
                        "allocated_ports" => {
                            reg.allocated_ports = map.next_value::<AllocatedPorts>()?.0;
                        }
                        "worktrees" => reg.worktrees = map.next_value::<Sorted<_, _>>()?.0,
                        "history" => reg.history = map.next_value()?,
                        _ => {
                            let value = map.next_value()?;
                            reg.extra.insert(key, value);
                        }
                    }
                }
                Ok(reg)
            }
        }
        d.deserialize_map(Visit)
    }
}

/// A JSON object read into a `BTreeMap` in bulk: entries are collected, then built at once
/// (std sorts, which is linear for the already sorted keys the tool writes). Inserting one by
/// one walked the tree with string compares 70,000 times for 10,000 worktrees. Duplicate keys
/// keep the last value, as inserts would.
struct Sorted<K, V>(BTreeMap<K, V>);

impl<'de, K: Deserialize<'de> + Ord, V: Deserialize<'de>> Deserialize<'de> for Sorted<K, V> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<K, V>(std::marker::PhantomData<(K, V)>);
        impl<'de, K: Deserialize<'de> + Ord, V: Deserialize<'de>> serde::de::Visitor<'de> for Visit<K, V> {
            type Value = Sorted<K, V>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Sorted(entries.into_iter().collect()))
            }
        }
        d.deserialize_map(Visit(std::marker::PhantomData))
    }
}

impl<'de> Deserialize<'de> for WorktreeRecord {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = WorktreeRecord;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a worktree record object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<WorktreeRecord, A::Error> {
                let (mut path, mut branch, mut allocated_at) = (None, None, String::new());
                let mut extra = Map::new();
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "path" => path = Some(map.next_value()?),
                        "branch" => branch = map.next_value()?,
                        "allocated_at" => allocated_at = map.next_value()?,
                        _ => {
                            let value = map.next_value()?;
                            extra.insert(key, value);
                        }
                    }
                }
                Ok(WorktreeRecord {
                    path: path.ok_or_else(|| serde::de::Error::missing_field("path"))?,
                    branch,
                    allocated_at,
                    extra,
                })
            }
        }
        d.deserialize_map(Visit)
    }
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            version: VERSION,
            port_ranges: BTreeMap::new(),
            allocated_ports: BTreeMap::new(),
            worktrees: BTreeMap::new(),
            history: Vec::new(),
            extra: Map::new(),
        }
    }
}

impl Registry {
    /// Every registered port with its owner.
    pub fn taken(&self) -> Taken<'_> {
        let n = self.allocated_ports.values().map(Ports::len).sum();
        let mut taken = Taken::with_capacity(n);
        for (wt, ports) in &self.allocated_ports {
            for (svc, port) in ports.iter() {
                taken.insert(port, wt, svc);
            }
        }
        taken
    }

    /// Every worktree key that has ports or a record, sorted.
    pub fn keys(&self) -> Vec<&String> {
        let mut keys: Vec<&String> = self
            .allocated_ports
            .keys()
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
            .find(|(_, r)| r.get().is_some_and(|r| Path::new(&r.path) == path))
            .map(|(k, _)| k.as_str())
    }

    /// Append a history entry (bounded on save).
    pub fn record(
        &mut self,
        action: &str,
        worktree: &str,
        service: Option<&str>,
        port: Option<u16>,
    ) {
        let mut entry = json!({
            "timestamp": now_rfc3339(),
            "action": action,
            "worktree": worktree,
        });
        if let Some(s) = service {
            entry["service"] = json!(s);
        }
        if let Some(p) = port {
            entry["port"] = json!(p);
        }
        self.history
            .push(serde_json::value::to_raw_value(&entry).expect("history entry serializes"));
    }

    /// Remove a worktree entirely; returns its ports (empty if it had none).
    pub fn remove_worktree(&mut self, key: &str) -> BTreeMap<String, u16> {
        self.worktrees.remove(key);
        let ports = self.allocated_ports.remove(key).unwrap_or_default();
        for (svc, port) in ports.iter() {
            self.record("released", key, Some(svc), Some(port));
        }
        ports.to_map()
    }

    /// Check what the rest of the tool relies on: known version, ports in 1024-65535, no port
    /// registered twice, sane ranges.
    pub fn validate(&self) -> Result<(), Problem> {
        if self.version > VERSION {
            return Err(Problem::Newer(self.version));
        }
        // One bit per port: 8 KiB, and no hashing of 50,000 ports.
        let mut seen = vec![0u64; 1024];
        for (wt, ports) in &self.allocated_ports {
            for (svc, port) in ports.iter() {
                if port < MIN_PORT {
                    return Err(Problem::Invalid(format!(
                        "allocated_ports.{wt}.{svc} = {port} is outside 1024-65535"
                    )));
                }
                let (word, bit) = (usize::from(port) / 64, 1u64 << (port % 64));
                let duplicate = seen[word] & bit != 0;
                seen[word] |= bit;
                if duplicate {
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

    /// Serialize as written to disk: compact JSON and a newline. Pretty printing made a
    /// 10,000-worktree registry 37% larger, 27% slower to parse and 45% slower to write;
    /// `jq . ports.json` shows it indented.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.size_hint());
        serde_json::to_writer(&mut out, self).expect("registry serializes");
        out.push(b'\n');
        out
    }

    /// About the size of [`Registry::to_bytes`], so that the buffer is allocated once instead
    /// of doubling (and copying) its way to 2.4 MB for 10,000 worktrees.
    fn size_hint(&self) -> usize {
        // Quotes, colons, commas and braces: a few bytes per entry; a port is at most 5 digits.
        let ports: usize = (self.allocated_ports.iter())
            .map(|(k, p)| k.len() + 6 + p.iter().map(|(s, _)| s.len() + 9).sum::<usize>())
            .sum();
        let records: usize = (self.worktrees.iter())
            .map(|(k, r)| k.len() + 4 + r.0.get().len())
            .sum();
        let history: usize = self.history.iter().map(|h| h.get().len() + 1).sum();
        1024 + ports + records + history
    }

    fn trim_history(&mut self) {
        if self.history.len() > HISTORY_LIMIT {
            let excess = self.history.len() - HISTORY_LIMIT;
            self.history.drain(..excess);
        }
    }
}

/// Why a registry file could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// No such file.
    Missing,
    /// Zero bytes or only whitespace.
    Empty,
    /// Not JSON, the wrong shape, or a broken invariant.
    Invalid(String),
    /// Written by a newer version of the tool.
    Newer(u64),
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Missing => f.write_str("missing"),
            Problem::Empty => f.write_str("empty"),
            Problem::Invalid(m) => f.write_str(m),
            Problem::Newer(v) => write!(f, "version {v} is newer than this tool's {VERSION}"),
        }
    }
}

/// Parse registry bytes.
pub fn parse(bytes: &[u8]) -> Result<Registry, Problem> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(Problem::Empty);
    }
    // Check UTF-8 once for the whole file: from_slice checks every string on its own, which
    // was 4% of reading a 10,000-worktree registry.
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => return Err(Problem::Invalid(format!("not UTF-8 text: {e}"))),
    };
    match serde_json::from_str::<Registry>(text) {
        // validate() looks at the version first.
        Ok(reg) => reg.validate().map(|()| reg),
        Err(e) => {
            // A newer format may have another shape: call it newer, not corrupt. Only on this
            // path, so a good file is parsed once.
            #[derive(Deserialize)]
            struct VersionOnly {
                version: Option<u64>,
            }
            match serde_json::from_slice::<VersionOnly>(bytes) {
                Ok(VersionOnly { version: Some(v) }) if v > VERSION => Err(Problem::Newer(v)),
                _ => Err(Problem::Invalid(e.to_string())),
            }
        }
    }
}

/// The files of one repository's registry.
#[derive(Debug, Clone)]
pub struct Paths {
    /// `<common-dir>/worktree-registry`.
    pub dir: PathBuf,
    /// `ports.json`.
    pub file: PathBuf,
    /// `ports.json.bak`: the last committed state.
    pub backup: PathBuf,
    /// `ports.lock`: locked by writers, never renamed.
    pub lock: PathBuf,
}

impl Paths {
    /// The registry of the repository whose common dir is `common_dir`.
    pub fn new(common_dir: &Path) -> Paths {
        let dir = common_dir.join("worktree-registry");
        Paths {
            file: dir.join("ports.json"),
            backup: dir.join("ports.json.bak"),
            lock: dir.join("ports.lock"),
            dir,
        }
    }
}

/// The bytes of `path`, None if there is no such file.
fn read_bytes(path: &Path) -> anyhow::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("could not read {}", path.display())),
    }
}

fn read(path: &Path) -> anyhow::Result<Result<Registry, Problem>> {
    Ok(read_bytes(path)?.map_or(Err(Problem::Missing), |b| parse(&b)))
}

/// How a load went, besides the registry itself.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The registry to use.
    pub registry: Registry,
    /// Things the user must hear about (recovery from the backup).
    pub warnings: Vec<String>,
    /// True when the registry came from the backup and should be written back.
    pub recovered: bool,
    /// A save did not finish (a crash): the backup is not the same as `ports.json`, or a
    /// temp file is left. A writer should take the lock, whose load repairs both.
    pub unfinished: bool,
    /// Which `ports.json` this was parsed from (lock-free loads of a whole file only).
    pub stamp: Option<Stamp>,
}

/// The identity of a `ports.json`: every save renames a new file into place, so an unchanged
/// stamp means unchanged content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(m: &fs::Metadata) -> Stamp {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            Stamp {
                dev: m.dev(),
                ino: m.ino(),
                len: m.len(),
                mtime: (m.mtime(), m.mtime_nsec()),
                ctime: (m.ctime(), m.ctime_nsec()),
            }
        }
        #[cfg(not(unix))]
        {
            let t = |t: io::Result<SystemTime>| {
                t.ok()
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map_or((0, 0), |d| {
                        (d.as_secs() as i64, i64::from(d.subsec_nanos()))
                    })
            };
            Stamp {
                dev: 0,
                ino: 0,
                len: m.len(),
                mtime: t(m.modified()),
                ctime: t(m.created()),
            }
        }
    }
}

fn corrupt(paths: &Paths, main: &Problem, backup: &Problem) -> anyhow::Error {
    Error::new(
        Code::RegistryCorrupt,
        format!(
            "{} is unusable ({main}) and so is its backup {} ({backup}); nothing was changed. \
             Run `git worktree-ports repair` to rebuild it from git's worktree list and every readable record",
            paths.file.display(),
            paths.backup.display()
        ),
    )
    .with_details(json!({
        "file": paths.file.display().to_string(),
        "problem": main.to_string(),
        "backup": paths.backup.display().to_string(),
        "backup_problem": backup.to_string(),
    }))
    .into()
}

fn newer(paths: &Paths, v: u64) -> anyhow::Error {
    Error::new(
        Code::RegistryCorrupt,
        format!(
            "{} has version {v}, newer than this git-worktree-ports understands ({VERSION}); upgrade git-worktree-ports (nothing was changed)",
            paths.file.display()
        ),
    )
    .with_details(json!({"file": paths.file.display().to_string(), "version": v}))
    .into()
}

/// Decide what to use from the main file's and the backup's state. Pure, shared by the locked
/// and the lock-free load.
fn resolve(
    paths: &Paths,
    main: Result<Registry, Problem>,
    read_backup: impl FnOnce() -> anyhow::Result<Result<Registry, Problem>>,
) -> anyhow::Result<Loaded> {
    let problem = match main {
        Ok(registry) => {
            return Ok(Loaded {
                registry,
                ..Loaded::default()
            });
        }
        Err(Problem::Newer(v)) => return Err(newer(paths, v)),
        Err(p) => p,
    };
    match (problem, read_backup()?) {
        (Problem::Missing, Err(Problem::Missing)) => Ok(Loaded::default()),
        (Problem::Empty, Err(Problem::Missing | Problem::Empty)) => Ok(Loaded {
            warnings: vec![format!(
                "{} is empty and has no backup, so it never held an allocation; starting with an empty registry",
                paths.file.display()
            )],
            ..Loaded::default()
        }),
        (_, Err(Problem::Newer(v))) => Err(newer(paths, v)),
        (problem, Ok(registry)) => Ok(Loaded {
            registry,
            warnings: vec![format!(
                "{} is unusable ({problem}); recovered the last committed state from {}",
                paths.file.display(),
                paths.backup.display()
            )],
            recovered: true,
            unfinished: false,
            stamp: None,
        }),
        (problem, Err(backup)) => Err(corrupt(paths, &problem, &backup)),
    }
}

/// Load without the lock, for readers (`list`, `get`, `check`). Never writes.
pub fn load_unlocked(paths: &Paths) -> anyhow::Result<Loaded> {
    // Read through one descriptor and note which file it was: a writer that takes the lock
    // next can reuse this parse if that file is still the registry (see `Lock::reload`).
    let (main, stamp) = match File::open(&paths.file) {
        Ok(mut f) => {
            let stamp = f.metadata().ok().map(|m| Stamp::of(&m));
            let mut bytes = Vec::new();
            io::Read::read_to_end(&mut f, &mut bytes)
                .with_context(|| format!("could not read {}", paths.file.display()))?;
            (parse(&bytes), stamp)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => (Err(Problem::Missing), None),
        Err(e) => {
            return Err(e).with_context(|| format!("could not read {}", paths.file.display()));
        }
    };
    let mut loaded = resolve(paths, main, || read(&paths.backup))?;
    loaded.stamp = stamp.filter(|_| loaded.warnings.is_empty());
    // A crash between the two renames of a save leaves the backup one step behind, and a
    // crash inside a save leaves a temp file. Four stats catch both (the next locked load
    // rewrites the backup and removes the temp files).
    let len = |p: &Path| fs::metadata(p).map(|m| m.len()).ok();
    let main_len = len(&paths.file);
    loaded.unfinished = (main_len.is_some() && main_len != len(&paths.backup))
        || [&paths.file, &paths.backup]
            .iter()
            .any(|p| fs::symlink_metadata(temp_path(p)).is_ok());
    Ok(loaded)
}

/// Every file that may hold registry records, newest first: `ports.json`, `ports.json.bak`,
/// then the kept `ports.json.corrupt-*` files.
pub fn record_files(paths: &Paths) -> Vec<PathBuf> {
    let mut corrupt: Vec<PathBuf> = fs::read_dir(&paths.dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with("ports.json.corrupt-")
                })
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    // The timestamp in the name sorts by time.
    corrupt.sort();
    corrupt.reverse();
    let mut out = vec![paths.file.clone(), paths.backup.clone()];
    out.extend(corrupt);
    out
}

/// Lock timeout from [`LOCK_TIMEOUT_ENV`], else [`DEFAULT_LOCK_TIMEOUT`].
pub fn lock_timeout() -> anyhow::Result<Duration> {
    match std::env::var(LOCK_TIMEOUT_ENV) {
        Err(_) => Ok(DEFAULT_LOCK_TIMEOUT),
        Ok(s) => s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| anyhow::anyhow!("{LOCK_TIMEOUT_ENV}={s:?} is not a number of seconds")),
    }
}

/// The registry lock; released on drop (closing the file releases it, also on a crash).
#[derive(Debug)]
pub struct Lock {
    paths: Paths,
    _file: File,
}

impl Lock {
    /// Take the lock, waiting up to `timeout`; `on_wait` is called once after about a second.
    pub fn acquire(
        paths: &Paths,
        timeout: Duration,
        on_wait: &dyn Fn(&Path),
    ) -> anyhow::Result<Lock> {
        create_dirs(&paths.dir)
            .with_context(|| format!("could not create {}", paths.dir.display()))?;
        let mut opts = OpenOptions::new();
        opts.create(true).truncate(false).write(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o644);
        let file = opts
            .open(&paths.lock)
            .with_context(|| format!("could not open lock file {}", paths.lock.display()))?;
        let start = Instant::now();
        let mut told = false;
        let mut delay = Duration::from_millis(1);
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(e)) => {
                    return Err(e)
                        .with_context(|| format!("could not lock {}", paths.lock.display()));
                }
            }
            let waited = start.elapsed();
            if waited >= timeout {
                return Err(Error::new(
                    Code::LockTimeout,
                    format!(
                        "timed out after {:.1}s waiting for lock on {}; another git-worktree-ports is still running (a stuck one can be stopped safely), or raise {LOCK_TIMEOUT_ENV}",
                        timeout.as_secs_f64(),
                        paths.lock.display()
                    ),
                )
                .with_details(json!({"lock": paths.lock.display().to_string(), "timeout_secs": timeout.as_secs_f64()}))
                .into());
            }
            if !told && waited >= Duration::from_secs(1) {
                on_wait(&paths.lock);
                told = true;
            }
            std::thread::sleep(delay.min(timeout.saturating_sub(waited)));
            delay = (delay * 2).min(Duration::from_millis(20));
        }
        Ok(Lock {
            paths: paths.clone(),
            _file: file,
        })
    }

    /// Read the registry under the lock, recovering from the backup if needed (and writing
    /// the recovered state back at once, keeping the damaged file aside).
    pub fn load(&self) -> anyhow::Result<Loaded> {
        let paths = &self.paths;
        remove_temp_files(&paths.dir);
        let bytes = read_bytes(&paths.file)?;
        let main = bytes.as_deref().map_or(Err(Problem::Missing), parse);
        let damaged = matches!(main, Err(Problem::Invalid(_)));
        let mut loaded = resolve(paths, main, || read(&paths.backup))?;
        if loaded.recovered {
            if damaged {
                let aside = self.keep_aside()?;
                loaded
                    .warnings
                    .push(format!("the damaged file is kept as {}", aside.display()));
            }
            self.save(&mut loaded.registry)?;
            loaded.recovered = false;
        } else if let Some(current) = &bytes
            && fs::read(&paths.backup).ok().as_ref() != Some(current)
        {
            // ports.json is whole (it parsed) but the backup lags behind it: a crash between
            // the two renames of a save. Recovery must never go back to an older state.
            write_atomic(&paths.dir, &paths.backup, current, "backup")?;
        }
        Ok(loaded)
    }

    /// The registry to write: `unlocked` itself when `ports.json` is still the file it was
    /// parsed from (a 10,000-worktree registry is not parsed twice), else a fresh `load`.
    pub fn reload(&self, unlocked: Loaded) -> anyhow::Result<Loaded> {
        let current = fs::metadata(&self.paths.file).ok().map(|m| Stamp::of(&m));
        if unlocked.stamp.is_none() || unlocked.stamp != current {
            return self.load();
        }
        remove_temp_files(&self.paths.dir);
        if unlocked.unfinished {
            let bytes = fs::read(&self.paths.file)
                .with_context(|| format!("could not read {}", self.paths.file.display()))?;
            write_atomic(&self.paths.dir, &self.paths.backup, &bytes, "backup")?;
        }
        Ok(unlocked)
    }

    /// Move a damaged `ports.json` aside as `ports.json.corrupt-<time>` (never deleted).
    pub fn keep_aside(&self) -> anyhow::Result<PathBuf> {
        let aside = self
            .paths
            .dir
            .join(format!("ports.json.corrupt-{}", timestamp_for_file()));
        fs::rename(&self.paths.file, &aside)
            .with_context(|| format!("could not move {} aside", self.paths.file.display()))?;
        Ok(aside)
    }

    /// Atomically replace `ports.json` (then its backup) with `registry`.
    pub fn save(&self, registry: &mut Registry) -> anyhow::Result<()> {
        registry.version = VERSION;
        registry.trim_history();
        let bytes = registry.to_bytes();
        write_atomic(&self.paths.dir, &self.paths.file, &bytes, "registry")?;
        write_atomic(&self.paths.dir, &self.paths.backup, &bytes, "backup")?;
        Ok(())
    }
}

/// `create_dir_all` with 0755 for what it creates (std's 0777 less a umask of 000 would be
/// world-writable).
pub fn create_dirs(path: &Path) -> io::Result<()> {
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o755);
    b.create(path)
}

/// A new file, readable by all and writable by its owner only. std's default is 0666 less the
/// umask, which a umask of 000 leaves world-writable; 0644 less any umask never is.
pub fn new_file(path: &Path) -> io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o644);
    opts.open(path)
}

/// Where a save writes `target` before renaming it: one fixed name, since only the holder of
/// the lock writes, so a lock-free reader can tell a crashed save with one stat.
fn temp_path(target: &Path) -> PathBuf {
    let mut name = target.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

/// Temp files are only written under the lock, so any found by a lock holder are leftovers
/// of a writer that died.
fn remove_temp_files(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // `.tmp.<pid>`: the names earlier versions wrote.
        if name.starts_with("ports.json") && (name.ends_with(".tmp") || name.contains(".tmp.")) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Temp file (`create_new`), write, fsync, rename over `target`, fsync the directory; for the
/// backup (`what` = "backup"): no fsyncs, and an exchange of names instead of the rename.
/// `what` names the crash points: `<what>.temp-written`, `.synced`, `.renamed`.
fn write_atomic(dir: &Path, target: &Path, bytes: &[u8], what: &str) -> anyhow::Result<()> {
    let tmp = temp_path(target);
    // The backup is not fsynced: it only matters if ports.json is damaged later, and a crash
    // cannot damage ports.json (fsynced before its rename). A backup a crash loses is rewritten
    // from ports.json by the next command that locks. Its fsyncs were a third of a save.
    let durable = what != "backup";
    let result = (|| -> io::Result<()> {
        // Only the lock holder writes here, so a file at this name is a dead writer's.
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut f = new_file(&tmp)?;
        f.write_all(bytes)?;
        fault::point(&format!("{what}.temp-written"));
        if durable {
            f.sync_all()?;
        }
        drop(f);
        fault::point(&format!("{what}.synced"));
        let exchanged = !durable && exchange(&tmp, target);
        if !exchanged {
            fs::rename(&tmp, target)?;
        }
        if durable {
            // The rename is durable only once the directory is.
            File::open(dir)?.sync_all()?;
        }
        fault::point(&format!("{what}.renamed"));
        if exchanged {
            // The temp file now holds the old backup; a crash before this leaves it for the
            // next locked command's cleanup.
            fs::remove_file(&tmp)?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| format!("could not write {}", target.display()))
}

/// Swap two files' names atomically (Linux `renameat2(RENAME_EXCHANGE)`); false when the
/// system or file system cannot, or `b` does not exist yet. Used for the backup, which is not
/// fsynced: replacing an existing file by a rename makes ext4 write the new one out at once
/// (`auto_da_alloc`), 3.9 ms for a 2.4 MB backup against 1.0 ms for exchange + unlink. Either
/// way the name always holds a whole file.
#[cfg(all(target_os = "linux", any(target_env = "gnu", target_env = "musl")))]
fn exchange(a: &Path, b: &Path) -> bool {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let (Ok(a), Ok(b)) = (
        CString::new(a.as_os_str().as_bytes()),
        CString::new(b.as_os_str().as_bytes()),
    ) else {
        return false;
    };
    // SAFETY: two valid NUL-terminated paths, relative to the working directory.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    rc == 0
}

#[cfg(not(all(target_os = "linux", any(target_env = "gnu", target_env = "musl"))))]
fn exchange(_: &Path, _: &Path) -> bool {
    false
}

/// Seconds since the epoch, as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn now_rfc3339() -> String {
    let (y, mo, d, h, mi, s) = civil(SystemTime::now());
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

fn timestamp_for_file() -> String {
    let (y, mo, d, h, mi, s) = civil(SystemTime::now());
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}.{nanos:09}Z")
}

/// UTC date and time (Howard Hinnant's days-to-civil algorithm).
fn civil(t: SystemTime) -> (i64, u32, u32, u32, u32, u32) {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        m,
        d,
        (rem / 3600) as u32,
        (rem % 3600 / 60) as u32,
        (rem % 60) as u32,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths() -> (tempfile::TempDir, Paths) {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        (dir, paths)
    }

    fn sample() -> Registry {
        let mut r = Registry::default();
        r.allocated_ports
            .entry("main".into())
            .or_default()
            .insert("web", 8080);
        r
    }

    fn lock(paths: &Paths) -> Lock {
        Lock::acquire(paths, Duration::from_secs(5), &|_| {}).unwrap()
    }

    #[test]
    fn reads_the_seed_format_without_version_and_keeps_unknown_keys() {
        let seed = br#"{"port_ranges": {"web": [8080, 8099]},
            "allocated_ports": {"main": {"web": 8080}, "feature-login": {"web": 8081}},
            "owner": "team-a"}"#;
        let r = parse(seed).unwrap();
        assert_eq!(r.version, 1);
        assert_eq!(r.allocated_ports["feature-login"].get("web"), Some(8081));
        let round: Value = serde_json::from_slice(&r.to_bytes()).unwrap();
        assert_eq!(round["owner"], "team-a");
        assert_eq!(round["allocated_ports"]["main"]["web"], 8080);
        assert_eq!(round["version"], 1);
    }

    #[test]
    fn ports_read_like_a_map_and_share_service_names() {
        let r = parse(
            br#"{"allocated_ports": {"a": {"web": 8080, "db": 5432},
                "b": {"db": 5433, "web": 8081, "db": 5434}}}"#,
        )
        .unwrap();
        // Sorted by service; a service named twice keeps its last port, as a map would.
        let b: Vec<(&str, u16)> = r.allocated_ports["b"].iter().collect();
        assert_eq!(b, [("db", 5434), ("web", 8081)]);
        let a = &r.allocated_ports["a"];
        assert_eq!(
            (a.get("db"), a.get("web"), a.get("api")),
            (Some(5432), Some(8080), None)
        );
        // One copy of each name, however many worktrees use it.
        assert!(Arc::ptr_eq(&a.0[0].0, &r.allocated_ports["b"].0[0].0));
        let round: Value = serde_json::from_slice(&r.to_bytes()).unwrap();
        assert_eq!(
            round["allocated_ports"]["b"],
            json!({"db": 5434, "web": 8081})
        );

        let mut p = Ports::default();
        assert_eq!(p.insert("web", 8080), None);
        assert_eq!(p.insert("api", 3000), None);
        assert_eq!(p.insert("web", 8090), Some(8080));
        assert_eq!(
            p.to_map(),
            BTreeMap::from([("api".into(), 3000), ("web".into(), 8090)])
        );
        assert_eq!(p.remove("api"), Some(3000));
        assert_eq!((p.remove("api"), p.len()), (None, 1));
    }

    #[test]
    fn to_bytes_allocates_its_buffer_once() {
        let mut r = Registry::default();
        for i in 0..500u16 {
            let ports = BTreeMap::from([("web".to_string(), 2000 + i), ("db".into(), 3000 + i)]);
            r.allocated_ports
                .insert(format!("wt-{i}"), Ports::from(&ports));
            r.record("assigned", &format!("wt-{i}"), Some("web"), Some(2000 + i));
        }
        let bytes = r.to_bytes();
        assert!(
            bytes.len() <= r.size_hint(),
            "{} > {}",
            bytes.len(),
            r.size_hint()
        );
        assert!(r.size_hint() < bytes.len() + bytes.len() / 4 + 1024);
    }

    #[test]
    fn a_save_replaces_temp_files_a_crashed_save_left() {
        // `repair` saves without a `load`, which is what removes them otherwise.
        let (_d, paths) = paths();
        fs::create_dir_all(&paths.dir).unwrap();
        fs::write(paths.dir.join("ports.json.tmp"), b"half").unwrap();
        fs::write(paths.dir.join("ports.json.bak.tmp"), b"half").unwrap();
        lock(&paths).save(&mut sample()).unwrap();
        assert_eq!(read(&paths.file).unwrap().unwrap(), sample());
        assert!(!paths.dir.join("ports.json.tmp").exists());
        assert!(!paths.dir.join("ports.json.bak.tmp").exists());
    }

    #[test]
    fn problems_are_classified() {
        assert_eq!(parse(b"").unwrap_err(), Problem::Empty);
        assert_eq!(parse(b" \n").unwrap_err(), Problem::Empty);
        assert!(matches!(
            parse(b"{\"allocated_ports\": {"),
            Err(Problem::Invalid(_))
        ));
        assert!(matches!(
            parse(b"\x00\xffgarbage"),
            Err(Problem::Invalid(_))
        ));
        assert!(matches!(parse(b"[1, 2]"), Err(Problem::Invalid(_))));
        assert!(matches!(
            parse(br#"{"allocated_ports": {"a": {"web": 8080}, "b": {"web": 8080}}}"#),
            Err(Problem::Invalid(m)) if m.contains("registered twice")
        ));
        assert!(matches!(
            parse(br#"{"allocated_ports": {"a": {"web": 80}}}"#),
            Err(Problem::Invalid(m)) if m.contains("outside")
        ));
        assert!(matches!(
            parse(br#"{"allocated_ports": {"a": {"web": 70000}}}"#),
            Err(Problem::Invalid(_))
        ));
        assert_eq!(parse(br#"{"version": 2}"#).unwrap_err(), Problem::Newer(2));
    }

    #[test]
    fn save_writes_file_and_identical_backup_and_no_temp_files() {
        let (_d, paths) = paths();
        let l = lock(&paths);
        let mut r = sample();
        l.save(&mut r).unwrap();
        assert_eq!(
            fs::read(&paths.file).unwrap(),
            fs::read(&paths.backup).unwrap()
        );
        let names: Vec<String> = fs::read_dir(&paths.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.contains(".tmp")), "{names:?}");
        assert_eq!(l.load().unwrap().registry, r);
    }

    #[test]
    fn damaged_file_recovers_from_backup_and_is_kept_aside() {
        let (_d, paths) = paths();
        let l = lock(&paths);
        let mut r = sample();
        l.save(&mut r).unwrap();
        fs::write(&paths.file, b"{\"allocated_ports\": {\"main\": {\"we").unwrap();
        let loaded = l.load().unwrap();
        assert_eq!(loaded.registry.allocated_ports, r.allocated_ports);
        assert!(
            loaded.warnings[0].contains("recovered"),
            "{:?}",
            loaded.warnings
        );
        // Written back at once, damaged copy kept.
        assert!(parse(&fs::read(&paths.file).unwrap()).is_ok());
        let aside = fs::read_dir(&paths.dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains("corrupt-")
            })
            .count();
        assert_eq!(aside, 1);
    }

    #[test]
    fn both_damaged_is_refused_and_nothing_changes() {
        let (_d, paths) = paths();
        let l = lock(&paths);
        fs::write(&paths.file, b"garbage").unwrap();
        fs::write(&paths.backup, b"more garbage").unwrap();
        let err = l.load().unwrap_err();
        assert_eq!(crate::error::classify(&err).code, Code::RegistryCorrupt);
        assert_eq!(fs::read(&paths.file).unwrap(), b"garbage");
        assert_eq!(fs::read(&paths.backup).unwrap(), b"more garbage");
        // Damaged file without any backup: refused too, never "empty".
        fs::remove_file(&paths.backup).unwrap();
        assert!(l.load().is_err());
        assert!(load_unlocked(&paths).is_err());
    }

    #[test]
    fn empty_file_without_backup_is_an_empty_registry_with_a_warning() {
        let (_d, paths) = paths();
        let l = lock(&paths);
        fs::write(&paths.file, b"").unwrap();
        let loaded = l.load().unwrap();
        assert!(loaded.registry.allocated_ports.is_empty());
        assert_eq!(loaded.warnings.len(), 1);
        // With a backup, the backup wins.
        let mut r = sample();
        l.save(&mut r).unwrap();
        fs::write(&paths.file, b"").unwrap();
        assert_eq!(
            l.load().unwrap().registry.allocated_ports,
            r.allocated_ports
        );
    }

    #[test]
    fn newer_version_is_refused_not_recovered() {
        let (_d, paths) = paths();
        let l = lock(&paths);
        l.save(&mut sample()).unwrap();
        fs::write(&paths.file, br#"{"version": 9, "allocated_ports": {}}"#).unwrap();
        let err = l.load().unwrap_err();
        assert!(format!("{err}").contains("upgrade"), "{err}");
        assert!(
            fs::read(&paths.file)
                .unwrap()
                .starts_with(b"{\"version\": 9")
        );
    }

    #[test]
    fn leftover_temp_files_are_removed_under_the_lock() {
        let (_d, paths) = paths();
        let l = lock(&paths);
        fs::write(paths.dir.join("ports.json.tmp.99999"), b"half").unwrap();
        l.load().unwrap();
        assert!(!paths.dir.join("ports.json.tmp.99999").exists());
    }

    #[test]
    fn second_locker_times_out_with_lock_timeout() {
        let (_d, paths) = paths();
        let _held = lock(&paths);
        let err = Lock::acquire(&paths, Duration::from_millis(50), &|_| {}).unwrap_err();
        assert_eq!(crate::error::classify(&err).code, Code::LockTimeout);
    }

    #[test]
    fn history_is_bounded() {
        let (_d, paths) = paths();
        let l = lock(&paths);
        let mut r = sample();
        for i in 0..HISTORY_LIMIT + 10 {
            r.record("assigned", &format!("w{i}"), Some("web"), Some(2000));
        }
        l.save(&mut r).unwrap();
        let back = l.load().unwrap().registry;
        assert_eq!(back.history.len(), HISTORY_LIMIT);
        let first: Value = serde_json::from_str(back.history[0].get()).unwrap();
        assert_eq!(first["worktree"], "w10");
    }

    #[test]
    fn civil_time_is_correct() {
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(civil(t), (2023, 11, 14, 22, 13, 20));
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(civil(t), (2000, 2, 29, 0, 0, 0));
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// Arbitrary bytes never panic the registry parser or the salvage scan.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in any::<Vec<u8>>()) {
            let _ = parse(&bytes);
            let _ = crate::salvage::allocated_ports(&bytes);
        }

        /// Registry-shaped JSON: what parses upholds the invariants the allocator relies on.
        #[test]
        fn registry_shaped_json(
            text in r#"\{("version": -?[0-9]{1,3}, )?"allocated_ports": \{("[a-z/]{0,3}": \{("[a-z]{0,3}": -?[0-9]{1,6},? ?){0,3}\},? ?){0,4}\}(, "port_ranges": \{("[a-z]{1,3}": \[[0-9]{1,6}, [0-9]{1,6}\],? ?){0,2}\})?\}"#
        ) {
            let _ = crate::salvage::allocated_ports(text.as_bytes());
            if let Ok(reg) = parse(text.as_bytes()) {
                let mut seen = std::collections::HashSet::new();
                for ports in reg.allocated_ports.values() {
                    for (_, p) in ports.iter() {
                        prop_assert!(p >= MIN_PORT);
                        prop_assert!(seen.insert(p));
                    }
                }
            }
        }
    }
}
