//! Bytes <-> [`Registry`]: the measured fast path of reading and writing `ports.json`, kept
//! apart from the model so that the model reads in five minutes.
//!
//! Deserialized by hand: `#[serde(flatten)]` (to keep unknown keys) makes serde buffer the whole
//! input into an intermediate tree first, once for the document and once per worktree record,
//! which made parsing a 10,000-worktree registry 4x slower. These visitors read each value once.
//! Written compact: pretty printing made a 10,000-worktree registry 37% larger, 27% slower to
//! parse and 45% slower to write; `jq . ports.json` shows it indented.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::allocations::Allocations;
use super::one::{plain_key, plain_port};
use super::ports::Shapes;
use super::records::Records;
use super::{Key, Ports, RecordJson, Registry, Text, VERSION, WorktreeRecord};
use crate::sys::fsio::{Bytes, FileText};

impl Serialize for super::Raw {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for super::Raw {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Box::<RawValue>::deserialize(d).map(super::Raw)
    }
}

/// Reads a worktree key: a span of the file's text (`.0`) when it is written there without
/// escapes, else a copy.
struct KeySeed<'f>(Option<&'f Arc<FileText>>);

impl<'de> serde::de::DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Key;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Key, D::Error> {
        let Name(name) = Name::deserialize(d)?;
        Ok(match (name, self.0) {
            (Cow::Borrowed(text), Some(file)) => Key(Text::read(file, text)),
            (name, _) => Key::from(&*name),
        })
    }
}

/// Reads `allocated_ports`, sharing each service name among all worktrees; keys are spans of
/// the file's text (`.0`) where they can be.
struct AllocatedPorts<'f>(Option<&'f Arc<FileText>>);

impl<'de> serde::de::DeserializeSeed<'de> for AllocatedPorts<'_> {
    type Value = Allocations;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for AllocatedPorts<'_> {
    type Value = Allocations;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object of worktrees")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut shapes = Shapes::default();
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0));
        while let Some(key) = map.next_key_seed(KeySeed(self.0))? {
            let ports = map.next_value_seed(PortsSeed(&mut shapes)).map_err(|e| {
                serde::de::Error::custom(format!("worktree {:?}: {e}", key.as_str()))
            })?;
            entries.push((key, ports));
        }
        let sorted = entries.windows(2).all(|w| w[0].0 < w[1].0);
        Allocations::from_read(entries, sorted).map_err(serde::de::Error::custom)
    }
}

/// `allocated_ports` from its text (`text`, a part of `file`, already checked to be JSON):
/// written compact, as the tool writes it, it is read by [`compact_allocated`]; anything else
/// by serde (both refuse the same damage: a key or a service named twice).
fn allocated_ports(file: &Arc<FileText>, text: &str) -> Result<Allocations, String> {
    let mut shapes = Shapes::default();
    if let Some(read) = compact_allocated(file, text, &mut shapes) {
        return read;
    }
    let mut de = serde_json::Deserializer::from_str(text);
    serde::de::DeserializeSeed::deserialize(AllocatedPorts(Some(file)), &mut de)
        .map_err(|e| e.to_string())
}

/// `{"key":{"svc":port,...},...}` with no white space, plain ASCII names (no escapes) and
/// ports of 1 to 5 digits: what the tool writes. Reading it by hand took a quarter of the
/// time serde took for a 10,000-worktree registry, most of it not spent on allocations. None
/// for anything else (the caller uses serde); Some(Err) for a service named twice.
fn compact_allocated(
    file: &Arc<FileText>,
    text: &str,
    shapes: &mut Shapes,
) -> Option<Result<Allocations, String>> {
    match compact_allocated_prefix(file, text, shapes)? {
        (Ok(entries), end) => (end == text.len()).then_some(Ok(entries)),
        (Err(e), _) => Some(Err(e)),
    }
}

/// [`compact_allocated`] of the object that starts `text` (more may follow it), and where it
/// ends.
pub(super) fn compact_allocated_prefix(
    file: &Arc<FileText>,
    text: &str,
    shapes: &mut Shapes,
) -> Option<(Result<Allocations, String>, usize)> {
    let b = text.as_bytes();
    // Room for the worktrees of the text at 64 bytes each (the pages not written to are never
    // touched): no copies as the vector grows.
    let mut entries = Vec::with_capacity(text.len() / 64);
    // Whether every key was greater than the one before, as the tool writes them.
    let (mut sorted, mut last) = (true, "");
    // One worktree's services and ports, as read.
    let (mut names, mut ports) = (Vec::with_capacity(16), Vec::with_capacity(16));
    let mut at = 1;
    if b.first() != Some(&b'{') {
        return None;
    }
    if b.get(1) == Some(&b'}') {
        return Some((Ok(Allocations::default()), 2));
    }
    loop {
        // `"key":{`
        let n = plain_key(b.get(at..)?)?;
        let name = &text[at + 1..at + 1 + n];
        sorted &= entries.is_empty() || last < name;
        last = name;
        let key = Key(Text::read(file, name));
        at += n + 3;
        if b.get(at) != Some(&b'{') {
            return None;
        }
        let object = at;
        at += 1;
        names.clear();
        ports.clear();
        if b.get(at) == Some(&b'}') {
            at += 1;
        } else {
            loop {
                // `"svc":port` then `,` or `}`
                let n = plain_key(b.get(at..)?)?;
                names.push(&text[at + 1..at + 1 + n]);
                at += n + 3;
                let (port, len) = plain_port(b.get(at..)?)?;
                ports.push(port);
                at += len + 1;
                match b.get(at - 1) {
                    Some(b',') => continue,
                    Some(b'}') => break,
                    _ => return None,
                }
            }
        }
        let Some(read) = shapes.ports(&names, &ports, u32::try_from(at - object).ok()) else {
            let key = key.as_str();
            let e = format!("worktree {key:?}: a service is named twice");
            return Some((Err(e), at));
        };
        entries.push((key, read));
        at += 1;
        match b.get(at - 1) {
            Some(b',') => continue,
            Some(b'}') => return Some((Allocations::from_read(entries, sorted), at)),
            _ => return None,
        }
    }
}

