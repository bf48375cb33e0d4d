//! `allocated_ports`: the worktrees' ports of the file read, as the vector its reader made
//! (sorted by key, each key once), and those set or removed since, in a small map beside it.
//! No I/O.
//!
//! A 10,000-worktree registry's ports were a `BTreeMap` built on every read: 900 nodes
//! (160 page faults) and two key comparisons per worktree (std sorts, then drops duplicates),
//! for a command that looks up one or two worktrees and passes over the rest in order. The
//! reader knows whether the keys came sorted (the tool writes them so); a file in any other
//! order is sorted here once, and a key named twice refused.

use super::codec::unique_map;
use super::overlay::{Changes, Entry};
use super::{Key, Ports};

/// The ports of every worktree of a registry.
#[derive(Debug, Clone, Default)]
pub(crate) struct Allocations {
    /// The worktrees read, sorted by key, each once.
    read: Vec<(Key, Ports)>,
    /// Worktrees set or removed since the read.
    changes: Changes<Ports>,
}

impl Allocations {
    /// The worktrees read, in the file's order; `sorted`: the reader found every key greater
    /// than the one before. Err when a key is named twice (a hand-merged file with two objects
    /// for one worktree: keeping one would drop the other's ports and hand them out again).
    pub(super) fn from_read(read: Vec<(Key, Ports)>, sorted: bool) -> Result<Allocations, String> {
        if sorted {
            return Ok(Allocations {
                read,
                changes: Changes::default(),
            });
        }
        let map = unique_map::<_, _, serde_json::Error>(read, "allocated_ports")
            .map_err(|e| e.to_string())?;
        Ok(Allocations {
            read: map.into_iter().collect(),
            changes: Changes::default(),
        })
    }

    /// Where `key` is or would go among the worktrees read, and whether it is there.
    fn position(&self, key: &str) -> Result<usize, usize> {
        self.read.binary_search_by(|(k, _)| k.as_str().cmp(key))
    }

    /// The ports of `key`.
    pub(crate) fn get(&self, key: &str) -> Option<&Ports> {
        match self.changes.get(key) {
            Some(changed) => changed,
            None => self.position(key).ok().map(|i| &self.read[i].1),
        }
    }

    /// True when `key` has ports here.
    pub(crate) fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Give `key` `ports`.
    pub(crate) fn insert(&mut self, key: Key, ports: Ports) {
        self.changes.set(key, ports);
    }

    /// Take `key`'s ports away; returns them.
    pub(crate) fn remove(&mut self, key: &str) -> Option<Ports> {
        let held = self.get(key).cloned();
        let read = self.position(key).is_ok();
        self.changes.remove(key, read);
        held
    }

    /// No worktree has ports.
    pub(crate) fn clear(&mut self) {
        *self = Allocations::default();
    }

    /// Every worktree with its ports, sorted by key ([`Changes::merge`]).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&Key, &Ports)> {
        (self.changes.merge(self.read.len(), |k| self.position(k))).map(|e| match e {
            Entry::Read(i) => (&self.read[i].0, &self.read[i].1),
            Entry::Set(key, ports) => (key, ports),
        })
    }

    /// How many worktrees have ports.
    pub(crate) fn len(&self) -> usize {
        self.changes.count(self.read.len(), |k| self.position(k))
    }
}

