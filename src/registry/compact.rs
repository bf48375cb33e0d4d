//! The registry as this tool writes it, read by hand in one pass: compact JSON (no white space
//! but a final newline) whose object keys are plain (printable ASCII, no escapes). No I/O.
//!
//! serde's check of the text was a third of reading a 10,000-worktree registry: it read
//! `allocated_ports` twice (once to check it, once by hand), and every record and history
//! entry through its visitors only to keep them as spans. Here each value is checked once, by
//! [`skip_value`], as strictly as serde_json checks a value it skips. Anything else (white
//! space, an escaped key, a key twice, a value serde would refuse) is `None`, and the caller
//! reads the file with serde, which also says what is wrong: this reader never refuses a file
//! and never accepts one serde refuses (a test mutates files to check both ways).

use std::sync::Arc;

use serde_json::value::RawValue;

use super::codec::{Sorted, compact_allocated_prefix, ends_raw, seen_twice, unique_map};
use super::one::plain_key;
use super::ports::Shapes;
use super::records::Records;
use super::{Key, Raw, RecordJson, Registry, Text};
use crate::sys::fsio::FileText;

/// Nesting deeper than this is left to serde (which refuses past 128).
const DEPTH: usize = 100;

/// From this size on, the records are read on a second thread while this one reads the rest.
/// Measured on the benchmark's 10,000-worktree registry (2.3 MB, of which 1.5 MB records):
/// see BENCHMARKS.md, "Sixteenth session".
const RECORDS_AHEAD_FROM: usize = 512 * 1024;

/// What ends `allocated_ports` and starts `worktrees` in the file this tool writes: `}}` (the
/// last worktree's ports, then the map) can only be followed by a top-level key there.
const WORKTREES_AFTER_PORTS: &[u8] = b"}},\"worktrees\":";

/// The registry in `file[start..]`, or None to read it with serde.
pub(super) fn read(file: &Arc<FileText>, start: usize) -> Option<Registry> {
    read_with(file, start, RECORDS_AHEAD_FROM)
}

/// [`read`], the records read ahead on a second thread from `ahead_from` bytes on. Where the
/// records seem to start is a guess (the first [`WORKTREES_AFTER_PORTS`]), used only when the
/// reading of everything before them ends exactly there; otherwise the records are read in
/// turn, so the answer is always the one-thread answer.
fn read_with(file: &Arc<FileText>, start: usize, ahead_from: usize) -> Option<Registry> {
    let text = &file[start..];
    // JSON's white space after the document (a final newline).
    let end = text.trim_end_matches([' ', '\t', '\n', '\r']).len();
    let (text, b) = (&text[..end], &text.as_bytes()[..end]);
    if b.first() != Some(&b'{') {
        return None;
    }
    let guess = (b.len() >= ahead_from)
        .then(|| memchr::memmem::find(b, WORKTREES_AFTER_PORTS))
        .flatten()
        .map(|at| at + WORKTREES_AFTER_PORTS.len());
    std::thread::scope(|scope| {
        let mut ahead = guess.map(|at| (at, scope.spawn(move || record_spans(text, at))));
        read_from(file, text, &mut |at, reg| match ahead.take() {
            Some((guessed, read)) if guessed == at => {
                let (spans, end) = read.join().expect("reading records does not panic")?;
                records_from(file, text, spans, reg)?;
                Some(end)
            }
            _ => records(file, text, at, reg),
        })
    })
}

/// What reads `worktrees` at a position into the registry, and says where it ends.
type ReadRecords<'a> = dyn FnMut(usize, &mut Registry) -> Option<usize> + 'a;