/// Reads one worktree's ports, sharing its list of services through `.0`.
struct PortsSeed<'n>(&'n mut Shapes);

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
        let (mut names, mut ports) = (Vec::new(), Vec::new());
        while let Some(Name(name)) = map.next_key()? {
            ports.push(map.next_value::<u16>()?);
            names.push(name);
        }
        (self.0.ports(&names, &ports, None))
            .ok_or_else(|| serde::de::Error::custom("a service is named twice"))
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

/// Reads a whole registry from the text of `.0`: records and history entries are kept as
/// spans of it ([`Text`]), not copied.
struct RegistrySeed<'f>(&'f Arc<FileText>);

impl<'de> serde::de::DeserializeSeed<'de> for RegistrySeed<'_> {
    type Value = Registry;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Registry, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for RegistrySeed<'_> {
    type Value = Registry;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a registry object")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Registry, A::Error> {
        let mut reg = Registry::default();
        let mut seen = [false; 5];
        while let Some(key) = map.next_key::<String>()? {
            if seen_twice(&mut seen, &reg, &key) {
                return Err(serde::de::Error::custom(format!(
                    "the key {key:?} appears twice"
                )));
            }
            match key.as_str() {
                "version" => reg.version = map.next_value()?,
                "port_ranges" => reg.port_ranges = map.next_value::<Sorted<_>>()?.0,
                "allocated_ports" => {
                    let raw: &'de RawValue = map.next_value()?;
                    reg.allocated_ports =
                        allocated_ports(self.0, raw.get()).map_err(serde::de::Error::custom)?;
                }
                "worktrees" => {
                    reg.worktrees = Records::from_map(map.next_value_seed(RecordsSeed(self.0))?)
                }
                "history" => reg.history = map.next_value_seed(HistorySeed(self.0))?,
                _ => {
                    let value = map.next_value()?;
                    reg.extra.insert(key, value);
                }
            }
        }
        Ok(reg)
    }
}

/// True when the document named `key` before (the keys read into fields are marked in
/// `seen`, the others are in `reg.extra`); marks it. A key named twice is refused: keeping
/// either value would silently drop the other.
pub(super) fn seen_twice(seen: &mut [bool; 5], reg: &Registry, key: &str) -> bool {
    let known = [
        "version",
        "port_ranges",
        "allocated_ports",
        "worktrees",
        "history",
    ];
    match known.iter().position(|k| *k == key) {
        Some(i) => std::mem::replace(&mut seen[i], true),
        None => reg.extra.contains_key(key),
    }
}

/// Reads `worktrees`: each record a span of the file's text.
struct RecordsSeed<'f>(&'f Arc<FileText>);

impl<'de> serde::de::DeserializeSeed<'de> for RecordsSeed<'_> {
    type Value = BTreeMap<Key, RecordJson>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for RecordsSeed<'_> {
    type Value = BTreeMap<Key, RecordJson>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object of worktree records")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0));
        while let Some(key) = map.next_key_seed(KeySeed(Some(self.0)))? {
            let raw: &'de RawValue = map.next_value()?;
            entries.push((key, RecordJson(Text::read(self.0, raw.get()))));
        }
        unique_map(entries, "an object")
    }
}

/// Reads `history`: each entry a span of the file's text.
struct HistorySeed<'f>(&'f Arc<FileText>);

impl<'de> serde::de::DeserializeSeed<'de> for HistorySeed<'_> {
    type Value = Vec<Text>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for HistorySeed<'_> {
    type Value = Vec<Text>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of history entries")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut entries = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(raw) = seq.next_element::<&'de RawValue>()? {
            entries.push(Text::read(self.0, raw.get()));
        }
        Ok(entries)
    }
}

/// Entries into a map, refusing a key named twice (a hand-merged file with two objects for
/// one worktree): silently keeping one of them would drop the other's ports and hand them out
/// again. Built in bulk: std sorts, which is linear for the already sorted keys the tool writes
/// (inserting one by one walked the tree with string compares 70,000 times for 10,000
/// worktrees).
pub(super) fn unique_map<K: Ord, V, E: serde::de::Error>(
    entries: Vec<(K, V)>,
    what: &str,
) -> Result<BTreeMap<K, V>, E> {
    let n = entries.len();
    let map: BTreeMap<K, V> = entries.into_iter().collect();
    if map.len() == n {
        return Ok(map);
    }
    Err(E::custom(format!("{what} names a key twice")))
}

/// A JSON object of string keys read into a `BTreeMap` in bulk ([`unique_map`]).
pub(super) struct Sorted<V>(pub(super) BTreeMap<String, V>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Sorted<V> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> serde::de::Visitor<'de> for Visit<V> {
            type Value = Sorted<V>;
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
                unique_map(entries, "an object").map(Sorted)
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
                let mut id = None;
                let mut compose = None;
                let mut slot = None;
                let mut hostname = None;
                let mut extra = BTreeMap::new();
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "path" => path = Some(map.next_value()?),
                        "branch" => branch = map.next_value()?,
                        "allocated_at" => allocated_at = map.next_value()?,
                        "id" => id = map.next_value()?,
                        "compose_project_name" => compose = map.next_value()?,
                        "slot" => slot = map.next_value()?,
                        "hostname" => hostname = map.next_value()?,
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
                    id,
                    compose_project_name: compose,
                    slot,
                    hostname,
                    extra,
                })
            }
        }
        d.deserialize_map(Visit)
    }
}

