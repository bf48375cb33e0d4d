//! One worktree's ports ([`Ports`]), and the sharing of service lists among the worktrees
//! read from one file ([`Shapes`]). No I/O here.
//!
//! A 10,000-worktree registry is 10,000 of these: as a `BTreeMap<String, u16>` each it was
//! 10,000 trees and 50,000 copies of the same five names; as a vector of (name, port) pairs,
//! 1.3 MB of small allocations, whose page faults were a tenth of a fresh allocation there.
//! Here the sorted service names are one list shared by every worktree read with the same
//! services, and up to [`INLINE`] ports live in the value itself: reading allocates nothing
//! per worktree.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

/// Ports kept without an allocation of their own.
const INLINE: usize = 7;

/// One worktree's ports: service -> port, sorted by service, each service once.
#[derive(Debug, Clone, Default)]
pub struct Ports {
    /// The services, sorted, each once; shared with the worktrees that have the same ones.
    names: Arc<[Arc<str>]>,
    /// Their ports, in the same order.
    ports: List,
    /// The length of the object these ports were read from, when the file wrote them exactly
    /// as a save writes them (sorted, compact; right after the worktree's key): a save copies
    /// that text instead of writing it again. 0 once changed, or when not read so.
    read: u32,
}

/// A short list of ports, kept inline when it fits.
#[derive(Debug, Clone)]
enum List {
    Inline(u8, [u16; INLINE]),
    Heap(Box<[u16]>),
}

impl Default for List {
    fn default() -> List {
        List::Inline(0, [0; INLINE])
    }
}

impl List {
    fn of(ports: &[u16]) -> List {
        match ports.len() <= INLINE {
            true => {
                let mut inline = [0; INLINE];
                inline[..ports.len()].copy_from_slice(ports);
                List::Inline(ports.len() as u8, inline)
            }
            false => List::Heap(ports.into()),
        }
    }

    fn as_slice(&self) -> &[u16] {
        match self {
            List::Inline(n, ports) => &ports[..*n as usize],
            List::Heap(ports) => ports,
        }
    }

    fn as_mut_slice(&mut self) -> &mut [u16] {
        match self {
            List::Inline(n, ports) => &mut ports[..*n as usize],
            List::Heap(ports) => ports,
        }
    }
}

impl PartialEq for Ports {
    fn eq(&self, other: &Ports) -> bool {
        self.names == other.names && self.ports.as_slice() == other.ports.as_slice()
    }
}

impl Eq for Ports {}

impl Ports {
    /// The port of `service`.
    pub fn get(&self, service: &str) -> Option<u16> {
        self.find(service).ok().map(|i| self.ports.as_slice()[i])
    }

    /// Give `service` the port `port`; returns the port it had.
    pub fn insert(&mut self, service: &str, port: u16) -> Option<u16> {
        match self.find(service) {
            Ok(i) => {
                self.read = 0;
                Some(std::mem::replace(&mut self.ports.as_mut_slice()[i], port))
            }
            Err(i) => {
                let mut names = self.names.to_vec();
                names.insert(i, Arc::from(service));
                let mut ports = self.ports.as_slice().to_vec();
                ports.insert(i, port);
                *self = Ports {
                    names: names.into(),
                    ports: List::of(&ports),
                    read: 0,
                };
                None
            }
        }
    }

    /// Take `service`'s port away; returns it.
    pub fn remove(&mut self, service: &str) -> Option<u16> {
        let i = self.find(service).ok()?;
        let mut names = self.names.to_vec();
        names.remove(i);
        let mut ports = self.ports.as_slice().to_vec();
        let port = ports.remove(i);
        *self = Ports {
            names: names.into(),
            ports: List::of(&ports),
            read: 0,
        };
        Some(port)
    }

