//! The records of `worktrees`: those of the file read, as spans of its text, and those set or
//! removed since. No I/O.
//!
//! A 10,000-worktree registry's records were 20,000 spans made (each holding the file's
//! `Arc`) and a map built of them on every read, 0.5 ms of a fresh allocation, for a command
//! that reads a few of them and writes the rest back as they were. Here the records of a file
//! in the form this tool writes (keys sorted, each once) are one vector of offsets into it,
//! found by a binary search; a change goes into a small map beside it. A file in any other
//! form is read into that map whole, as before.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::overlay::{Changes, Entry};
use super::{Key, RecordJson};
use crate::sys::fsio::FileText;

/// Where a record's key and its value are in the file: `[key start, key end, value start,
/// value end]`.
pub(super) type Span = [u32; 4];

/// The records of a registry.
#[derive(Debug, Clone, Default)]
pub(crate) struct Records {
    /// The file the records read are spans of.
    file: Option<Arc<FileText>>,
    /// The records read, as spans of `file`, sorted by key, each key once.
    read: Vec<Span>,
    /// Records set or removed since the read, and every record of a file read any other way.
    changes: Changes<RecordJson>,
}

/// One record: its key and its JSON text, and where both are in the file when they are the
/// file's (a save copies them from it).
pub(crate) struct Item<'a> {
    /// The key.
    pub(crate) key: &'a str,
    /// The record's JSON.
    pub(crate) raw: &'a str,
    /// Read: the file and where `"key":record` is in it.
    pub(crate) read: Option<(&'a Arc<FileText>, usize, usize)>,
    /// Set (or read another way): the key and record as kept.
    pub(crate) own: Option<(&'a Key, &'a RecordJson)>,
}

impl Records {
    /// Records read any other way than as spans.
    pub(super) fn from_map(map: BTreeMap<Key, RecordJson>) -> Records {
        Records {
            changes: Changes::of_all(map),
            ..Records::default()
        }
    }

    /// The records at `spans` of `file` (keys written without escapes); the spans given back
    /// when the keys are not sorted, each once (then the caller builds a map, which also
    /// finds a key named twice).
    pub(super) fn from_spans(file: &Arc<FileText>, spans: Vec<Span>) -> Result<Records, Vec<Span>> {
        let key = |s: &Span| &file[s[0] as usize..s[1] as usize];
        if !spans.windows(2).all(|w| key(&w[0]) < key(&w[1])) {
            return Err(spans);
        }
        Ok(Records {
            file: Some(Arc::clone(file)),
            read: spans,
            changes: Changes::default(),
        })
    }

    fn read_item(&self, i: usize) -> Item<'_> {
        let (file, s) = (self.file.as_ref().expect("spans have a file"), self.read[i]);
        Item {
            key: &file[s[0] as usize..s[1] as usize],
            raw: &file[s[2] as usize..s[3] as usize],
            // From the key's opening quote to the record's end.
            read: Some((file, s[0] as usize - 1, s[3] as usize)),
            own: None,
        }
    }

    /// The JSON of `key`'s record.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        match self.changes.get(key) {
            Some(changed) => changed.map(|r| r.0.get()),
            None => self.position(key).ok().map(|i| self.read_item(i).raw),
        }
    }

    /// Where `key` is or would go among the records read, and whether it is there.
    fn position(&self, key: &str) -> Result<usize, usize> {
        (self.read).binary_search_by(|s| self.key_at_span(s).cmp(key))
    }

    fn key_at_span(&self, s: &Span) -> &str {
        let file = self.file.as_ref().expect("spans have a file");
        &file[s[0] as usize..s[1] as usize]
    }

    /// True when `key` has a record.
    pub(crate) fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Set `key`'s record.
    pub(crate) fn insert(&mut self, key: &str, record: RecordJson) {
        self.changes.set(Key::from(key), record);
    }

    /// Remove `key`'s record, if it has one.
    pub(crate) fn remove(&mut self, key: &str) {
        let read = self.position(key).is_ok();
        self.changes.remove(key, read);
    }

    /// Remove every record.
    pub(crate) fn clear(&mut self) {
        *self = Records::default();
    }

    /// Every record, sorted by key ([`Changes::merge`]).
    pub(crate) fn iter(&self) -> impl Iterator<Item = Item<'_>> {
        (self.changes.merge(self.read.len(), |k| self.position(k))).map(|e| match e {
            Entry::Read(i) => self.read_item(i),
            Entry::Set(key, record) => Item {
                key: key.as_str(),
                raw: record.0.get(),
                read: None,
                own: Some((key, record)),
            },
        })
    }

    /// The file the records read are spans of (None when every record is a change).
    pub(super) fn file(&self) -> Option<&Arc<FileText>> {
        self.file.as_ref()
    }

    /// The records set (Some) or removed (None) since the read, in key order.
    pub(super) fn changes(&self) -> impl Iterator<Item = (&Key, Option<&RecordJson>)> {
        self.changes.iter()
    }

    /// Every key, sorted.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &str> {
        self.iter().map(|i| i.key)
    }

    /// How many records there are.
    pub(crate) fn len(&self) -> usize {
        self.changes.count(self.read.len(), |k| self.position(k))
    }
}

