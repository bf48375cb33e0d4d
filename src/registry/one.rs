//! One worktree's ports from the bytes of `ports.json`, without building the registry: `get`
//! of one worktree of 10,000 parsed 2.4 MB into 10,000 entries (14.8 ms, against 2.5 ms in a
//! small repository). The measured fast path, on its own; it reads only as far as it scans.
//!
//! Scans the top-level keys until it has seen `version`, `port_ranges` and `allocated_ports`
//! (or reaches `worktrees` after `version` and `allocated_ports`: the tool writes them in that
//! order, and a file with sorted keys has them before `worktrees` too), checks what
//! [`super::Registry::validate`] checks of them (the version known, every port in 1024-65535
//! and registered once, every range in order), and keeps only the asked worktree's ports. The
//! records and the history after them are not read: damage there is found by the next command
//! that takes the lock. Anything it does not understand (an escape in a number, a float, a
//! key twice, bytes that are not JSON) is `None`: the caller reads the file the whole way,
//! which recovers a damaged file from its backup and says so. Pure: bytes in, answer out.

use std::collections::BTreeMap;

use super::VERSION;
use super::codec::ends_raw;
use crate::model::config::MIN_PORT;
use crate::model::portset::PortSet;

/// What the scan found.
#[derive(Debug, PartialEq, Eq)]
pub enum One {
    /// The worktree's ports, by service.
    Ports(BTreeMap<String, u16>),
    /// The file is sound as far as the scan read it, and `allocated_ports` has no such key.
    Absent,
}

/// The ports `key` holds in the registry `bytes`, if the scan is sure (see the module doc).
pub fn ports_of(bytes: &[u8], key: &str) -> Option<One> {
    ports_in(bytes, key)
}

/// [`ports_of`], reading `src` only as far as the scan goes, 64 KiB at a time into one small
/// buffer (a 10,000-worktree registry's 2.4 MB cost 1.8 ms of page faults read whole into
/// fresh memory, and the scan needs its first 800 KB).
pub fn ports_in(src: impl std::io::Read, key: &str) -> Option<One> {
    let mut s = Scan {
        src,
        buf: Vec::with_capacity(CHUNK),
        base: 0,
        i: 0,
        mark: 0,
    };
    for _ in 0..3 {
        // The first three bytes in the window, however the input hands them out.
        if s.buf.len() < 3 && s.fill().is_none() {
            break;
        }
    }
    if s.buf.starts_with(b"\xEF\xBB\xBF") {
        s.i = 3;
    }
    let (mut version, mut ranges, mut allocated) = (false, false, None);
    s.expect(b'{')?;
    if s.peek()? == b'}' {
        return None;
    }
    loop {
        let name = s.string()?;
        s.expect(b':')?;
        let name = match name {
            Str::Raw(r) => Name::of(s.at(r)),
            Str::Escaped(_) => return None,
        };
        match name {
            Name::Version => {
                if version || s.number()? > VERSION {
                    return None;
                }
                version = true;
            }
            Name::Ranges => {
                if ranges {
                    return None;
                }
                s.ranges()?;
                ranges = true;
            }
            Name::Allocated => {
                if allocated.is_some() {
                    return None;
                }
                allocated = Some(s.allocated(key)?);
            }
            Name::Worktrees if version && allocated.is_some() => break,
            _ => s.skip_value(0)?,
        }
        if version && ranges && allocated.is_some() {
            break;
        }
        match s.next()? {
            b',' => continue,
            b'}' => break,
            _ => return None,
        }
    }
    match allocated? {
        Some(ports) => Some(One::Ports(ports)),
        None => Some(One::Absent),
    }
}

/// Why [`compact_ports`] did not check an entry.
enum Unsure {
    /// It breaks a rule the full parse would refuse it for (a port twice, below 1024).
    Bad,
    /// Not written compact, or not all in the window: the general path reads it.
    Form,
}

