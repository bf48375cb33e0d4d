//! Records kept apart from `ports.json`: the layout of a registry of [`APART_FROM`] worktrees
//! or more (format version 2). No I/O.
//!
//! A fresh allocation among 10,000 worktrees rewrote and synced every record (3.6 MB, of
//! which the ports are 0.8 MB) to add one: the floor of that rewrite alone was 2.3-3.3x a
//! small repository's whole allocation. Here the records live in
//! `worktree-registry/records-<generation>.jsonl`, one JSON object of one member a line,
//! `{"<key>":<record>}`, or `{"<key>":null}` for a record removed; a later line for a key
//! replaces an earlier one (`jq -s 'add | with_entries(select(.value != null))'` gives the
//! records). `ports.json` keeps `allocated_ports` and `port_ranges` in the seed's shape and
//! names the records' file and how many of its bytes are committed:
//! `"records":{"generation":4,"bytes":2712345}`.
//!
//! A save appends the records it changed to that file and syncs it, then commits `ports.json`
//! naming the new length: bytes past the committed length are a save that did not commit, never
//! read, and cut by the next locked load or save. When the file holds more than twice the lines it
//! has records, the next save writes the records whole into the next generation instead (synced,
//! then committed by `ports.json` the same way), and the older generation is deleted once neither
//! `ports.json` nor its backup names it. Readers without the lock read `ports.json` first and the
//! records it names after: an append only adds bytes past the length they read, and a generation is
//! deleted only after `ports.json` stopped naming it, so they read it again from the start when it
//! is gone.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::compact::member;
use super::records::{Records, Span};
use super::{Key, RecordJson, Text};
use crate::sys::fsio::FileText;

/// The top-level key of `ports.json` that names the records' file.
pub const KEY: &str = "records";

/// The format version of a registry whose records are apart.
pub const VERSION: u64 = 2;

/// From this many records on, a save keeps them apart; a registry kept apart goes back to
/// one file below half of it (so a registry at the edge does not change layout at every
/// save). About 2,000 worktrees: 750 KB of records.
pub const APART_FROM: usize = 2_000;

/// Where a registry's records are: `records-<generation>.jsonl`, its first `bytes` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Apart {
    /// Which file: a new one is made whole when the last has grown too long.
    pub generation: u64,
    /// How many of its bytes are committed.
    pub bytes: u64,
}

impl Apart {
    /// The file's name, in the registry's directory.
    pub fn file_name(&self) -> String {
        file_name(self.generation)
    }
}

/// The name of generation `generation`'s records file.
pub fn file_name(generation: u64) -> String {
    format!("records-{generation}.jsonl")
}