/// The same records (the same keys and JSON text), however each was read or set.
impl PartialEq for Records {
    fn eq(&self, other: &Self) -> bool {
        self.iter()
            .map(|i| (i.key, i.raw))
            .eq(other.iter().map(|i| (i.key, i.raw)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Text;

    fn own(raw: &str) -> RecordJson {
        RecordJson(Text::Own(raw.into()))
    }

    /// Read records, set ones and removed ones merge into one sorted list: a set one replaces
    /// a read one of its key, a removed one hides it, and the same records read or set are
    /// equal.
    #[test]
    fn read_set_and_removed_records_merge_in_key_order() {
        let text = r#"{"b":{"n":1},"d":{"n":2},"f":{"n":3}}"#;
        let file = Arc::new(FileText::from(text.to_string()));
        let span = |k: &str| {
            let at = text.find(&format!("\"{k}\":")).unwrap() + 1;
            let v = at + k.len() + 2;
            let end = v + text[v..].find('}').unwrap() + 1;
            [at, at + k.len(), v, end].map(|i| i as u32)
        };
        let spans = vec![span("b"), span("d"), span("f")];
        assert!(Records::from_spans(&file, vec![span("d"), span("b")]).is_err());
        assert!(Records::from_spans(&file, vec![span("b"), span("b")]).is_err());
        let mut r = Records::from_spans(&file, spans).unwrap();
        assert_eq!(r.get("d"), Some(r#"{"n":2}"#));
        assert_eq!(r.len(), 3);
        r.insert("a", own("{}"));
        r.insert("d", own(r#"{"n":9}"#));
        r.insert("g", own("{}"));
        r.remove("f");
        r.remove("x");
        let all: Vec<(&str, &str)> = r.iter().map(|i| (i.key, i.raw)).collect();
        assert_eq!(
            all,
            [
                ("a", "{}"),
                ("b", r#"{"n":1}"#),
                ("d", r#"{"n":9}"#),
                ("g", "{}")
            ]
        );
        assert_eq!(r.len(), 4);
        assert!(!r.contains_key("f") && r.contains_key("b") && !r.contains_key("c"));
        let b = r.iter().nth(1).unwrap();
        assert_eq!(
            b.read.map(|(_, from, to)| &text[from..to]),
            Some(r#""b":{"n":1}"#)
        );
        let same = Records::from_map(all.iter().map(|(k, v)| (Key::from(*k), own(v))).collect());
        assert_eq!(r, same);
        r.remove("g");
        assert_ne!(r, same);
        r.clear();
        assert_eq!(r.iter().count(), 0);
    }
}
