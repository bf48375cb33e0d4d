//! Read what can be read from a damaged `ports.json`: the complete `allocated_ports` entries
//! before a cut or a bad byte. Pure: bytes in, (worktree, service, port) out. Used by `repair`.

/// Every complete `"worktree": {"service": port}` pair under `allocated_ports`, in file order.
pub fn allocated_ports(bytes: &[u8]) -> Vec<(String, String, u64)> {
    let text = String::from_utf8_lossy(bytes);
    let mut out = Vec::new();
    let Some(start) = text.find("\"allocated_ports\"") else {
        return out;
    };
    let mut s = Scanner {
        b: text.as_bytes(),
        i: start + "\"allocated_ports\"".len(),
    };
    let _ = s.entries(&mut out);
    out
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl Scanner<'_> {
    fn ws(&mut self) {
        while self.i < self.b.len() && self.b[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        self.ws();
        (self.b.get(self.i) == Some(&c)).then(|| self.i += 1)
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.b.get(self.i).copied()
    }

    /// A JSON string, decoded by serde_json once its end is found.
    fn string(&mut self) -> Option<String> {
        self.ws();
        if self.b.get(self.i) != Some(&b'"') {
            return None;
        }
        let start = self.i;
        let mut j = self.i + 1;
        while j < self.b.len() {
            match self.b[j] {
                b'\\' => j += 2,
                b'"' => {
                    let s = serde_json::from_slice(&self.b[start..=j]).ok()?;
                    self.i = j + 1;
                    return Some(s);
                }
                _ => j += 1,
            }
        }
        None
    }

    fn number(&mut self) -> Option<u64> {
        self.ws();
        let start = self.i;
        while self.i < self.b.len() && self.b[self.i].is_ascii_digit() {
            self.i += 1;
        }
        // A number cut by the end of the file is not a number we can trust.
        if self.i == start || self.i == self.b.len() {
            return None;
        }
        std::str::from_utf8(&self.b[start..self.i])
            .ok()?
            .parse()
            .ok()
    }

    /// `: { "wt": { "svc": port, ... }, ... }`; stops at the first thing it cannot read.
    fn entries(&mut self, out: &mut Vec<(String, String, u64)>) -> Option<()> {
        self.eat(b':')?;
        self.eat(b'{')?;
        loop {
            if self.peek()? == b'}' {
                return Some(());
            }
            let wt = self.string()?;
            self.eat(b':')?;
            self.eat(b'{')?;
            let mut pairs = Vec::new();
            loop {
                if self.peek()? == b'}' {
                    self.i += 1;
                    break;
                }
                let svc = self.string()?;
                self.eat(b':')?;
                let port = self.number();
                // Keep what was complete even if this pair is not.
                let Some(port) = port else {
                    out.extend(pairs);
                    return None;
                };
                pairs.push((wt.clone(), svc, port));
                if self.peek()? == b',' {
                    self.i += 1;
                }
            }
            out.extend(pairs);
            if self.peek()? == b',' {
                self.i += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"version": 1, "allocated_ports": {"a \"x\"": {"db": 5432, "web": 8080}, "b": {"web": 8081}}, "history": []}"#;

    #[test]
    fn reads_a_whole_file() {
        assert_eq!(
            allocated_ports(GOOD.as_bytes()),
            [
                ("a \"x\"".to_string(), "db".to_string(), 5432),
                ("a \"x\"".to_string(), "web".to_string(), 8080),
                ("b".to_string(), "web".to_string(), 8081),
            ]
        );
    }

    #[test]
    fn keeps_what_comes_before_a_cut_at_any_offset() {
        for cut in 0..GOOD.len() {
            let got = allocated_ports(&GOOD.as_bytes()[..cut]);
            // Never invents anything: every salvaged entry is in the whole file.
            let whole = allocated_ports(GOOD.as_bytes());
            assert!(got.iter().all(|e| whole.contains(e)), "cut {cut}: {got:?}");
            // A number cut short is dropped, not shortened (8080 -> 80).
            assert!(
                got.iter().all(|(_, _, p)| [5432, 8080, 8081].contains(p)),
                "cut {cut}"
            );
        }
        let cut = GOOD.find("\"b\"").unwrap();
        assert_eq!(allocated_ports(&GOOD.as_bytes()[..cut]).len(), 2);
    }

    #[test]
    fn garbage_gives_nothing_and_never_panics() {
        assert!(allocated_ports(b"\x00\xff garbage").is_empty());
        assert!(allocated_ports(b"{\"allocated_ports\": [1, 2]}").is_empty());
        assert!(allocated_ports(b"\"allocated_ports\"").is_empty());
        assert!(allocated_ports(b"{\"allocated_ports\": {\"a\": {\"web\": -1}}}").is_empty());
    }
}