impl Registry {
    /// Serialize as written to disk: compact JSON and a newline. Pretty printing made a
    /// 10,000-worktree registry 37% larger, 27% slower to parse and 45% slower to write;
    /// `jq . ports.json` shows it indented.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Sink {
            out: Vec::with_capacity(self.size_hint()),
            to: None,
        };
        self.write(&mut out)
            .expect("writing to memory does not fail");
        out.out
    }

    /// [`Registry::to_bytes`], into `to` through a buffer of 256 KiB (a 10,000-worktree
    /// registry's 2.4 MB built in fresh memory first were 600 page faults).
    pub fn write_to(&self, to: &mut dyn Write) -> std::io::Result<()> {
        // A small registry's few KB, not a chunk's 320 KB (which malloc maps and unmaps).
        let mut out = Sink {
            out: Vec::with_capacity(self.size_hint_up_to(CHUNK).min(CHUNK + 64 * 1024)),
            to: Some(to),
        };
        self.write(&mut out)?;
        out.flush()
    }

    fn write(&self, sink: &mut Sink<'_>) -> std::io::Result<()> {
        fn put<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
            serde_json::to_writer(out, value).expect("a registry value serializes");
        }
        let out = &mut sink.out;
        out.extend_from_slice(b"{\"version\":");
        put(out, &self.version);
        out.extend_from_slice(b",\"port_ranges\":");
        put(out, &self.port_ranges);
        out.extend_from_slice(b",\"allocated_ports\":");
        write_allocated(sink, &self.allocated_ports)?;
        if let Some(at) = self.write_apart {
            // The records are in their own file ([`super::apart`]).
            sink.out.extend_from_slice(b",\"records\":");
            put(&mut sink.out, &at);
            sink.out.extend_from_slice(b",\"history\":[]");
            return self.write_extra(sink);
        }
        // Records and history entries are written as the text they were read as or made.
        // A key read without escapes, its record right after it: copied from the file.
        sink.out.extend_from_slice(b",\"worktrees\":{");
        let mut run = Run::default();
        for (i, item) in self.worktrees.iter().enumerate() {
            if let Some((file, from, to)) = item.read {
                run.entry(sink, file, i > 0, from, to)?;
                continue;
            }
            if let Some((key, record)) = item.own
                && let (Some((file, start, end)), Some((f, from, to))) =
                    (key.0.span(), record.0.span())
                && Arc::ptr_eq(file, f)
                && quoted_key_at(file, start, end)
                && from == end + 2
                && file.as_bytes()[end + 1] == b':'
            {
                run.entry(sink, file, i > 0, start - 1, to)?;
                continue;
            }
            run.flush(sink)?;
            if i > 0 {
                sink.out.push(b',');
            }
            write_str(&mut sink.out, item.key);
            sink.out.push(b':');
            sink.out.extend_from_slice(item.raw.as_bytes());
            sink.spill()?;
        }
        run.flush(sink)?;
        sink.out.extend_from_slice(b"},\"history\":[");
        for (i, entry) in self.history.iter().enumerate() {
            match entry.span() {
                Some((file, start, end)) => run.entry(sink, file, i > 0, start, end)?,
                None => {
                    run.flush(sink)?;
                    if i > 0 {
                        sink.out.push(b',');
                    }
                    sink.out.extend_from_slice(entry.get().as_bytes());
                    sink.spill()?;
                }
            }
        }
        run.flush(sink)?;
        sink.out.push(b']');
        self.write_extra(sink)
    }

    /// The keys this version does not know, and the document's end. With the records apart,
    /// a `records` key an earlier layout kept as unknown gives way to the one written.
    fn write_extra(&self, sink: &mut Sink<'_>) -> std::io::Result<()> {
        fn put<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
            serde_json::to_writer(out, value).expect("a registry value serializes");
        }
        let apart = self.write_apart.is_some();
        for (key, value) in (self.extra.iter()).filter(|(k, _)| !(apart && *k == super::apart::KEY))
        {
            sink.out.push(b',');
            put(&mut sink.out, key);
            sink.out.push(b':');
            put(&mut sink.out, value);
            sink.spill()?;
        }
        sink.out.extend_from_slice(b"}\n");
        Ok(())
    }

    /// About the size of [`Registry::to_bytes`], so that the buffer is allocated once instead
    /// of doubling (and copying) its way to 2.4 MB for 10,000 worktrees.
    fn size_hint(&self) -> usize {
        self.size_hint_up_to(usize::MAX)
    }

    /// [`Registry::size_hint`], counted only until it passes `limit` (a save's buffer is at
    /// most a chunk: a large registry is not passed over whole to learn that).
    fn size_hint_up_to(&self, limit: usize) -> usize {
        // Quotes, colons, commas and braces: a few bytes per entry; a port is at most 5 digits.
        let ports = (self.allocated_ports.iter())
            .map(|(k, p)| k.as_str().len() + 6 + p.iter().map(|(s, _)| s.len() + 9).sum::<usize>());
        let records = (self.worktrees.iter()).map(|r| r.key.len() + 4 + r.raw.len());
        let history = self.history.iter().map(|h| h.get().len() + 1);
        let mut total = 1024;
        for n in ports.chain(records).chain(history) {
            total += n;
            if total > limit {
                break;
            }
        }
        total
    }

    /// Prepare for a save: the number of the version it writes.
    pub(super) fn prepare_save(&mut self) {
        self.version = match self.write_apart {
            Some(_) => super::apart::VERSION,
            None => super::INLINE_VERSION,
        };
    }
}