/// `{"svc":port,...}` written compact at the start of `b`: every port checked and marked in
/// `seen`; the bytes it took. Marks nothing unless it returns Ok or Bad.
fn compact_ports(b: &[u8], seen: &mut PortSet) -> Result<usize, Unsure> {
    let mut ports = [0u16; 16];
    let mut n = 0;
    let mut rest = match b {
        [b'{', b'}', ..] => return Ok(2),
        [b'{', rest @ ..] => rest,
        _ => return Err(Unsure::Form),
    };
    loop {
        let q = plain_key(rest).ok_or(Unsure::Form)?;
        let digits = &rest[q + 3..];
        let (port, len) = plain_port(digits).ok_or(Unsure::Form)?;
        if n == ports.len() {
            return Err(Unsure::Form);
        }
        ports[n] = port;
        n += 1;
        match digits.get(len) {
            Some(b',') => rest = &digits[len + 1..],
            Some(b'}') => {
                rest = &digits[len + 1..];
                break;
            }
            _ => return Err(Unsure::Form),
        }
    }
    for &port in &ports[..n] {
        if !mark(seen, port) {
            return Err(Unsure::Bad);
        }
    }
    Ok(b.len() - rest.len())
}

/// Printable ASCII but `"` and `\\`: what a plain name is made of.
const PLAIN: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0x20;
    while c < 0x80 {
        t[c] = c != b'"' as usize && c != b'\\' as usize;
        c += 1;
    }
    t
};

/// The length of the plain name at the start of `b` (printable ASCII, no escapes), if a quote
/// ends it there.
#[inline]
pub(super) fn plain_name(b: &[u8]) -> Option<usize> {
    let n = b.iter().position(|&c| !PLAIN[usize::from(c)])?;
    (b[n] == b'"').then_some(n)
}

/// `"name":` at the start of `b`, the name plain (printable ASCII, no escapes): the name's
/// length (it starts at 1; the value at `len + 3`). The compact form as the tool writes it,
/// read here and by the codec's reader of `allocated_ports`.
#[inline]
pub(super) fn plain_key(b: &[u8]) -> Option<usize> {
    let [b'"', after @ ..] = b else {
        return None;
    };
    let n = plain_name(after)?;
    (after.get(n + 1) == Some(&b':')).then_some(n)
}

/// A port at the start of `b` as the compact form writes it: 1 to 5 digits, no leading zero,
/// at most 65535. The port and how many digits it took.
#[inline]
pub(super) fn plain_port(b: &[u8]) -> Option<(u16, usize)> {
    let (mut port, mut len) = (0u32, 0);
    while let Some(&d @ b'0'..=b'9') = b.get(len) {
        port = port * 10 + u32::from(d - b'0');
        len += 1;
        if len > 5 {
            return None;
        }
    }
    if len == 0 || (len > 1 && b[0] == b'0') {
        return None;
    }
    Some((u16::try_from(port).ok()?, len))
}

/// Mark `port` in `seen`; false when it is below 1024 or marked already (registered twice).
fn mark(seen: &mut PortSet, port: u16) -> bool {
    seen.insert(port) && port >= MIN_PORT
}

/// Where [`compact_entries`] stopped.
enum Stop {
    /// After the object's closing brace.
    End,
    /// A port twice, or below 1024.
    Bad,
    /// After an entry's value, before what follows it (not `,` or `}` right away).
    AfterValue,
    /// At an entry the general path reads: `key`'s own, one not written compact, or one
    /// the window does not hold whole.
    Slow,
}