/// The document `text` (trimmed, starting with `{`), its records read by `read_records`.
fn read_from(
    file: &Arc<FileText>,
    text: &str,
    read_records: &mut ReadRecords<'_>,
) -> Option<Registry> {
    let b = text.as_bytes();
    let mut reg = Registry::default();
    let mut seen = [false; 5];
    let mut at = 1;
    loop {
        let n = plain_key(b.get(at..)?)?;
        let name = &text[at + 1..at + 1 + n];
        at += n + 3;
        if seen_twice(&mut seen, &reg, name) {
            return None;
        }
        at = match name {
            "version" => {
                let e = skip_value(b, at)?;
                reg.version = text[at..e].parse().ok()?;
                e
            }
            "port_ranges" => {
                let e = skip_value(b, at)?;
                reg.port_ranges = serde_json::from_str::<Sorted<[u16; 2]>>(&text[at..e])
                    .ok()?
                    .0;
                e
            }
            "allocated_ports" => {
                let (read, n) =
                    compact_allocated_prefix(file, &text[at..], &mut Shapes::default())?;
                reg.allocated_ports = read.ok()?;
                at + n
            }
            "worktrees" => read_records(at, &mut reg)?,
            "history" => history(file, text, at, &mut reg)?,
            _ => {
                let e = skip_value(b, at)?;
                let raw = serde_json::from_str::<Box<RawValue>>(&text[at..e]).ok()?;
                reg.extra.insert(name.to_owned(), Raw(raw));
                e
            }
        };
        match b.get(at) {
            Some(b',') => at += 1,
            Some(b'}') => return (at + 1 == b.len()).then_some(reg),
            _ => return None,
        }
    }
}

/// `worktrees` at `text[at..]`: each record a span of the file; where it ends.
fn records(file: &Arc<FileText>, text: &str, at: usize, reg: &mut Registry) -> Option<usize> {
    let (spans, end) = record_spans(text, at)?;
    records_from(file, text, spans, reg)?;
    Some(end)
}

/// Where a record's key and its value are in the text: `[key start, key end, value start,
/// value end]`.
type RecordSpan = super::records::Span;

/// The records of `worktrees` at `text[at..]`, checked, as spans of `text`, and where they
/// end. Builds no key and no record (the registry keeps the spans: `registry/records.rs`), so
/// it runs on another thread touching nothing the reading thread touches.
fn record_spans(text: &str, mut at: usize) -> Option<(Vec<RecordSpan>, usize)> {
    let b = text.as_bytes();
    if b.get(at) != Some(&b'{') {
        return None;
    }
    at += 1;
    // Room for records of 32 bytes or more at once: grown by doubling, the vector of a second
    // thread grows that thread's own heap a page at a time, each growth a system call that
    // holds up the page faults of the other thread.
    let mut spans = Vec::with_capacity((b.len() - at) / 32);
    if b.get(at) != Some(&b'}') {
        loop {
            let (span, e) = member(b, at)?;
            spans.push(span);
            at = e;
            match b.get(at) {
                Some(b',') => at += 1,
                Some(b'}') => break,
                _ => return None,
            }
        }
    }
    Some((spans, at + 1))
}

/// The member `"key":value` whose key's opening quote is at `b[at]`, the key plain (no
/// escapes) and the value checked by [`skip_value`]: where its key and value are, and where
/// it ends. None for anything else, and past 4 GiB (left to serde).
pub(super) fn member(b: &[u8], at: usize) -> Option<(RecordSpan, usize)> {
    let n = plain_key(b.get(at..)?)?;
    let value = at + n + 3;
    let end = skip_value(b, value)?;
    let [Some(k0), Some(k1), Some(v0), Some(v1)] =
        [at + 1, at + 1 + n, value, end].map(|i| u32::try_from(i).ok())
    else {
        return None;
    };
    Some(([k0, k1, v0, v1], end))
}

/// The records at `spans` of `text` (a part of `file`) into the registry: kept as spans of
/// the file where their keys are sorted, each once (as this tool writes them), else made
/// into a map, which also finds a key named twice.
fn records_from(
    file: &Arc<FileText>,
    text: &str,
    mut spans: Vec<RecordSpan>,
    reg: &mut Registry,
) -> Option<()> {
    // Where `text` starts in the file (after a byte order mark): the spans, of the file.
    let start = u32::try_from(text.as_ptr() as usize - file.as_ptr() as usize).ok()?;
    for s in &mut spans {
        for i in s.iter_mut() {
            *i = i.checked_add(start)?;
        }
    }
    let entries = match Records::from_spans(file, spans) {
        Ok(records) => {
            reg.worktrees = records;
            return Some(());
        }
        Err(spans) => spans,
    };
    let span = |from: u32, to: u32| Text::read(file, &file[from as usize..to as usize]);
    let entries = (entries.iter())
        .map(|&[k0, k1, v0, v1]| (Key(span(k0, k1)), RecordJson(span(v0, v1))))
        .collect();
    let map = unique_map::<_, _, serde_json::Error>(entries, "worktrees").ok()?;
    reg.worktrees = Records::from_map(map);
    Some(())
}