    /// (service, port), sorted by service.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u16)> {
        (self.names.iter())
            .zip(self.ports.as_slice())
            .map(|(s, p)| (&**s, *p))
    }

    /// How many services have a port.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True when no service has a port.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// As a map, for the commands' output.
    pub fn to_map(&self) -> BTreeMap<String, u16> {
        self.iter().map(|(s, p)| (s.to_owned(), p)).collect()
    }

    /// The length of the text these ports were read from, if a save may copy it ([`Ports`]).
    pub(crate) fn read_len(&self) -> Option<usize> {
        (self.read > 0).then_some(self.read as usize)
    }

    fn find(&self, service: &str) -> Result<usize, usize> {
        self.names.binary_search_by(|s| (**s).cmp(service))
    }
}

impl From<&BTreeMap<String, u16>> for Ports {
    fn from(map: &BTreeMap<String, u16>) -> Ports {
        let ports: Vec<u16> = map.values().copied().collect();
        Ports {
            names: map.keys().map(|s| Arc::from(s.as_str())).collect(),
            ports: List::of(&ports),
            read: 0,
        }
    }
}

/// A list of services as a file names them, in its order, and what it becomes.
struct Shape {
    /// As read.
    read: Vec<Box<str>>,
    /// Sorted.
    names: Arc<[Arc<str>]>,
    /// `order[i]`: where the `i`-th sorted service was in the list as read.
    order: Vec<usize>,
    /// Read in sorted order already.
    sorted: bool,
}

/// The service lists read from one file, each kept once: worktrees list the same services in
/// the same order, so the last few lists read find nearly every one with a few compares.
#[derive(Default)]
pub(crate) struct Shapes {
    /// The most recently used first; at most [`Shapes::KEPT`].
    recent: Vec<Shape>,
    /// Every service name read, each once.
    names: HashSet<Arc<str>>,
}

impl Shapes {
    const KEPT: usize = 8;

    /// A worktree's ports from its `services` and `ports` as read (same length, the file's
    /// order); None when a service is named twice, which is refused, never resolved by keeping
    /// one of its ports. `read`: the length of the compact text they were read from, if any
    /// (kept when the services were sorted there, so a save may copy that text).
    pub(crate) fn ports<S: AsRef<str>>(
        &mut self,
        services: &[S],
        ports: &[u16],
        read: Option<u32>,
    ) -> Option<Ports> {
        debug_assert_eq!(services.len(), ports.len());
        let found = (self.recent.iter()).position(|s| {
            s.read.len() == services.len()
                && (s.read.iter())
                    .zip(services)
                    .all(|(a, b)| **a == *b.as_ref())
        });
        let at = match found {
            Some(at) => at,
            None => {
                let shape = self.shape(services)?;
                if self.recent.len() == Self::KEPT {
                    self.recent.pop();
                }
                self.recent.push(shape);
                self.recent.len() - 1
            }
        };
        // The one found moves to the front.
        if at > 0 {
            self.recent[..=at].rotate_right(1);
        }
        let shape = &self.recent[0];
        let mut sorted = [0u16; INLINE];
        let list = match ports.len() <= INLINE {
            true => {
                for (slot, from) in sorted.iter_mut().zip(&shape.order) {
                    *slot = ports[*from];
                }
                List::Inline(ports.len() as u8, sorted)
            }
            false => List::Heap(shape.order.iter().map(|from| ports[*from]).collect()),
        };
        Some(Ports {
            names: Arc::clone(&shape.names),
            ports: list,
            read: read.filter(|_| shape.sorted).unwrap_or(0),
        })
    }

    fn shape<S: AsRef<str>>(&mut self, services: &[S]) -> Option<Shape> {
        let mut order: Vec<usize> = (0..services.len()).collect();
        order.sort_by(|a, b| services[*a].as_ref().cmp(services[*b].as_ref()));
        if (order.windows(2)).any(|w| services[w[0]].as_ref() == services[w[1]].as_ref()) {
            return None;
        }
        let names = (order.iter())
            .map(|i| self.name(services[*i].as_ref()))
            .collect();
        Some(Shape {
            read: services.iter().map(|s| s.as_ref().into()).collect(),
            names,
            sorted: order.iter().enumerate().all(|(i, o)| i == *o),
            order,
        })
    }