/// The same worktrees with the same ports, however each was read or set.
impl PartialEq for Allocations {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

/// Tests build what they compare with from pairs (a key twice keeps the last).
#[cfg(test)]
impl FromIterator<(Key, Ports)> for Allocations {
    fn from_iter<I: IntoIterator<Item = (Key, Ports)>>(iter: I) -> Allocations {
        let map: std::collections::BTreeMap<Key, Ports> = iter.into_iter().collect();
        Allocations {
            read: map.into_iter().collect(),
            changes: Changes::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn ports(port: u16) -> Ports {
        Ports::from(&BTreeMap::from([("web".to_string(), port)]))
    }

    fn listed(a: &Allocations) -> Vec<(String, Option<u16>)> {
        a.iter()
            .map(|(k, p)| (k.as_str().to_string(), p.get("web")))
            .collect()
    }

    /// Read worktrees, set ones and removed ones are one sorted list: a set one replaces a
    /// read one of its key, a removed one hides it, a new one goes where its key sorts (before
    /// all, between, after all), and the same ports read or set are equal.
    #[test]
    fn read_set_and_removed_worktrees_merge_in_key_order() {
        let read = |keys: &[&str]| -> Vec<(Key, Ports)> {
            (keys.iter().zip(8000..))
                .map(|(k, p)| (Key::from(*k), ports(p)))
                .collect()
        };
        let unsorted = Allocations::from_read(read(&["d", "b", "f"]), false).unwrap();
        let mut a = Allocations::from_read(read(&["b", "d", "f"]), true).unwrap();
        assert_eq!(listed(&unsorted)[0], ("b".to_string(), Some(8001)));
        assert_eq!(a.len(), 3);
        assert_eq!(a.get("d").and_then(|p| p.get("web")), Some(8001));
        assert!(Allocations::from_read(read(&["b", "d", "b"]), false).is_err());
        a.insert(Key::from("a"), ports(9000));
        a.insert(Key::from("d"), ports(9001));
        a.insert(Key::from("e"), ports(9002));
        a.insert(Key::from("z"), ports(9003));
        assert_eq!(a.remove("f").and_then(|p| p.get("web")), Some(8002));
        assert_eq!(a.remove("x"), None);
        let want = [
            ("a", 9000),
            ("b", 8000),
            ("d", 9001),
            ("e", 9002),
            ("z", 9003),
        ];
        let want: Vec<(String, Option<u16>)> = (want.iter())
            .map(|(k, p)| (k.to_string(), Some(*p)))
            .collect();
        assert_eq!(listed(&a), want);
        assert_eq!(a.len(), 5);
        assert!(!a.contains_key("f") && a.contains_key("b") && a.contains_key("z"));
        assert_eq!(a.remove("z").and_then(|p| p.get("web")), Some(9003));
        assert!(!a.contains_key("z"));
        let same: Allocations = (listed(&a).into_iter())
            .map(|(k, p)| (Key::from(k.as_str()), ports(p.unwrap())))
            .collect();
        assert_eq!(a, same);
        a.remove("b");
        assert_ne!(a, same);
        a.clear();
        assert_eq!(a.len(), 0);
        assert_eq!(a.iter().count(), 0);
    }

    mod model {
        use super::*;
        use proptest::prelude::*;

        /// A change: set a key's port, or remove the key.
        #[derive(Debug, Clone)]
        enum Op {
            Set(u8, u16),
            Remove(u8),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                (0u8..24, 1024u16..2000).prop_map(|(k, p)| Op::Set(k, p)),
                (0u8..24).prop_map(Op::Remove),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(500))]

            /// Whatever was read (in order or not) and whatever changed since, the worktrees
            /// are those of a map that saw the same: each lookup, the count, and the sorted
            /// list, after every change.
            #[test]
            fn allocations_are_the_map_they_stand_for(
                read in proptest::collection::btree_map(0u8..24, 1024u16..2000, 0..16),
                shuffle in any::<bool>(),
                ops in proptest::collection::vec(op(), 0..40),
            ) {
                let key = |k: u8| format!("w{k:02}");
                let mut model: BTreeMap<String, u16> =
                    read.iter().map(|(k, p)| (key(*k), *p)).collect();
                let mut entries: Vec<(Key, Ports)> =
                    model.iter().map(|(k, p)| (Key::from(k.as_str()), ports(*p))).collect();
                if shuffle {
                    entries.reverse();
                }
                let sorted = !shuffle || entries.len() < 2;
                let mut a = Allocations::from_read(entries, sorted).unwrap();
                for op in ops {
                    match op {
                        Op::Set(k, p) => {
                            model.insert(key(k), p);
                            a.insert(Key::from(key(k).as_str()), ports(p));
                        }
                        Op::Remove(k) => {
                            let had = model.remove(&key(k));
                            prop_assert_eq!(a.remove(&key(k)).and_then(|p| p.get("web")), had);
                        }
                    }
                    prop_assert_eq!(a.len(), model.len());
                    let listed: Vec<(String, u16)> = (a.iter())
                        .map(|(k, p)| (k.as_str().to_string(), p.get("web").unwrap()))
                        .collect();
                    let expected: Vec<(String, u16)> =
                        model.iter().map(|(k, p)| (k.clone(), *p)).collect();
                    prop_assert_eq!(listed, expected);
                    for k in 0..24 {
                        let got = a.get(&key(k)).and_then(|p| p.get("web"));
                        prop_assert_eq!(got, model.get(&key(k)).copied());
                        prop_assert_eq!(a.contains_key(&key(k)), model.contains_key(&key(k)));
                    }
                }
            }
        }
    }
}