/// `allocated_ports` as serde_json writes it, by hand: 50,000 ports through serde were a
/// quarter of writing a 10,000-worktree registry.
fn write_allocated(sink: &mut Sink<'_>, allocated: &Allocations) -> std::io::Result<()> {
    sink.out.push(b'{');
    let mut run = Run::default();
    for (i, (key, ports)) in allocated.iter().enumerate() {
        // Ports that the file wrote as this would, after the key: copied from it.
        if let (Some((file, start, end)), Some(len)) = (key.0.span(), ports.read_len())
            && quoted_key_at(file, start, end)
            && file.as_bytes().get(end + 1..end + 3) == Some(b":{")
            && file.as_bytes().get(end + 1 + len) == Some(&b'}')
        {
            run.entry(sink, file, i > 0, start - 1, end + 2 + len)?;
            continue;
        }
        run.flush(sink)?;
        sink.spill()?;
        let out = &mut sink.out;
        if i > 0 {
            out.push(b',');
        }
        write_str(out, key.as_str());
        out.extend_from_slice(b":{");
        for (j, (service, port)) in ports.iter().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            write_str(out, service);
            out.push(b':');
            let (mut digits, mut n, mut at) = ([0u8; 5], port, 5);
            loop {
                at -= 1;
                digits[at] = b'0' + (n % 10) as u8;
                n /= 10;
                if n == 0 {
                    break;
                }
            }
            out.extend_from_slice(&digits[at..]);
        }
        out.push(b'}');
    }
    run.flush(sink)?;
    sink.out.push(b'}');
    Ok(())
}

#[cfg(test)]
thread_local! {
    /// Bytes [`Run`]s copied on this thread (a test checks that a save copies what it can).
    static COPIED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// True for a byte a JSON string cannot hold as it is: a quote, a backslash or a control
/// character. serde_json escapes exactly these when it writes a string, and a reader's run of
/// plain bytes inside a string ends at the first of them.
pub(super) const fn ends_raw(c: u8) -> bool {
    c == b'"' || c == b'\\' || c < 0x20
}

/// `file[start..end]` is a key that a save writes as the file has it: between quotes, with
/// nothing to escape.
fn quoted_key_at(file: &FileText, start: usize, end: usize) -> bool {
    let b = file.as_bytes();
    start > 0
        && b.get(start - 1) == Some(&b'"')
        && b.get(end) == Some(&b'"')
        && !b[start..end].iter().any(|&c| ends_raw(c))
}

/// Bytes of a file read, copied as one piece for as long as what is copied follows itself
/// there: a save of a 10,000-worktree registry that changed one worktree copies its other
/// entries in a few pieces instead of writing 10,000 of them again. What it copies is what
/// writing would have written, byte for byte (checked before each copy, and by a test).
#[derive(Default)]
struct Run<'f> {
    file: Option<&'f FileText>,
    start: usize,
    end: usize,
}

impl<'f> Run<'f> {
    /// An entry of an object or array: `file[start..end]`, after a comma when it is not the
    /// first (the file's own comma when it has one just before).
    fn entry(
        &mut self,
        sink: &mut Sink<'_>,
        file: &'f FileText,
        comma: bool,
        start: usize,
        end: usize,
    ) -> std::io::Result<()> {
        let follows = self.file.is_some_and(|f| std::ptr::eq(f, file)) && self.end + 1 == start;
        if comma && follows && file.as_bytes()[self.end] == b',' {
            self.end = end;
            return Ok(());
        }
        self.flush(sink)?;
        if comma {
            sink.out.push(b',');
        }
        *self = Run {
            file: Some(file),
            start,
            end,
        };
        Ok(())
    }

    /// Copy what is pending.
    fn flush(&mut self, sink: &mut Sink<'_>) -> std::io::Result<()> {
        match self.file.take() {
            Some(file) => {
                #[cfg(test)]
                COPIED.set(COPIED.get() + (self.end - self.start));
                sink.copy(&file.as_bytes()[self.start..self.end])
            }
            None => Ok(()),
        }
    }
}

/// How much [`Registry::write_to`] gathers before writing it out.
const CHUNK: usize = 256 * 1024;

/// Where a registry is written: memory, or a writer fed a chunk at a time.
struct Sink<'w> {
    out: Vec<u8>,
    to: Option<&'w mut dyn Write>,
}

impl Sink<'_> {
    /// Hand a full chunk to the writer (memory keeps it all).
    #[inline]
    fn spill(&mut self) -> std::io::Result<()> {
        match &mut self.to {
            Some(to) if self.out.len() >= CHUNK => {
                to.write_all(&self.out)?;
                self.out.clear();
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Bytes copied as they are: handed to the writer directly when they are large.
    fn copy(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match &mut self.to {
            Some(to) if bytes.len() >= CHUNK / 4 => {
                to.write_all(&self.out)?;
                self.out.clear();
                to.write_all(bytes)
            }
            _ => {
                self.out.extend_from_slice(bytes);
                self.spill()
            }
        }
    }

    /// Hand what is left to the writer.
    fn flush(&mut self) -> std::io::Result<()> {
        if let Some(to) = &mut self.to {
            to.write_all(&self.out)?;
            self.out.clear();
        }
        Ok(())
    }
}

/// A JSON string as serde_json writes it: quoted, and escaped only where it has a quote, a
/// backslash or a control character (serde_json escapes nothing else).
pub(super) fn write_str(out: &mut Vec<u8>, s: &str) {
    if s.bytes().any(ends_raw) {
        serde_json::to_writer(out, s).expect("a string serializes");
        return;
    }
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
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
    /// The records' file a registry names is gone (a reader without the lock may have read
    /// `ports.json` just before a save replaced that file: it reads again).
    RecordsGone(String),
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Missing => f.write_str("missing"),
            Problem::Empty => f.write_str("empty"),
            Problem::Invalid(m) => f.write_str(m),
            Problem::Newer(v) => write!(f, "version {v} is newer than this tool's {VERSION}"),
            Problem::RecordsGone(path) => write!(f, "its records file {path} is missing"),
        }
    }
}

/// Only the `allocated_ports` of a registry (and its version), every other value skipped
/// without being built: what another repository's allocation needs of this one. Reading a
/// 10,000-worktree registry this way skips its 10,000 records and its history.
struct PortsOnly(Registry);