/// The generation a file name is a records file of, if it is one.
pub fn generation_of(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("records-")?.strip_suffix(".jsonl")?;
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// Where the `ports.json` in `bytes` says its records are, read from the last
/// `,"records":{"generation":G,"bytes":N}` in it (this tool writes it after the ports, near
/// the end): a guess that lets the records be read while the rest is parsed, which the
/// caller checks against what the parse finds. None when there is no such text.
pub fn named_at_end(bytes: &[u8]) -> Option<Apart> {
    const AT: &[u8] = b",\"records\":{\"generation\":";
    // Only the keys after it (history, up to 100 gone worktrees, a few short ones) follow it:
    // a file in the first layout is not searched whole for it.
    let from = bytes.len().saturating_sub(TAIL);
    let mut at = from + memchr::memmem::rfind(&bytes[from..], AT)? + AT.len();
    let number = |at: &mut usize| {
        let digits = bytes[*at..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        let n = std::str::from_utf8(&bytes[*at..*at + digits])
            .ok()?
            .parse()
            .ok();
        *at += digits;
        n
    };
    let generation = number(&mut at)?;
    at += bytes[at..].strip_prefix(b",\"bytes\":").map(|_| 9)?;
    let len = number(&mut at)?;
    (bytes.get(at) == Some(&b'}')).then_some(Apart {
        generation,
        bytes: len,
    })
}

/// How far from its end [`named_at_end`] looks.
const TAIL: usize = 64 * 1024;

/// What reading a records file found.
#[derive(Debug)]
pub struct Read {
    /// The records.
    pub(super) records: Records,
    /// How many lines held them: a save writes them whole when this is more than twice the
    /// records.
    pub(super) lines: usize,
}

/// The records in `file` (the committed bytes of a records file), or what is wrong with it.
pub(super) fn read(file: &Arc<FileText>) -> Result<Read, String> {
    match read_plain(file) {
        Some(read) => Ok(read),
        None => read_by_serde(file),
    }
}

/// Whether `lines` lines holding `records` records should be written again whole.
pub(super) fn too_long(lines: usize, records: usize) -> bool {
    lines > 2 * records + 64
}

/// The lines that record `changes` (a key's record, or None for one removed).
pub(super) fn lines<'a>(
    changes: impl Iterator<Item = (&'a Key, Option<&'a RecordJson>)>,
    out: &mut Vec<u8>,
) -> usize {
    let mut n = 0;
    for (key, record) in changes {
        line(out, key.as_str(), record.map_or("null", |r| r.0.get()));
        n += 1;
    }
    n
}

/// One line: `{"key":value}` and a line break.
pub(super) fn line(out: &mut Vec<u8>, key: &str, value: &str) {
    out.push(b'{');
    super::codec::write_str(out, key);
    out.push(b':');
    // A hand-indented record: a line break can only be white space between JSON tokens.
    let at = out.len();
    out.extend_from_slice(value.as_bytes());
    for b in &mut out[at..] {
        if *b == b'\n' || *b == b'\r' {
            *b = b' ';
        }
    }
    out.extend_from_slice(b"}\n");
}

/// The file as this tool writes it (keys without escapes, no white space), by hand: each
/// record a span of the file, as in `ports.json`. None for anything else.
fn read_plain(file: &Arc<FileText>) -> Option<Read> {
    let b = file.as_bytes();
    // A line never holds a line break (compact JSON has no white space, and a string no
    // control character), so the halves before and after one are read apart: the second on
    // another thread, while the caller's thread reads `ports.json` (two cores, three
    // readers: measured in BENCHMARKS.md, "Eighteenth session").
    let half = (b.len() >= SPLIT_FROM)
        .then(|| memchr::memchr(b'\n', &b[b.len() / 2..]).map(|i| b.len() / 2 + i + 1))
        .flatten();
    let entries = match half {
        Some(mid) => std::thread::scope(|scope| {
            let second = scope.spawn(|| entries_in(b, mid, b.len()));
            let first = entries_in(b, 0, mid);
            let second = second.join().expect("reading records does not panic");
            let mut entries = first?;
            entries.extend(second?);
            Some(entries)
        }),
        None => entries_in(b, 0, b.len()),
    }?;
    let lines = entries.len();
    let key = |s: [u32; 2]| &file[s[0] as usize..s[1] as usize];
    // Written whole, the records are sorted and each once; appended lines follow. The
    // longest such beginning is taken as it is, the rest decided key by key, the last line
    // of a key winning.
    let sorted = match entries.first() {
        None | Some((_, None)) => 0,
        Some(_) => entries
            .windows(2)
            .position(|w| w[1].1.is_none() || key(w[0].0) >= key(w[1].0))
            .map_or(entries.len(), |i| i + 1),
    };
    let mut tail: BTreeMap<&str, ([u32; 2], Option<[u32; 2]>)> = BTreeMap::new();
    for &(k, v) in &entries[sorted..] {
        tail.insert(key(k), (k, v));
    }
    let span = |k: [u32; 2], v: [u32; 2]| [k[0], k[1], v[0], v[1]];
    let mut spans: Vec<Span> = Vec::with_capacity(entries.len());
    let mut later = tail.into_iter().peekable();
    for &(k, v) in &entries[..sorted] {
        while let Some((_, (tk, tv))) = later.next_if(|(tk, _)| *tk < key(k)) {
            spans.extend(tv.map(|tv| span(tk, tv)));
        }
        match later.next_if(|(tk, _)| *tk == key(k)) {
            Some((_, (tk, tv))) => spans.extend(tv.map(|tv| span(tk, tv))),
            None => spans.push(span(k, v?)),
        }
    }
    spans.extend(later.filter_map(|(_, (tk, tv))| Some(span(tk, tv?))));
    let records = Records::from_spans(file, spans).ok()?;
    Some(Read { records, lines })
}

/// From this size on, a records file is read in two halves at once ([`read_plain`]).
const SPLIT_FROM: usize = 512 * 1024;

/// A key span and a value span (None: removed).
type Entry = ([u32; 2], Option<[u32; 2]>);

/// The lines of `b[at..end]` (whole lines: `end` follows a line break or is the end), as the
/// tool writes them; None for anything else.
fn entries_in(b: &[u8], mut at: usize, end: usize) -> Option<Vec<Entry>> {
    let mut entries = Vec::with_capacity((end - at) / 128);
    while at < end {
        if b[at] != b'{' {
            return None;
        }
        let ([k0, k1, v0, v1], e) = member(b, at + 1)?;
        if b.get(e..e + 2) != Some(b"}\n") {
            return None;
        }
        let removed = &b[v0 as usize..e] == b"null";
        entries.push(([k0, k1], (!removed).then_some([v0, v1])));
        at = e + 2;
    }
    (at == end).then_some(entries)
}

/// Any other file that is one JSON object of one member a line (hand-edited: white space,
/// escaped keys), read by serde.
fn read_by_serde(file: &Arc<FileText>) -> Result<Read, String> {
    let mut map: BTreeMap<Key, Option<RecordJson>> = BTreeMap::new();
    let mut lines = 0;
    for (i, line) in file.split('\n').enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let one: BTreeMap<String, Option<&RawValue>> =
            serde_json::from_str(line).map_err(|e| format!("line {}: {e}", i + 1))?;
        let mut members = one.into_iter();
        let (Some((key, value)), None) = (members.next(), members.next()) else {
            return Err(format!(
                "line {}: not an object of exactly one worktree",
                i + 1
            ));
        };
        let value = value.filter(|v| v.get() != "null");
        map.insert(
            Key(Text::Own(key.into())),
            value.map(|v| RecordJson(Text::read(file, v.get()))),
        );
        lines += 1;
    }
    let map = map.into_iter().filter_map(|(k, v)| Some((k, v?))).collect();
    Ok(Read {
        records: Records::from_map(map),
        lines,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> Arc<FileText> {
        Arc::new(FileText::from(text.to_string()))
    }

    fn records(read: &Read) -> Vec<(String, String)> {
        (read.records.iter())
            .map(|i| (i.key.to_string(), i.raw.to_string()))
            .collect()
    }

    fn own(raw: &str) -> RecordJson {
        RecordJson(Text::Own(raw.into()))
    }

    /// A file written whole, then lines appended (a key set again, one removed, one new, one
    /// removed that was never there): a later line wins, `null` removes, and every record is
    /// a span of the file (a save copies it, and appends only what changed).
    #[test]
    fn later_lines_win_and_null_removes() {
        let text = concat!(
            "{\"a\":{\"n\":1}}\n",
            "{\"b\":{\"n\":2}}\n",
            "{\"d\":{\"n\":4}}\n",
            "{\"b\":{\"n\":20}}\n",
            "{\"a\":null}\n",
            "{\"c\":{\"n\":3}}\n",
            "{\"x\":null}\n",
            "{\"e\":{\"n\":5}}\n",
        );
        let f = file(text);
        let read = read(&f).unwrap();
        assert_eq!(read.lines, 8);
        assert_eq!(
            records(&read),
            [
                ("b", r#"{"n":20}"#),
                ("c", r#"{"n":3}"#),
                ("d", r#"{"n":4}"#),
                ("e", r#"{"n":5}"#)
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        assert!(read.records.file().is_some_and(|g| Arc::ptr_eq(g, &f)));
        assert_eq!(read.records.changes().count(), 0);
        // Empty: no records.
        let empty = super::read(&file("")).unwrap();
        assert_eq!((empty.lines, empty.records.len()), (0, 0));
        // Only a removal first: nothing is taken as sorted.
        let read = super::read(&file("{\"a\":null}\n{\"a\":{\"n\":1}}\n")).unwrap();
        assert_eq!(
            records(&read),
            [("a".to_string(), r#"{"n":1}"#.to_string())]
        );
    }

    /// What the tool does not write itself (an escaped key, white space, a hand-indented
    /// record on one line) is read by serde, the same way; what is not one object of one
    /// member a line, or not whole, is refused with the line's number.
    #[test]
    fn other_forms_are_read_by_serde_and_damage_is_refused() {
        let text = "{\"a\\\"b\": {\"n\": 1}}\n{ \"c\" : {\"n\":2} }\n{\"c\":null}\n";
        let read = read(&file(text)).unwrap();
        assert_eq!(
            records(&read),
            [("a\"b".to_string(), r#"{"n": 1}"#.to_string())]
        );
        assert_eq!(read.lines, 3);
        for (bad, line) in [
            ("{\"a\":{\"n\":1}}\n{\"b\":{\"n\"", 2),
            ("{\"a\":{},\"b\":{}}\n", 1),
            ("{}\n", 1),
            ("[1]\n", 1),
            ("{\"a\":{}}\n{\"b\":{}} x\n", 2),
        ] {
            let e = super::read(&file(bad)).unwrap_err();
            assert!(e.starts_with(&format!("line {line}:")), "{bad:?}: {e}");
        }
    }

    /// What a save appends reads back as the records it recorded.
    #[test]
    fn lines_read_back_as_written() {
        let (a, b) = (Key::from("a"), Key::from("b \"quoted\""));
        let (ra, rb) = (own(r#"{"path":"/x"}"#), own("{\n\"path\": \"/y\"\n}"));
        let mut out = Vec::new();
        let n = lines([(&a, Some(&ra)), (&b, Some(&rb))].into_iter(), &mut out);
        assert_eq!(n, 2);
        let removed = lines([(&a, None)].into_iter(), &mut out);
        assert_eq!(removed, 1);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 3, "{text}");
        let read = read(&file(&text)).unwrap();
        assert_eq!(
            records(&read),
            [(
                "b \"quoted\"".to_string(),
                "{ \"path\": \"/y\" }".to_string()
            )]
        );
    }

    /// A file past [`SPLIT_FROM`] is read in two halves at once: the same records, and
    /// damage in either half found (by line, as serde reads it).
    #[test]
    fn a_large_file_reads_the_same_in_halves() {
        let mut text = String::new();
        let mut model = BTreeMap::new();
        for i in 0..8000 {
            let raw =
                format!(r#"{{"path":"/home/dev/src/project/.worktrees/w{i:05}","slot":{i}}}"#);
            text.push_str(&format!("{{\"w{i:05}\":{raw}}}\n"));
            model.insert(format!("w{i:05}"), raw);
        }
        for i in (0..8000).step_by(97) {
            text.push_str(&format!("{{\"w{i:05}\":null}}\n"));
            model.remove(&format!("w{i:05}"));
        }
        assert!(text.len() >= SPLIT_FROM);
        let read = read(&file(&text)).unwrap();
        assert_eq!(records(&read), model.into_iter().collect::<Vec<_>>());
        assert_eq!(
            read.records.changes().count(),
            0,
            "every record a span of the file"
        );
        for at in [text.len() / 4, text.len() * 3 / 4] {
            let line = text[..at].matches('\n').count() + 1;
            let mut bad = text.clone();
            let start = bad[..at].rfind('\n').unwrap() + 1;
            bad.insert(start, '#');
            let Err(e) = super::read(&file(&bad)) else {
                panic!("damage is refused")
            };
            assert!(e.starts_with(&format!("line {line}:")), "{e}");
        }
    }

    #[test]
    fn where_the_records_are_is_read_from_the_end_of_ports_json() {
        let at = |t: &str| named_at_end(t.as_bytes());
        let named = Some(Apart {
            generation: 12,
            bytes: 345,
        });
        assert_eq!(
            at(r#"{"version":2,"records":{"generation":12,"bytes":345},"history":[]}"#),
            named
        );
        // The last one: an earlier one is in an unknown key's value.
        assert_eq!(
            at(
                r#"{"x":{"a":1,"records":{"generation":1,"bytes":2}},"records":{"generation":12,"bytes":345}}"#
            ),
            named
        );
        for none in [
            r#"{"version":1,"worktrees":{}}"#,
            r#"{"records":{"generation":12,"bytes":345}}"#,
            r#"{"v":1,"records":{"generation":12}}"#,
            r#"{"v":1,"records":{"generation":,"bytes":3}}"#,
            r#"{"v":1,"records":{"generation":1,"bytes":3,"x":1}}"#,
        ] {
            assert_eq!(at(none), None, "{none}");
        }
    }

    #[test]
    fn generations_are_named_and_known_by_name() {
        assert_eq!(file_name(7), "records-7.jsonl");
        assert_eq!(generation_of("records-7.jsonl"), Some(7));
        for other in [
            "records-.jsonl",
            "records-7.json",
            "records-x.jsonl",
            ".records-7.jsonl.wp-tmp.12",
            "ports.json",
        ] {
            assert_eq!(generation_of(other), None, "{other}");
        }
        let at = Apart {
            generation: 3,
            bytes: 10,
        };
        assert_eq!(
            serde_json::to_string(&at).unwrap(),
            r#"{"generation":3,"bytes":10}"#
        );
        assert!(serde_json::from_str::<Apart>(r#"{"generation":3,"bytes":10,"x":1}"#).is_err());
    }

    mod model {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(500))]
            /// Any records written whole, then any sets and removals appended in any order:
            /// the file reads as a map that applied them in turn.
            #[test]
            fn reads_as_the_changes_applied_in_turn(
                whole in proptest::collection::btree_map(0u8..12, 0u16..100, 0..8),
                appended in proptest::collection::vec((0u8..12, proptest::option::of(0u16..100)), 0..12),
            ) {
                let key = |k: u8| Key::from(format!("w{k:02}").as_str());
                let mut model: BTreeMap<String, String> = BTreeMap::new();
                let mut out = Vec::new();
                for (k, n) in &whole {
                    let raw = format!("{{\"n\":{n}}}");
                    line(&mut out, key(*k).as_str(), &raw);
                    model.insert(key(*k).as_str().to_string(), raw);
                }
                for (k, n) in &appended {
                    let record = n.map(|n| own(&format!("{{\"n\":{n}}}")));
                    let k = key(*k);
                    lines([(&k, record.as_ref())].into_iter(), &mut out);
                    match record {
                        Some(r) => model.insert(k.as_str().to_string(), r.0.get().to_string()),
                        None => model.remove(k.as_str()),
                    };
                }
                let read = read(&file(&String::from_utf8(out).unwrap())).unwrap();
                prop_assert_eq!(read.lines, whole.len() + appended.len());
                prop_assert_eq!(records(&read), model.into_iter().collect::<Vec<_>>());
                prop_assert_eq!(read.records.changes().count(), 0);
            }
        }
    }
}