/// `allocated_ports` entries of other worktrees than `key`, written compact
/// (`"name":{"svc":port,...},`), from the start of `b` (at an entry's opening quote): each
/// checked with [`compact_ports`]. Returns the bytes it took and where it stopped.
fn compact_entries(b: &[u8], key: &[u8], seen: &mut PortSet) -> (usize, Stop) {
    let mut at = 0;
    loop {
        // The name: plain ASCII, no escapes, not `key`.
        let Some(n) = b.get(at..).and_then(plain_key) else {
            return (at, Stop::Slow);
        };
        // Names differ at their end more often than not (`worktree-04242`): a byte first.
        let name = &b[at + 1..at + 1 + n];
        if name.last() == key.last() && name == key {
            return (at, Stop::Slow);
        }
        let value = at + n + 3;
        let end = match compact_ports(&b[value..], seen) {
            Ok(n) => value + n,
            Err(Unsure::Bad) => return (at, Stop::Bad),
            Err(Unsure::Form) => return (at, Stop::Slow),
        };
        match b.get(end) {
            Some(b',') => at = end + 1,
            Some(b'}') => return (end + 1, Stop::End),
            _ => return (end, Stop::AfterValue),
        }
    }
}

/// The top-level keys the scan looks for.
enum Name {
    Version,
    Ranges,
    Allocated,
    Worktrees,
    Other,
}

impl Name {
    fn of(b: &[u8]) -> Name {
        match b {
            b"version" => Name::Version,
            b"port_ranges" => Name::Ranges,
            b"allocated_ports" => Name::Allocated,
            b"worktrees" => Name::Worktrees,
            _ => Name::Other,
        }
    }
}

const CHUNK: usize = 64 * 1024;

/// A string as written, by its place in the input: the bytes between the quotes (no
/// escapes), or the whole literal with its quotes (escapes, for serde_json to decode).
enum Str {
    Raw(std::ops::Range<usize>),
    Escaped(std::ops::Range<usize>),
}

struct Scan<R> {
    src: R,
    /// A window on the input: `buf[0]` is the input's byte `base`.
    buf: Vec<u8>,
    base: usize,
    /// The input position of the next byte.
    i: usize,
    /// The start of the last string: a refill keeps it (and what follows) in the window.
    mark: usize,
}

impl<R: std::io::Read> Scan<R> {
    /// Read the next chunk into the window, dropping what is before the last string; None at
    /// the end of the input or on an error.
    #[cold]
    fn fill(&mut self) -> Option<()> {
        let keep = self.mark.max(self.base) - self.base;
        self.buf.drain(..keep);
        self.base += keep;
        let at = self.buf.len();
        self.buf.resize(at + CHUNK, 0);
        loop {
            match self.src.read(&mut self.buf[at..]) {
                Ok(n) => {
                    self.buf.truncate(at + n);
                    return (n > 0).then_some(());
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.buf.truncate(at);
                    return None;
                }
            }
        }
    }

    /// The next byte, not consumed.
    #[inline(always)]
    fn byte(&mut self) -> Option<u8> {
        if self.i - self.base == self.buf.len() {
            self.fill()?;
        }
        Some(self.buf[self.i - self.base])
    }

    /// The input's bytes `r` (in the window: the last string's).
    fn at(&self, r: std::ops::Range<usize>) -> &[u8] {
        &self.buf[r.start - self.base..r.end - self.base]
    }

    /// The next byte that is not white space, not consumed.
    #[inline(always)]
    fn peek(&mut self) -> Option<u8> {
        loop {
            match self.byte()? {
                b' ' | b'\n' | b'\r' | b'\t' => self.i += 1,
                c => return Some(c),
            }
        }
    }

    /// The next byte that is not white space, consumed.
    #[inline(always)]
    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    #[inline(always)]
    fn expect(&mut self, c: u8) -> Option<()> {
        (self.next()? == c).then_some(())
    }