impl<'de> Deserialize<'de> for PortsOnly {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = PortsOnly;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a registry object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<PortsOnly, A::Error> {
                let mut reg = Registry::default();
                let (mut seen_ports, mut seen_version) = (false, false);
                while let Some(key) = map.next_key::<String>()? {
                    let twice = match key.as_str() {
                        "allocated_ports" => std::mem::replace(&mut seen_ports, true),
                        "version" => std::mem::replace(&mut seen_version, true),
                        _ => false,
                    };
                    if twice {
                        return Err(serde::de::Error::custom(format!(
                            "the key {key:?} appears twice"
                        )));
                    }
                    match key.as_str() {
                        "version" => reg.version = map.next_value()?,
                        "allocated_ports" => {
                            reg.allocated_ports = map.next_value_seed(AllocatedPorts(None))?;
                        }
                        // Who the repository is: the machine index checks it.
                        super::REPOSITORY_ID_KEY => {
                            let raw = map.next_value::<Box<serde_json::value::RawValue>>()?;
                            reg.extra.insert(key, super::Raw(raw));
                        }
                        _ => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(PortsOnly(reg))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// [`parse`], keeping only `allocated_ports` (records, ranges and history are skipped).
pub fn parse_ports_only(bytes: &[u8]) -> Result<Registry, Problem> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(Problem::Empty);
    }
    let text =
        std::str::from_utf8(bytes).map_err(|e| Problem::Invalid(format!("not UTF-8 text: {e}")))?;
    match serde_json::from_str::<PortsOnly>(text) {
        Ok(PortsOnly(reg)) => reg.validate().map(|()| reg),
        Err(e) => Err(Problem::Invalid(e.to_string())),
    }
}

/// The registry in `text` (a part of `file`), read by serde.
pub(super) fn serde_document(
    file: &Arc<FileText>,
    text: &str,
) -> Result<Registry, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    serde::de::DeserializeSeed::deserialize(RegistrySeed(file), &mut de)
        .and_then(|reg| de.end().map(|()| reg))
}

/// Parse registry bytes (copied; [`parse_owned`] keeps them instead).
pub fn parse(bytes: &[u8]) -> Result<Registry, Problem> {
    parse_owned(bytes.to_vec().into()).1
}

/// Parse registry bytes, keeping them: the registry's records and history are spans of the
/// text returned (None when it is not UTF-8), which is also what a caller compares later.
pub fn parse_owned(bytes: Bytes) -> (Option<Arc<FileText>>, Result<Registry, Problem>) {
    // A byte order mark from an editor is not damage (the config parser accepts one too).
    let start = if bytes.starts_with(b"\xEF\xBB\xBF") {
        3
    } else {
        0
    };
    if bytes[start..].iter().all(u8::is_ascii_whitespace) {
        return (None, Err(Problem::Empty));
    }
    // Check UTF-8 once for the whole file: from_slice checks every string on its own, which
    // was 4% of reading a 10,000-worktree registry.
    let file = match FileText::new(bytes) {
        Ok(text) => Arc::new(text),
        Err(e) => {
            return (None, Err(Problem::Invalid(format!("not UTF-8 text: {e}"))));
        }
    };
    let text = &file[start..];
    // The compact form the tool writes, by hand; anything else, by serde.
    let read = match super::compact::read(&file, start) {
        Some(reg) => Ok(reg),
        None => serde_document(&file, text),
    };
    let parsed = match read {
        // validate() looks at the version first.
        Ok(reg) => reg.validate().map(|()| reg),
        Err(e) => {
            // A newer format may have another shape: call it newer, not corrupt. Only on this
            // path, so a good file is parsed once.
            #[derive(Deserialize)]
            struct VersionOnly {
                version: Option<u64>,
            }
            match serde_json::from_str::<VersionOnly>(text) {
                Ok(VersionOnly { version: Some(v) }) if v > VERSION => Err(Problem::Newer(v)),
                _ => Err(Problem::Invalid(e.to_string())),
            }
        }
    };
    (Some(file), parsed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Event;
    use serde_json::{Value, json};

    #[test]
    fn reads_the_seed_format_without_version_and_keeps_unknown_keys() {
        let seed = br#"{"port_ranges": {"web": [8080, 8099]},
            "allocated_ports": {"main": {"web": 8080}, "feature-login": {"web": 8081}},
            "owner": "team-a"}"#;
        let r = parse(seed).unwrap();
        assert_eq!(r.version, 1);
        assert_eq!(r.ports("feature-login").unwrap().get("web"), Some(8081));
        let round: Value = serde_json::from_slice(&r.to_bytes()).unwrap();
        assert_eq!(round["owner"], "team-a");
        assert_eq!(round["allocated_ports"]["main"]["web"], 8080);
        assert_eq!(round["version"], 1);
    }

    /// The hand-read compact form and serde agree on every input, good or damaged: the same
    /// ports, or both refuse it; and the tool's own compact form takes the hand-read path.
    #[test]
    fn compact_allocated_ports_read_as_serde_reads_them() {
        let serde_read = |file: &Arc<FileText>| {
            let mut de = serde_json::Deserializer::from_str(file);
            serde::de::DeserializeSeed::deserialize(AllocatedPorts(Some(file)), &mut de).ok()
        };
        let cases = [
            (r#"{}"#, true),
            (r#"{"main":{}}"#, true),
            (
                r#"{"main":{"db":5432,"web":8080},"wt-1":{"web":8081}}"#,
                true,
            ),
            (r#"{"b":{"web":8081},"a":{"web":8080}}"#, true),
            (r#"{"a":{"web":8080,"db":5432}}"#, true),
            (r#"{"a":{"web":0}}"#, true),
            (r#"{"a":{"web":65535}}"#, true),
            (r#"{"a":{"web":65536}}"#, false),
            (r#"{"a":{"web":08080}}"#, false),
            (r#"{"a":{"web":8080,"web":8081}}"#, true),
            (r#"{"a":{"web":8080},"a":{"web":8081}}"#, true),
            (
                r#"{"a":{"web":8080},"b":{"web":8081},"a":{"web":8082}}"#,
                true,
            ),
            (
                r#"{"a":{"web":8080},"c":{"web":8081},"b":{"web":8082}}"#,
                true,
            ),
            (
                r#"{"a":{"web":8080},"a-b":{"web":8081},"a/b":{"web":8082}}"#,
                true,
            ),
            (r#"{"a-b":{"web":8080},"a":{"web":8081}}"#, true),
            (r#"{"a": {"web": 8080}}"#, false),
            (r#"{"a\u00e9":{"web":8080}}"#, false),
            (r#"{"caf\u00e9":{"w\"eb":8080}}"#, false),
            ("{\"café\":{\"web\":8080}}", false),
            ("{\"a\\tb\\u0001\":{\"w/\\\\\":1024}}", false),
            (r#"{"a":{"web":8080.0}}"#, false),
            (r#"{"a":{"web":-1}}"#, false),
            (r#"{"a":{"web":"8080"}}"#, false),
            (r#"{"a":[8080]}"#, false),
        ];
        for (text, compact) in cases {
            let file = Arc::new(FileText::from(text.to_string()));
            let fast = compact_allocated(&file, text, &mut Shapes::default());
            assert_eq!(fast.is_some(), compact, "{text}");
            let both = (allocated_ports(&file, text).ok(), serde_read(&file));
            assert_eq!(both.0, both.1, "{text}");
            // Written back by hand exactly as serde_json writes it.
            if let Some(map) = both.0 {
                let mut sink = Sink {
                    out: Vec::new(),
                    to: None,
                };
                write_allocated(&mut sink, &map).unwrap();
                let plain: BTreeMap<&str, BTreeMap<&str, u16>> = (map.iter())
                    .map(|(k, p)| (k.as_str(), p.iter().collect()))
                    .collect();
                assert_eq!(
                    String::from_utf8(sink.out).unwrap(),
                    serde_json::to_string(&plain).unwrap()
                );
            }
        }
    }

    /// A registry larger than the save's buffer is handed to the file a chunk at a time (the
    /// spill path runs only past 256 KiB), and the chunks are the whole file's bytes; a writer
    /// that fails mid-way fails the save.
    #[test]
    fn a_registry_written_in_chunks_is_the_same_bytes() {
        let mut text = String::from(r#"{"version":1,"port_ranges":{},"allocated_ports":{"#);
        for n in 0..12000 {
            let comma = if n > 0 { "," } else { "" };
            text += &format!(
                r#"{comma}"wt-{n:05}":{{"db":{},"web":{}}}"#,
                2000 + n,
                20000 + n
            );
        }
        text += r#"},"worktrees":{"#;
        for n in 0..12000 {
            let comma = if n > 0 { "," } else { "" };
            text += &format!(r#"{comma}"wt-{n:05}":{{"path":"/src/p/wt-{n:05}","slot":{n}}}"#);
        }
        text += r#"},"history":[{"action":"assigned"}]}"#;
        text.push('\n');
        let (_, reg) = parse_owned(text.clone().into_bytes().into());
        let reg = reg.unwrap();
        let whole = reg.to_bytes();
        assert_eq!(String::from_utf8(whole.clone()).unwrap(), text);
        assert!(whole.len() > 2 * CHUNK, "{} bytes", whole.len());

        struct Chunks(Vec<u8>, usize, Option<usize>);
        impl Write for Chunks {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.1 += 1;
                if Some(self.1) == self.2 {
                    return Err(std::io::Error::other("disk full"));
                }
                self.0.extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut chunks = Chunks(Vec::new(), 0, None);
        reg.write_to(&mut chunks).unwrap();
        assert_eq!(chunks.0, whole);
        assert!(chunks.1 >= 3, "{} writes", chunks.1);
        let mut failing = Chunks(Vec::new(), 0, Some(2));
        assert!(reg.write_to(&mut failing).is_err());
    }

    fn reg_keys(reg: &Registry) -> Vec<Key> {
        reg.allocated_ports.iter().map(|(k, _)| k.clone()).collect()
    }

    /// Records and history entries are spans of the text read (shared, not copied: 11,000
    /// allocations per read of a 10,000-worktree registry), written back exactly as read; a
    /// byte order mark before them moves every span by three bytes.
    #[test]
    fn keys_records_and_history_are_spans_of_the_file_written_back_as_read() {
        let text = "\u{feff}{\"allocated_ports\": {\"a\\u0062\": {\"web\": 8080}},\n \"worktrees\": \
            {\"a\\u0062\": { \"path\" : \"/x\", \"n\": 1e400 }},\n \"history\": [ {\"action\": 1} ]}";
        let (file, reg) = parse_owned(text.as_bytes().to_vec().into());
        let (file, reg) = (file.unwrap(), reg.unwrap());
        let (_, record) = (reg.worktrees.iter())
            .find_map(|r| r.own.filter(|(k, _)| k.as_str() == "ab"))
            .unwrap();
        assert!(matches!(&record.0, Text::Read { file: f, .. } if Arc::ptr_eq(f, &file)));
        assert_eq!(record.0.get(), r#"{ "path" : "/x", "n": 1e400 }"#);
        assert!(matches!(&reg.history[0], Text::Read { file: f, .. } if Arc::ptr_eq(f, &file)));
        assert_eq!(reg.record("ab").unwrap().path, "/x");
        let out = String::from_utf8(reg.to_bytes()).unwrap();
        assert_eq!(
            out,
            "{\"version\":1,\"port_ranges\":{},\"allocated_ports\":{\"ab\":{\"web\":8080}},\
             \"worktrees\":{\"ab\":{ \"path\" : \"/x\", \"n\": 1e400 }},\
             \"history\":[{\"action\": 1}]}\n"
        );
        // Keys too, where the file writes them without escapes.
        let (file, reg) =
            parse_owned(br#"{"allocated_ports": {"main": {"web": 8080}}}"#.to_vec().into());
        let (file, reg) = (file.unwrap(), reg.unwrap());
        let (key, _) = reg.allocated_ports.iter().next().unwrap();
        assert!(matches!(&key.0, Text::Read { file: f, .. } if Arc::ptr_eq(f, &file)));
        let escaped = reg_keys(&parse(text.as_bytes()).unwrap());
        assert!(matches!(&escaped[0].0, Text::Own(k) if &**k == "ab"));
        // Text that is not a part of the file is copied.
        assert!(matches!(Text::read(&file, "{}"), Text::Own(t) if &*t == "{}"));
    }

    #[test]
    fn ports_read_like_a_map_and_share_service_names() {
        let r = parse(
            br#"{"allocated_ports": {"a": {"web": 8080, "db": 5432},
                "b": {"web": 8081, "db": 5434}}}"#,
        )
        .unwrap();
        // Sorted by service, whatever the order in the file.
        let b: Vec<(&str, u16)> = r.allocated_ports.get("b").unwrap().iter().collect();
        assert_eq!(b, [("db", 5434), ("web", 8081)]);
        let a = r.allocated_ports.get("a").unwrap();
        assert_eq!(
            (a.get("db"), a.get("web"), a.get("api")),
            (Some(5432), Some(8080), None)
        );
        // One copy of each name, however many worktrees use it.
        let first = |p: &Ports| p.iter().next().unwrap().0.as_ptr();
        assert_eq!(first(a), first(r.allocated_ports.get("b").unwrap()));
        let round: Value = serde_json::from_slice(&r.to_bytes()).unwrap();
        assert_eq!(
            round["allocated_ports"]["b"],
            json!({"db": 5434, "web": 8081})
        );
    }

    /// Regression (issue 15, item 6): a key named twice (a hand-merged file) silently kept the
    /// last value and dropped the rest, whose ports were then handed out again.
    #[test]
    fn a_key_named_twice_anywhere_is_damage_not_a_choice() {
        for text in [
            r#"{"allocated_ports": {"a": {"web": 8080}}, "allocated_ports": {"b": {"web": 8081}}}"#,
            r#"{"allocated_ports": {"a": {"web": 8080}, "a": {"web": 8081}}}"#,
            r#"{"allocated_ports": {"a": {"web": 8080, "web": 8081}}}"#,
            r#"{"allocated_ports": {"a": {"web": 8080, "db": 5432, "web": 8081}}}"#,
            r#"{"worktrees": {"a": {"path": "/x"}, "a": {"path": "/y"}}, "allocated_ports": {}}"#,
            r#"{"port_ranges": {"web": [1, 2], "web": [3, 4]}, "allocated_ports": {}}"#,
            r#"{"owner": 1, "owner": 2, "allocated_ports": {}}"#,
            r#"{"version": 1, "version": 1, "allocated_ports": {}}"#,
        ] {
            let err = parse(text.as_bytes()).unwrap_err();
            assert!(
                matches!(&err, Problem::Invalid(m) if m.contains("twice")),
                "{text}: {err:?}"
            );
        }
    }

    #[test]
    fn ports_only_reads_the_same_ports_and_refuses_the_same_damage() {
        let text = br#"{"version": 1, "port_ranges": {"web": [1, 2]},
            "allocated_ports": {"a": {"web": 8080, "db": 5432}, "b": {"web": 8081}},
            "worktrees": {"a": {"path": "/x", "huge": [1, {"deep": [2]}]}},
            "history": [{"action": "assigned"}], "other": null}"#;
        let whole = parse(text).unwrap();
        let ports = parse_ports_only(text).unwrap();
        let a: Vec<_> = whole
            .allocations()
            .map(|(k, p)| (k.to_string(), p.clone()))
            .collect();
        let b: Vec<_> = ports
            .allocations()
            .map(|(k, p)| (k.to_string(), p.clone()))
            .collect();
        assert_eq!(a, b);
        assert!(ports.record("a").is_none(), "records are skipped");
        assert!(
            parse_ports_only(br#"{"allocated_ports": {"a": {"web": 8080}, "b": {"web": 8080}}}"#)
                .is_err()
        );
        assert!(
            parse_ports_only(br#"{"allocated_ports": {"a": {"web": 8080}, "a": {"db": 1}}}"#)
                .is_err()
        );
        assert!(parse_ports_only(br#"{"allocated_ports": {"a": {"web": 8080}}"#).is_err());
        assert_eq!(
            parse_ports_only(br#"{"version": 7}"#).unwrap_err(),
            Problem::Newer(7)
        );
    }

    /// Regression (issue 15, item 6): unknown keys were kept as `serde_json::Value`, so an
    /// integer above 2^64 came back as a float.
    #[test]
    fn unknown_values_are_kept_byte_for_byte() {
        let text = r#"{"allocated_ports":{"a":{"web":8080}},"big":123456789012345678901234567890,"f":1.50,"worktrees":{"a":{"path":"/x","allocated_at":"t","huge":18446744073709551616}}}"#;
        let r = parse(text.as_bytes()).unwrap();
        let out = String::from_utf8(r.to_bytes()).unwrap();
        assert!(
            out.contains(r#""big":123456789012345678901234567890"#),
            "{out}"
        );
        assert!(out.contains(r#""f":1.50"#), "{out}");
        assert!(out.contains(r#""huge":18446744073709551616"#), "{out}");
        // Also through a record that is decoded and written again.
        let mut r = r;
        let rec = r.record("a").unwrap();
        r.set_record(
            "a",
            &crate::registry::WorktreeRecord {
                path: "/y".into(),
                ..rec
            },
        );
        let out = String::from_utf8(r.to_bytes()).unwrap();
        assert!(out.contains(r#""huge":18446744073709551616"#), "{out}");
    }

    #[test]
    fn to_bytes_allocates_its_buffer_once() {
        let mut r = Registry::default();
        for i in 0..500u16 {
            let ports = BTreeMap::from([("web".to_string(), 2000 + i), ("db".into(), 3000 + i)]);
            r.set_ports(&format!("wt-{i}"), &ports).unwrap();
            r.log(Event::Assigned {
                worktree: &format!("wt-{i}"),
                service: "web",
                port: 2000 + i,
            });
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

    /// Regression (issue 15, low item): a BOM in a hand-edited ports.json was taken for
    /// damage, and the edit replaced by the backup.
    #[test]
    fn a_byte_order_mark_is_not_damage() {
        let r = parse(b"\xEF\xBB\xBF{\"allocated_ports\": {\"a\": {\"web\": 8080}}}").unwrap();
        assert_eq!(r.ports("a").unwrap().get("web"), Some(8080));
        assert_eq!(parse(b"\xEF\xBB\xBF").unwrap_err(), Problem::Empty);
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
        assert_eq!(parse(br#"{"version": 3}"#).unwrap_err(), Problem::Newer(3));
    }

    /// `reg` with nothing a save could copy from a file: every text its own, every worktree's
    /// ports built again.
    fn owned(reg: &Registry) -> Registry {
        let own = |t: &Text| Text::Own(t.get().into());
        let mut r = reg.clone();
        r.allocated_ports = (reg.allocated_ports.iter())
            .map(|(k, p)| (Key(own(&k.0)), Ports::from(&p.to_map())))
            .collect();
        r.worktrees = Records::from_map(
            (reg.worktrees.iter())
                .map(|r| (Key::from(r.key), RecordJson(Text::Own(r.raw.into()))))
                .collect(),
        );
        r.history = reg.history.iter().map(own).collect();
        r
    }

    /// A save copies runs of the file it read (entries a save writes as the file has them):
    /// the bytes are exactly those of writing everything again, whatever changed, wherever.
    #[test]
    fn a_save_copies_from_the_file_read_exactly_what_it_would_write() {
        let mut reg = Registry::default();
        for i in 0..300u16 {
            let key = format!("wt-{i:03}");
            let ports = BTreeMap::from([("db".to_string(), 3000 + i), ("web".into(), 2000 + i)]);
            reg.set_ports(&key, &ports).unwrap();
            let record = WorktreeRecord {
                path: format!("/src/caf\u{e9}/{key} \"q\""),
                branch: (i % 3 > 0).then(|| format!("feature/{i}")),
                allocated_at: "2026-01-01T00:00:00Z".into(),
                id: Some(format!("id-{i}")),
                compose_project_name: None,
                slot: Some(u32::from(i)),
                hostname: None,
                extra: BTreeMap::new(),
            };
            reg.set_record(&key, &record);
            reg.log(Event::Assigned {
                worktree: &key,
                service: "web",
                port: 2000 + i,
            });
        }
        let text = reg.to_bytes();
        let read = parse(&text).unwrap();
        // Everything but the document's own punctuation and its small top-level values is
        // copied: allocated_ports, the records and the history, each as one run.
        COPIED.set(0);
        assert_eq!(read.to_bytes(), text);
        assert!(
            COPIED.get() > text.len() - 200,
            "{} of {}",
            COPIED.get(),
            text.len()
        );
        COPIED.set(0);
        assert_eq!(owned(&read).to_bytes(), text);
        assert_eq!(COPIED.get(), 0);
        let (mut copying, mut writing) = (read.clone(), owned(&read));
        assert_eq!(writing.to_bytes(), text);
        for r in [&mut copying, &mut writing] {
            // Changed at the start, in the middle and at the end; added before, between and
            // after the entries read; removed; history entries added.
            r.set_ports("wt-000", &BTreeMap::from([("web".to_string(), 9000)]))
                .unwrap();
            r.set_ports("wt-150", &BTreeMap::from([("db".to_string(), 9001)]))
                .unwrap();
            r.set_ports("wt-299", &BTreeMap::from([("api".to_string(), 9002)]))
                .unwrap();
            for key in ["a", "wt-100x", "zz"] {
                r.set_ports(
                    key,
                    &BTreeMap::from([("web".to_string(), 9100 + key.len() as u16)]),
                )
                .unwrap();
                r.set_record(key, &r.record("wt-001").unwrap());
            }
            r.remove_worktree("wt-001");
            r.remove_worktree("wt-200");
            for i in 0..750 {
                r.history.push(
                    Event::Assigned {
                        worktree: "a",
                        service: "web",
                        port: 9000 + i,
                    }
                    .to_json(),
                );
            }
            r.prepare_save();
        }
        let (copied, written) = (copying.to_bytes(), writing.to_bytes());
        assert_eq!(
            String::from_utf8(copied.clone()),
            String::from_utf8(written)
        );
        // Through the writer, in chunks, the same.
        let mut streamed = Vec::new();
        copying.write_to(&mut streamed).unwrap();
        assert_eq!(streamed, copied);
        assert_eq!(parse(&copied).unwrap(), copying);
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use crate::model::config::MIN_PORT;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// Arbitrary bytes never panic the registry parser or the salvage scan.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in any::<Vec<u8>>()) {
            let _ = parse(&bytes);
            let _ = crate::model::salvage::allocated_ports(&bytes);
        }

        /// Registry-shaped JSON: what parses upholds the invariants the allocator relies on.
        #[test]
        fn registry_shaped_json(
            text in r#"\{("version": -?[0-9]{1,3}, )?"allocated_ports": \{("[a-z/]{0,3}": \{("[a-z]{0,3}": -?[0-9]{1,6},? ?){0,3}\},? ?){0,4}\}(, "port_ranges": \{("[a-z]{1,3}": \[[0-9]{1,6}, [0-9]{1,6}\],? ?){0,2}\})?\}"#
        ) {
            let _ = crate::model::salvage::allocated_ports(text.as_bytes());
            if let Ok(reg) = parse(text.as_bytes()) {
                let mut seen = std::collections::HashSet::new();
                for (_, ports) in reg.allocations() {
                    for (_, p) in ports.iter() {
                        prop_assert!(p >= MIN_PORT);
                        prop_assert!(seen.insert(p));
                    }
                }
            }
        }
    }
}
