//! A set of ports as one bit each: 8 KiB for all 65,536, no hashing and no sort for the
//! 50,000 ports of 10,000 worktrees. Pure.

/// A set of ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSet(Vec<u64>);

impl Default for PortSet {
    fn default() -> Self {
        PortSet(vec![0; 1024])
    }
}

impl PortSet {
    /// An empty set.
    pub fn new() -> PortSet {
        PortSet::default()
    }

    /// Add `port`; false when it was in the set already.
    pub fn insert(&mut self, port: u16) -> bool {
        let (word, bit) = (usize::from(port) / 64, 1u64 << (port % 64));
        let fresh = self.0[word] & bit == 0;
        self.0[word] |= bit;
        fresh
    }

    /// Whether `port` is in the set.
    pub fn contains(&self, port: u16) -> bool {
        self.0[usize::from(port) / 64] & (1 << (port % 64)) != 0
    }

    /// The ports as sorted runs of consecutive ports, `[first, last]`.
    pub fn runs(&self) -> Vec<[u16; 2]> {
        let mut out: Vec<[u16; 2]> = Vec::new();
        let mut open: Option<u16> = None;
        for (w, word) in self.0.iter().enumerate() {
            if *word == 0 && open.is_none() {
                continue;
            }
            for b in 0..64 {
                let port = (w * 64 + b) as u16;
                match (word >> b & 1 == 1, open) {
                    (true, None) => open = Some(port),
                    (false, Some(start)) => {
                        out.push([start, port - 1]);
                        open = None;
                    }
                    _ => {}
                }
            }
        }
        if let Some(start) = open {
            out.push([start, u16::MAX]);
        }
        out
    }
}

impl FromIterator<u16> for PortSet {
    fn from_iter<I: IntoIterator<Item = u16>>(ports: I) -> PortSet {
        let mut set = PortSet::new();
        ports.into_iter().for_each(|p| {
            set.insert(p);
        });
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_says_whether_a_port_was_new_and_runs_join_neighbours() {
        let mut set = PortSet::new();
        assert!(set.insert(8080));
        assert!(!set.insert(8080));
        assert!(set.contains(8080) && !set.contains(8081));
        let set: PortSet = [8081, 8080, 5432, 63, 64, 65535, 0].into_iter().collect();
        assert_eq!(
            set.runs(),
            vec![[0, 0], [63, 64], [5432, 5432], [8080, 8081], [65535, 65535]]
        );
        assert_eq!(PortSet::new().runs(), Vec::<[u16; 2]>::new());
    }
}