/// `history` at `text[at..]`: each entry a span of the file; where it ends.
fn history(file: &Arc<FileText>, text: &str, mut at: usize, reg: &mut Registry) -> Option<usize> {
    let b = text.as_bytes();
    if b.get(at) != Some(&b'[') {
        return None;
    }
    at += 1;
    if b.get(at) == Some(&b']') {
        return Some(at + 1);
    }
    loop {
        let e = skip_value(b, at)?;
        reg.history.push(Text::read(file, &text[at..e]));
        at = e;
        match b.get(at) {
            Some(b',') => at += 1,
            Some(b']') => return Some(at + 1),
            _ => return None,
        }
    }
}

/// Where the JSON value that starts at `b[at]` ends: checked by RFC 8259's grammar, with no
/// white space anywhere; None for anything else.
pub(super) fn skip_value(b: &[u8], at: usize) -> Option<usize> {
    skip(b, at, 0)
}

fn skip(b: &[u8], mut at: usize, depth: usize) -> Option<usize> {
    match *b.get(at)? {
        b'"' => skip_string(b, at),
        open @ (b'{' | b'[') => {
            if depth == DEPTH {
                return None;
            }
            let close = if open == b'{' { b'}' } else { b']' };
            at += 1;
            if b.get(at) == Some(&close) {
                return Some(at + 1);
            }
            loop {
                if open == b'{' {
                    if b.get(at) != Some(&b'"') {
                        return None;
                    }
                    at = skip_string(b, at)?;
                    if b.get(at) != Some(&b':') {
                        return None;
                    }
                    at += 1;
                }
                at = skip(b, at, depth + 1)?;
                match b.get(at) {
                    Some(b',') => at += 1,
                    Some(&c) if c == close => return Some(at + 1),
                    _ => return None,
                }
            }
        }
        b't' => literal(b, at, b"true"),
        b'f' => literal(b, at, b"false"),
        b'n' => literal(b, at, b"null"),
        b'-' | b'0'..=b'9' => skip_number(b, at),
        _ => None,
    }
}

/// Bytes that stand for themselves inside a string ([`ends_raw`]'s others; UTF-8 was checked
/// for the whole file).
const PLAIN: [bool; 256] = {
    let mut t = [true; 256];
    let mut c = 0;
    while c < 256 {
        t[c] = !ends_raw(c as u8);
        c += 1;
    }
    t
};

/// The string starting with the quote at `b[at]`: where it ends.
fn skip_string(b: &[u8], at: usize) -> Option<usize> {
    let mut i = at + 1;
    loop {
        // Eight bytes at a time up to the first that may not stand for itself.
        while let Some(chunk) = b.get(i..i + 8) {
            let hit = special(u64::from_le_bytes(chunk.try_into().expect("eight bytes")));
            if hit != 0 {
                i += (hit.trailing_zeros() / 8) as usize;
                break;
            }
            i += 8;
        }
        i += b.get(i..)?.iter().position(|&c| !PLAIN[usize::from(c)])?;
        match b[i] {
            b'"' => return Some(i + 1),
            b'\\' => match *b.get(i + 1)? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i += 2,
                b'u' if b.get(i + 2..i + 6)?.iter().all(u8::is_ascii_hexdigit) => i += 6,
                _ => return None,
            },
            _ => return None,
        }
    }
}

/// The high bit of each byte of `w` (read little-endian) that is a quote, a backslash or a
/// control character: exact for the lowest one set (a borrow can only mark bytes above a byte
/// that is marked truly), which is the only one used.
fn special(w: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    zero(w ^ (ONES * u64::from(b'"'))) | zero(w ^ (ONES * u64::from(b'\\'))) | below_space
}

fn literal(b: &[u8], at: usize, word: &[u8]) -> Option<usize> {
    (b.get(at..at + word.len())? == word).then_some(at + word.len())
}

/// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?` at `b[at]`: where it ends.
fn skip_number(b: &[u8], mut at: usize) -> Option<usize> {
    let digits = |at: usize| at + b[at..].iter().take_while(|c| c.is_ascii_digit()).count();
    if b[at] == b'-' {
        at += 1;
    }
    at = match *b.get(at)? {
        b'0' => at + 1,
        b'1'..=b'9' => digits(at + 1),
        _ => return None,
    };
    if b.get(at) == Some(&b'.') {
        let end = digits(at + 1);
        if end == at + 1 {
            return None;
        }
        at = end;
    }
    if matches!(b.get(at), Some(b'e' | b'E')) {
        at += 1;
        if matches!(b.get(at), Some(b'+' | b'-')) {
            at += 1;
        }
        let end = digits(at);
        if end == at {
            return None;
        }
        at = end;
    }
    Some(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A registry in the compact form, with what real ones hold: escapes and non-ASCII text
    /// in values, numbers of every shape, nested and empty values, unknown keys.
    const SAMPLE: &str = concat!(
        r#"{"version":1,"port_ranges":{"db":[5432,5439],"web":[8080,8099]},"#,
        r#""allocated_ports":{"main":{"db":5432,"web":8080},"wt-1":{"db":5433,"web":8081},"e":{}},"#,
        r#""worktrees":{"main":{"path":"/src/caf\u00e9 \"x\"\\y","branch":null,"slot":0,"#,
        r#""allocated_at":"2026-01-01T00:00:00Z","extra":[1,-2.5e+3,0.0,1E-2,true,false,{},[]]},"#,
        r#""wt-1":{"path":"/src/é/wt-1","branch":"a/b","id":"x\/y\n\t\b\f\r"}},"#,
        r#""history":[{"action":"assigned","port":8081},{"note":"ü"},[],"s",7,null],"#,
        r#""owner":{"team":"a","tags":["x",{"y":[[]]}]},"flag":false}"#,
        "\n"
    );

    /// The hand reader's answer (the same with the records read ahead on a second thread
    /// and in turn) and serde's.
    fn both(text: &str) -> Option<(Option<Registry>, Result<Registry, serde_json::Error>)> {
        let file = Arc::new(FileText::new(text.as_bytes().to_vec().into()).ok()?);
        let in_turn = read_with(&file, 0, usize::MAX);
        assert_eq!(read_with(&file, 0, 0), in_turn, "read ahead: {text}");
        Some((in_turn, super::super::codec::serde_document(&file, text)))
    }

    /// The records are read ahead from where the first `}},"worktrees":` says they start, and
    /// that guess is used only when it is where they start: a worktree named `worktrees`, and
    /// an unknown key before the ports that holds the same bytes, are read as in turn.
    #[test]
    fn records_read_ahead_only_from_where_they_start() {
        let texts = [
            SAMPLE.to_string(),
            SAMPLE.replace("\"wt-1\"", "\"worktrees\""),
            format!(
                "{{\"x\":{{\"a\":{{\"b\":{{}}}},\"worktrees\":{{}}}},{}",
                &SAMPLE[1..]
            ),
            SAMPLE.replace("\"worktrees\":{", "\"worktrees\":{\"a\":[}"),
        ];
        for text in &texts {
            let (fast, slow) = both(text).unwrap();
            match fast {
                Some(fast) => assert_eq!(fast, slow.unwrap(), "{text}"),
                None => assert!(text.contains("[}"), "{text}"),
            }
        }
        let reg = read_with(&Arc::new(FileText::from(texts[1].clone())), 0, 0).unwrap();
        assert_eq!(reg.ports("worktrees").unwrap().get("db"), Some(5433));
        assert!(reg.record("main").is_some());
    }

    #[test]
    fn the_compact_form_is_read_by_hand_as_serde_reads_it() {
        for text in [SAMPLE, r#"{"version":1,"worktrees":{},"history":[]}"#] {
            let (fast, slow) = both(text).unwrap();
            assert_eq!(fast.expect("read by hand"), slow.unwrap(), "{text}");
        }
        let reg = read(&Arc::new(FileText::from(SAMPLE.to_string())), 0).unwrap();
        assert_eq!(reg.ports("wt-1").unwrap().get("db"), Some(5433));
        assert_eq!(reg.history.len(), 6);
        assert_eq!(reg.extra.len(), 2);
        assert!(
            reg.record("main")
                .unwrap()
                .path
                .ends_with("caf\u{e9} \"x\"\\y")
        );
    }

    #[test]
    fn anything_else_is_left_to_serde() {
        let cases = [
            "{ \"version\":1}",
            "{\"version\" :1}",
            "{\"version\":1 }",
            "\n{\"version\":1}",
            "{\"ver\\u0073ion\":1}",
            "{\"version\":1,\"version\":1}",
            "{\"x\":1,\"x\":2}",
            "{\"worktrees\":{\"a\":{},\"a\":{}}}",
            "{\"allocated_ports\":{\"a\":{\"web\":8080,\"web\":8081}}}",
            "{\"version\":1.0}",
            "{\"history\":[01]}",
            "{\"history\":[1.]}",
            "{\"history\":[1e]}",
            "{\"history\":[-]}",
            "{\"history\":[\"\\x\"]}",
            "{\"history\":[\"\\u12g4\"]}",
            "{\"history\":[\"a\u{1}\"]}",
            "{\"history\":[tru]}",
            "{\"history\":[1,]}",
            "{\"history\":[{\"a\"}]}",
            "{\"history\":[]}x",
            "{}",
        ];
        for text in cases {
            let (fast, _) = both(text).unwrap();
            assert!(fast.is_none(), "{text}");
        }
        let deep = format!(
            "{{\"x\":{}{}}}",
            "[".repeat(DEPTH + 1),
            "]".repeat(DEPTH + 1)
        );
        assert!(both(&deep).unwrap().0.is_none());
    }

    /// Every byte at every position of an eight-byte window, and strings of every length
    /// around it: the word-at-a-time scan ends a string exactly where the byte scan does.
    #[test]
    fn strings_end_where_a_byte_at_a_time_scan_ends_them() {
        let slow = |b: &[u8], at: usize| {
            let mut i = at + 1;
            loop {
                match *b.get(i)? {
                    b'"' => return Some(i + 1),
                    b'\\' => match *b.get(i + 1)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i += 2,
                        b'u' if b.get(i + 2..i + 6)?.iter().all(u8::is_ascii_hexdigit) => i += 6,
                        _ => return None,
                    },
                    c if c < 0x20 => return None,
                    _ => i += 1,
                }
            }
        };
        for len in 0..20 {
            for pos in 0..len.max(1) {
                for c in 0..=255u8 {
                    let mut s = vec![b'"'];
                    s.extend(std::iter::repeat_n(b'a', len));
                    if pos < len {
                        s[1 + pos] = c;
                    }
                    s.extend_from_slice(b"\"x");
                    assert_eq!(skip_string(&s, 0), slow(&s, 0), "{s:?}");
                }
            }
        }
        // Two special bytes in one word: the first decides.
        for text in [
            &b"\"a\x01\"b\""[..],
            b"\"ab\"\x01cdefgh\"",
            b"\"\xc3\xa9\x1f\"\"",
        ] {
            assert_eq!(skip_string(text, 0), slow(text, 0), "{text:?}");
        }
    }

    /// Thousands of damaged copies of the sample (a byte changed, dropped, added, a piece
    /// repeated): whenever the hand reader accepts one, serde reads the same registry from it.
    #[test]
    fn no_damage_is_accepted_that_serde_refuses() {
        let alphabet = b"{}[]\",:0123456789-+.eEtrufalsn\\ \n/ux\x01";
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let (mut accepted, mut checked) = (0, 0);
        for _ in 0..20_000 {
            let mut b = SAMPLE.as_bytes().to_vec();
            for _ in 0..1 + next(3) {
                let at = next(b.len());
                match next(4) {
                    0 => b[at] = alphabet[next(alphabet.len())],
                    1 => {
                        b.remove(at);
                    }
                    2 => b.insert(at, alphabet[next(alphabet.len())]),
                    _ => {
                        let end = (at + 1 + next(12)).min(b.len());
                        let piece = b[at..end].to_vec();
                        b.splice(at..at, piece);
                    }
                }
            }
            let Ok(text) = String::from_utf8(b) else {
                continue;
            };
            let (fast, slow) = both(&text).unwrap();
            checked += 1;
            if let Some(fast) = fast {
                accepted += 1;
                let slow = slow.unwrap_or_else(|e| panic!("serde refuses {text:?}: {e}"));
                assert_eq!(fast, slow, "{text}");
            }
        }
        // The mutations reach both outcomes.
        assert!(
            accepted > 100 && accepted < checked - 1000,
            "{accepted} of {checked}"
        );
    }
}