    fn name(&mut self, name: &str) -> Arc<str> {
        if let Some(known) = self.names.get(name) {
            return Arc::clone(known);
        }
        let new: Arc<str> = Arc::from(name);
        self.names.insert(Arc::clone(&new));
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, u16)]) -> BTreeMap<String, u16> {
        pairs.iter().map(|(s, p)| (s.to_string(), *p)).collect()
    }

    #[test]
    fn ports_read_like_a_map() {
        let mut p = Ports::default();
        assert_eq!(p.insert("web", 8080), None);
        assert_eq!(p.insert("api", 3000), None);
        assert_eq!(p.insert("web", 8090), Some(8080));
        assert_eq!(p.to_map(), map(&[("api", 3000), ("web", 8090)]));
        assert_eq!(p.remove("api"), Some(3000));
        assert_eq!((p.remove("api"), p.len()), (None, 1));
        assert_eq!(p.get("web"), Some(8090));
    }

    #[test]
    fn more_services_than_fit_inline_are_kept_all_and_sorted() {
        let names: Vec<String> = (0..12).rev().map(|i| format!("s{i:02}")).collect();
        let ports: Vec<u16> = (0..12).map(|i| 2000 + i).collect();
        let p = Shapes::default().ports(&names, &ports, None).unwrap();
        let expected: BTreeMap<String, u16> = names.iter().cloned().zip(ports).collect();
        assert_eq!(p.to_map(), expected);
        assert_eq!(p, Ports::from(&expected));
        let mut q = p.clone();
        q.insert("s99", 3000);
        q.remove("s99");
        assert_eq!(q, p);
    }

    #[test]
    fn lists_read_in_any_order_share_names_and_keep_each_port_with_its_service() {
        let mut shapes = Shapes::default();
        let a = shapes
            .ports(&["web", "api", "db"], &[8080, 3000, 5432], None)
            .unwrap();
        let b = shapes
            .ports(&["web", "api", "db"], &[8081, 3001, 5433], None)
            .unwrap();
        let c = shapes.ports(&["db", "web"], &[5434, 8082], None).unwrap();
        let d = shapes
            .ports(&["api", "db", "web"], &[3003, 5435, 8083], None)
            .unwrap();
        assert_eq!(
            a.to_map(),
            map(&[("api", 3000), ("db", 5432), ("web", 8080)])
        );
        assert_eq!(
            b.to_map(),
            map(&[("api", 3001), ("db", 5433), ("web", 8081)])
        );
        assert_eq!(c.to_map(), map(&[("db", 5434), ("web", 8082)]));
        assert_eq!(
            d.to_map(),
            map(&[("api", 3003), ("db", 5435), ("web", 8083)])
        );
        assert!(Arc::ptr_eq(&a.names, &b.names));
        assert!(Arc::ptr_eq(&a.names[0], &d.names[0]));
        // Back to the first list after others: still right.
        let e = shapes
            .ports(&["web", "api", "db"], &[8084, 3004, 5436], None)
            .unwrap();
        assert_eq!(
            e.to_map(),
            map(&[("api", 3004), ("db", 5436), ("web", 8084)])
        );
    }

    #[test]
    fn a_service_named_twice_is_refused() {
        let mut shapes = Shapes::default();
        assert!(
            shapes
                .ports(&["web", "db", "web"], &[1, 2, 3], None)
                .is_none()
        );
        // Also when a list of the same length was read before.
        assert!(
            shapes
                .ports(&["web", "db", "api"], &[1, 2, 3], None)
                .is_some()
        );
        assert!(
            shapes
                .ports(&["db", "db", "api"], &[1, 2, 3], None)
                .is_none()
        );
    }
}