    /// A string, checked to be UTF-8 as the whole file must be (outside strings JSON is
    /// ASCII, which the scan checks byte by byte).
    fn string(&mut self) -> Option<Str> {
        self.expect(b'"')?;
        let start = self.i;
        self.mark = start - 1;
        let mut escaped = false;
        loop {
            let rest = &self.buf[self.i - self.base..];
            match rest.iter().position(|&c| ends_raw(c)) {
                None => {
                    self.i += rest.len();
                    self.fill()?;
                }
                Some(n) => {
                    self.i += n;
                    match rest[n] {
                        b'"' => break,
                        b'\\' => {
                            escaped = true;
                            self.i += 1;
                            self.byte()?;
                            self.i += 1;
                        }
                        _ => return None,
                    }
                }
            }
        }
        self.i += 1;
        let raw = self.at(start..self.i - 1);
        if !raw.is_ascii() {
            std::str::from_utf8(raw).ok()?;
        }
        Some(match escaped {
            false => Str::Raw(start..self.i - 1),
            true => Str::Escaped(start - 1..self.i),
        })
    }

    /// A string read, decoded.
    fn text(&self, s: &Str) -> Option<String> {
        match s {
            Str::Raw(r) => Some(std::str::from_utf8(self.at(r.clone())).ok()?.to_string()),
            Str::Escaped(r) => serde_json::from_slice::<String>(self.at(r.clone())).ok(),
        }
    }

    /// A non-negative integer (the only numbers the fields scanned here hold).
    #[inline]
    fn number(&mut self) -> Option<u64> {
        let first = self.peek()?;
        let (mut n, mut digits) = (0u64, 0);
        while let Some(d @ b'0'..=b'9') = self.byte() {
            n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
            digits += 1;
            self.i += 1;
        }
        // JSON has no leading zeros; a fraction or exponent is not a port.
        if digits == 0 || (digits > 1 && first == b'0') {
            return None;
        }
        match self.byte() {
            Some(b'.' | b'e' | b'E') => None,
            _ => Some(n),
        }
    }

    fn port(&mut self) -> Option<u16> {
        u16::try_from(self.number()?).ok()
    }

    /// `{"svc": [lo, hi], ...}`, every range in order.
    fn ranges(&mut self) -> Option<()> {
        self.object(|s, _| {
            s.expect(b'[')?;
            let lo = s.port()?;
            s.expect(b',')?;
            let hi = s.port()?;
            s.expect(b']')?;
            (lo <= hi).then_some(())
        })
    }

