//! What a registry read and what a command changed since, merged in key order: the part of
//! `allocated_ports` ([`super::allocations`]) and of the records ([`super::records`]) that is
//! the same whatever they hold. No I/O.
//!
//! What was read is a list its owner keeps, sorted by key, each key once, addressed by index;
//! the changes are a small map of the keys set (Some) or removed (None) since. A command
//! looks up a few entries and passes over the rest in order: each change is placed among the
//! read ones by one binary search, so passing over 10,000 of them compares no keys.

use std::collections::BTreeMap;

use super::Key;

/// One entry, in key order: the read one at an index, or a value set since.
pub(super) enum Entry<'a, V> {
    /// The read one at this index.
    Read(usize),
    /// Set since.
    Set(&'a Key, &'a V),
}

/// The keys set or removed since the read.
#[derive(Debug, Clone)]
pub(super) struct Changes<V>(BTreeMap<Key, Option<V>>);

impl<V> Default for Changes<V> {
    fn default() -> Changes<V> {
        Changes(BTreeMap::new())
    }
}

impl<V> Changes<V> {
    /// Every entry of `map`, set (nothing read).
    pub(super) fn of_all(map: BTreeMap<Key, V>) -> Changes<V> {
        Changes(map.into_iter().map(|(k, v)| (k, Some(v))).collect())
    }

    /// `key`'s change: Some(Some) set, Some(None) removed, None as read.
    pub(super) fn get(&self, key: &str) -> Option<Option<&V>> {
        self.0.get(key).map(Option::as_ref)
    }

    /// Set `key`.
    pub(super) fn set(&mut self, key: Key, value: V) {
        self.0.insert(key, Some(value));
    }

    /// Remove `key`; `read`: whether it is among the read ones (else nothing needs to hide
    /// it).
    pub(super) fn remove(&mut self, key: &str, read: bool) {
        match read {
            true => {
                self.0.insert(Key::from(key), None);
            }
            false => {
                self.0.remove(key);
            }
        }
    }

    /// Every change in key order: set (Some) or removed (None).
    pub(super) fn iter(&self) -> impl Iterator<Item = (&Key, Option<&V>)> {
        self.0.iter().map(|(k, v)| (k, v.as_ref()))
    }

    /// Every entry in key order: the `n` read ones (`position`: where a key is, or would go,
    /// among them) merged with the changes, a set one in place of a read one of its key, a
    /// removed one hiding it.
    pub(super) fn merge<'a>(
        &'a self,
        n: usize,
        position: impl Fn(&str) -> Result<usize, usize> + 'a,
    ) -> impl Iterator<Item = Entry<'a, V>> + 'a {
        let mut at = 0;
        let mut changes = self.0.iter().peekable();
        let place = move |(k, _): &(&Key, _)| position(k.as_str());
        let mut next_change = changes.peek().map(&place);
        std::iter::from_fn(move || {
            loop {
                let turn = match next_change {
                    Some(Ok(i) | Err(i)) => at >= i,
                    None => false,
                };
                if !turn {
                    if at >= n {
                        return None;
                    }
                    at += 1;
                    return Some(Entry::Read(at - 1));
                }
                let (key, value) = changes.next().expect("a change was placed");
                if let Some(Ok(i)) = next_change {
                    // Set or removed since: the read one is no more.
                    at = i + 1;
                }
                next_change = changes.peek().map(&place);
                if let Some(value) = value {
                    return Some(Entry::Set(key, value));
                }
            }
        })
    }

    /// How many entries there are, `n` of them read ([`Changes::merge`]).
    pub(super) fn count(&self, n: usize, position: impl Fn(&str) -> Result<usize, usize>) -> usize {
        match self.0.is_empty() {
            true => n,
            false => self.merge(n, position).count(),
        }
    }
}