    /// `allocated_ports`: every port checked; `key`'s ports kept.
    fn allocated(&mut self, key: &str) -> Option<Option<BTreeMap<String, u16>>> {
        let mut seen = PortSet::new();
        let mut found = None;
        self.expect(b'{')?;
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(None);
        }
        loop {
            // Other worktrees' entries written compact, many at once.
            let (n, stop) =
                compact_entries(&self.buf[self.i - self.base..], key.as_bytes(), &mut seen);
            self.i += n;
            match stop {
                Stop::End => return Some(found),
                Stop::Bad => return None,
                Stop::AfterValue => {}
                Stop::Slow => {
                    let name = self.string()?;
                    self.expect(b':')?;
                    let mine = match &name {
                        Str::Raw(r) => self.at(r.clone()) == key.as_bytes(),
                        Str::Escaped(_) => self.text(&name)? == key,
                    };
                    if mine && found.is_some() {
                        return None;
                    }
                    let mut ports = BTreeMap::new();
                    self.object(|s, service| {
                        let service = match mine {
                            true => Some(s.text(&service)?),
                            false => None,
                        };
                        let port = s.port()?;
                        if !mark(&mut seen, port) {
                            return None;
                        }
                        if let Some(service) = service
                            && ports.insert(service, port).is_some()
                        {
                            return None;
                        }
                        Some(())
                    })?;
                    if mine {
                        found = Some(ports);
                    }
                }
            }
            match self.next()? {
                b',' => continue,
                b'}' => return Some(found),
                _ => return None,
            }
        }
    }

    /// An object, `value` called for each member after its colon, with its name.
    #[inline]
    fn object(&mut self, mut value: impl FnMut(&mut Self, Str) -> Option<()>) -> Option<()> {
        self.expect(b'{')?;
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(());
        }
        loop {
            let name = self.string()?;
            self.expect(b':')?;
            value(self, name)?;
            match self.next()? {
                b',' => continue,
                b'}' => return Some(()),
                _ => return None,
            }
        }
    }

    /// Any JSON value, checked for its shape, not kept. Nesting is bounded, as serde_json's.
    fn skip_value(&mut self, depth: usize) -> Option<()> {
        if depth > 128 {
            return None;
        }
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' => self.object(|s, _| s.skip_value(depth + 1)),
            b'[' => {
                self.i += 1;
                if self.peek()? == b']' {
                    self.i += 1;
                    return Some(());
                }
                loop {
                    self.skip_value(depth + 1)?;
                    match self.next()? {
                        b',' => continue,
                        b']' => return Some(()),
                        _ => return None,
                    }
                }
            }
            b't' => self.word(b"true"),
            b'f' => self.word(b"false"),
            b'n' => self.word(b"null"),
            _ => {
                // Any JSON number: serde_json judges its form.
                let start = self.i;
                self.mark = start;
                while let Some(b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9') = self.byte() {
                    self.i += 1;
                }
                serde_json::from_slice::<serde::de::IgnoredAny>(self.at(start..self.i)).ok()?;
                Some(())
            }
        }
    }

    fn word(&mut self, w: &[u8]) -> Option<()> {
        for &c in w {
            if self.byte()? != c {
                return None;
            }
            self.i += 1;
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, u16)]) -> BTreeMap<String, u16> {
        pairs.iter().map(|(s, p)| (s.to_string(), *p)).collect()
    }

    const FILE: &str = r#"{"version":1,"port_ranges":{"web":[8080,8099]},"allocated_ports":{"main":{"web":8080,"db":5432},"feat":{"web":8081}},"worktrees":{"main":{"path":"/x"}},"history":[]}"#;

    #[test]
    fn finds_one_worktree_and_stops_before_the_records() {
        assert_eq!(
            ports_of(FILE.as_bytes(), "main"),
            Some(One::Ports(map(&[("db", 5432), ("web", 8080)])))
        );
        assert_eq!(ports_of(FILE.as_bytes(), "nope"), Some(One::Absent));
        // Damage after `allocated_ports` is not read (the next locked command finds it).
        let cut = &FILE[..FILE.find("\"worktrees\"").unwrap() + 14];
        assert!(matches!(
            ports_of(cut.as_bytes(), "feat"),
            Some(One::Ports(_))
        ));
    }

    #[test]
    fn the_compact_loop_hands_over_to_the_general_path_and_back() {
        // Compact entries, then one the loop leaves to the general path (a name with a
        // non-ASCII byte, one with spaces), then compact again, the asked one last.
        let f = "{\"version\":1,\"allocated_ports\":{\"a\":{\"web\":8080},\"b\u{e9}\":{\"web\":8081},\"c\": { \"web\" : 8082 },\"d\":{\"web\":8083,\"db\":5432},\"e\":{\"web\":8084}},\"worktrees\":{}}";
        assert_eq!(
            ports_of(f.as_bytes(), "e"),
            Some(One::Ports(map(&[("web", 8084)])))
        );
        assert_eq!(
            ports_of(f.as_bytes(), "b\u{e9}"),
            Some(One::Ports(map(&[("web", 8081)])))
        );
        assert_eq!(
            ports_of(f.as_bytes(), "c"),
            Some(One::Ports(map(&[("web", 8082)])))
        );
        // A port twice across the two paths is still found.
        let twice = f.replace("8084", "8082");
        assert_eq!(ports_of(twice.as_bytes(), "a"), None);
        let twice = f.replace("8081", "8080");
        assert_eq!(ports_of(twice.as_bytes(), "e"), None);
        for (name, ok) in [
            ("plain", true),
            ("tab\there", false),
            ("esc\\aped", false),
            ("\u{7f}", true),
        ] {
            let b = format!("{name}\":");
            assert_eq!(plain_name(b.as_bytes()).is_some(), ok, "{name:?}");
        }
    }

    #[test]
    fn reads_across_chunks_whatever_the_boundaries() {
        // A reader that hands out one byte at a time: every token crosses a chunk boundary.
        struct Trickle<'a>(&'a [u8]);
        impl std::io::Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let Some((first, rest)) = self.0.split_first() else {
                    return Ok(0);
                };
                buf[0] = *first;
                self.0 = rest;
                Ok(1)
            }
        }
        let f = r#"{"version":1,"allocated_ports":{"f\u00e9e":{"web":8080},"x":{"w\"b":8081}},"worktrees":{}}"#;
        assert_eq!(
            ports_in(Trickle(f.as_bytes()), "fée"),
            Some(One::Ports(map(&[("web", 8080)])))
        );
        assert_eq!(
            ports_in(Trickle(f.as_bytes()), "x"),
            Some(One::Ports(map(&[("w\"b", 8081)])))
        );
    }

    #[test]
    fn agrees_with_the_full_parse_on_every_file_it_answers_for() {
        let files = [
            FILE.to_string(),
            // Sorted keys (jq -S), indented, a BOM, a seed file without version.
            r#"{"allocated_ports": {"main": {"web": 8080}}, "history": [{"a": [1, 2.5e3, null, true]}], "port_ranges": {"web": [8080, 8099]}, "version": 1, "worktrees": {}}"#.to_string(),
            "\u{feff}{\n  \"allocated_ports\": {\"main\": {\"web\": 8080}},\n  \"port_ranges\": {}\n}\n".to_string(),
            r#"{"allocated_ports":{"f\u00e9e":{"web":8080}},"port_ranges":{}}"#.to_string(),
        ];
        for f in &files {
            let full = super::super::parse(f.as_bytes()).unwrap();
            for key in ["main", "fée", "nope"] {
                let want = match full.ports(key) {
                    Some(p) => One::Ports(p.to_map()),
                    None => One::Absent,
                };
                assert_eq!(ports_of(f.as_bytes(), key), Some(want), "{f} {key}");
            }
        }
    }

    #[test]
    fn is_unsure_where_the_full_parse_would_refuse_or_recover() {
        let bad = [
            "",
            "  ",
            "[]",
            "{}",
            r#"{"version":3,"allocated_ports":{}}"#,
            r#"{"allocated_ports":{"main":{"web":8080},"feat":{"web":8080}},"version":1,"worktrees":{}}"#,
            r#"{"allocated_ports":{"main":{"web":80}},"version":1,"worktrees":{}}"#,
            r#"{"allocated_ports":{"main":{"web":70000}},"version":1,"worktrees":{}}"#,
            r#"{"allocated_ports":{"main":{"web":8080.0}},"version":1,"worktrees":{}}"#,
            r#"{"allocated_ports":{"main":{"web":08080}},"version":1,"worktrees":{}}"#,
            r#"{"port_ranges":{"web":[8099,8080]},"allocated_ports":{},"version":1}"#,
            r#"{"version":1,"allocated_ports":{"main":{"web":8080}"#,
            r#"{"version":1,"allocated_ports":{"ma"#,
            "{\"version\":1,\"allocated_ports\":{\"m\u{1}\":{}}}",
            r#"{"version":1,"version":1,"allocated_ports":{}}"#,
            r#"{"version":1,"allocated_ports":{"main":{"web":8080,"web":8081}},"worktrees":{}}"#,
        ];
        for f in bad {
            assert_eq!(ports_of(f.as_bytes(), "main"), None, "{f}");
        }
        let mut not_utf8 = br#"{"version":1,"allocated_ports":{"x"#.to_vec();
        not_utf8.extend([0xff, b'"', b':', b'{', b'}', b'}', b',']);
        not_utf8.extend(br#""worktrees":{}}"#);
        assert_eq!(ports_of(&not_utf8, "main"), None);
    }
}
