//! The bytes a client sends, checked before the HTTP parser (hyper) sees them. hyper answers
//! a request with both Content-Length and Transfer-Encoding by dropping the Content-Length
//! (RFC 9112 allows that), and headers past its buffer with 431; the proxy refuses both with
//! 400 and forwards nothing. [`Guard`] is a sans-I/O state machine that follows the framing of
//! each request on a connection (a head, then a Content-Length body or chunks, then the next
//! head) and holds each head back until it is whole; a head it refuses is replaced by bytes
//! hyper answers with 400, and nothing after it is passed on. [`Guarded`] wraps the client's
//! socket with it.
//!
//! It decides only what is refused; everything it lets through, hyper parses as before (a
//! head it cannot read is passed on as it is, for hyper's own 400).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The longest head accepted: hyper reads up to 64 KiB (`max_buf_size`).
pub const MAX_HEAD: usize = 64 * 1024;
/// At most this many header lines (hyper's own limit is 100; past it hyper says 431).
const MAX_HEADERS: usize = 100;
/// What replaces a refused head: not HTTP, so hyper answers 400 and closes.
const REFUSED: &[u8] = b"REFUSED\r\n\r\n";

/// Where in a connection's byte stream the guard is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// Collecting a request head.
    Head,
    /// In a Content-Length body: this many bytes left.
    Body(u64),
    /// In a chunked body.
    Chunk(Chunk),
    /// After an upgrade request, or a body the guard cannot follow: bytes pass unexamined.
    Opaque,
    /// A head was refused: nothing more is passed on.
    Refused,
}

/// Inside a chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// The chunk-size line; `size` so far, `ext` once past the digits.
    Size { size: u64, digits: bool, ext: bool },
    /// This many data bytes left.
    Data(u64),
    /// The CRLF after a chunk's data: bytes of it left.
    DataEnd(u8),
    /// The trailer section; `empty` while the current line has no content yet.
    Trailer { empty: bool },
}

/// The checker of one connection.
#[derive(Debug)]
pub struct Guard {
    at: At,
    head: Vec<u8>,
    /// A request of this connection asked for an upgrade (`Upgrade:`, or CONNECT).
    asked_upgrade: bool,
    /// Set by the proxy once it relayed a 101 on this connection: only then is the stream
    /// something else than HTTP. A request that merely asks keeps being checked after it.
    upgraded: Arc<AtomicBool>,
}

impl Default for Guard {
    fn default() -> Self {
        Guard::new(Arc::default())
    }
}

/// Why a head is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Both Content-Length and Transfer-Encoding.
    Conflict,
    /// Longer than [`MAX_HEAD`], or more than 100 header lines.
    TooLarge,
}

impl Guard {
    /// A guard for one connection; `upgraded` is set by whoever relays a 101 on it.
    pub fn new(upgraded: Arc<AtomicBool>) -> Guard {
        Guard {
            at: At::Head,
            head: Vec::new(),
            asked_upgrade: false,
            upgraded,
        }
    }

    /// Take `input` and append what may be passed on to `out`. Returns the refusal, once,
    /// when a head is refused.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Option<Refusal> {
        while !input.is_empty() {
            // Between requests after an upgrade that really happened (101 relayed): from here
            // on the bytes are the upgraded protocol's.
            if self.at == At::Head
                && self.asked_upgrade
                && self.head.is_empty()
                && self.upgraded.load(Ordering::Acquire)
            {
                self.at = At::Opaque;
            }
            match self.at {
                At::Refused => return None,
                At::Opaque => {
                    out.extend_from_slice(input);
                    return None;
                }
                At::Head => {
                    // Empty lines before a request line are allowed and passed on.
                    if self.head.is_empty() {
                        let blank = input
                            .iter()
                            .take_while(|b| **b == b'\r' || **b == b'\n')
                            .count();
                        out.extend_from_slice(&input[..blank]);
                        input = &input[blank..];
                        if input.is_empty() {
                            break;
                        }
                    }
                    // Look for the blank line from a little before the bytes that are new;
                    // take from `input` only up to it.
                    let before = self.head.len();
                    let from = before.saturating_sub(3);
                    self.head.extend_from_slice(input);
                    let Some(end) =
                        memchr::memmem::find(&self.head[from..], b"\r\n\r\n").map(|i| from + i + 4)
                    else {
                        if self.head.len() > MAX_HEAD {
                            return Some(self.refuse(out, Refusal::TooLarge));
                        }
                        return None;
                    };
                    self.head.truncate(end);
                    input = &input[end - before..];
                    if end > MAX_HEAD {
                        return Some(self.refuse(out, Refusal::TooLarge));
                    }
                    match self.framing() {
                        Ok((next, upgrade)) => {
                            self.asked_upgrade |= upgrade;
                            out.extend_from_slice(&self.head);
                            empty(&mut self.head);
                            self.at = next;
                        }
                        Err(why) => return Some(self.refuse(out, why)),
                    }
                }
                At::Body(left) => {
                    let n = (left.min(input.len() as u64)) as usize;
                    out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    self.at = match left - n as u64 {
                        0 => At::Head,
                        more => At::Body(more),
                    };
                }
                At::Chunk(chunk) => {
                    let n = self.chunk(chunk, input);
                    out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                }
            }
        }
        None
    }

    fn refuse(&mut self, out: &mut Vec<u8>, why: Refusal) -> Refusal {
        out.extend_from_slice(REFUSED);
        self.head = Vec::new();
        self.at = At::Refused;
        why
    }

    /// What follows the whole head in `self.head` (and whether it asks for an upgrade), or
    /// why it is refused. A head that does not parse is passed on for hyper to refuse.
    fn framing(&self) -> Result<(At, bool), Refusal> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&self.head) {
            Ok(httparse::Status::Complete(_)) => {}
            Err(httparse::Error::TooManyHeaders) => return Err(Refusal::TooLarge),
            // Not ours to judge: hyper answers it (400), and closes.
            _ => return Ok((At::Opaque, false)),
        }
        let mut length: Option<u64> = None;
        let mut te = false;
        let mut chunked = false;
        let mut upgrade = req.method == Some("CONNECT");
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                match std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse().ok())
                {
                    Some(n) => length = Some(n),
                    None => return Ok((At::Opaque, false)),
                }
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                te = true;
                chunked = h
                    .value
                    .rsplit(|b| *b == b',')
                    .next()
                    .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            } else if h.name.eq_ignore_ascii_case("upgrade") {
                upgrade = true;
            }
        }
        if te && length.is_some() {
            return Err(Refusal::Conflict);
        }
        // An upgrade request is framed like any other: the stream becomes something else only
        // if the server agrees (a 101, which the proxy reports through `upgraded`).
        let next = if te && chunked {
            At::Chunk(Chunk::Size {
                size: 0,
                digits: false,
                ext: false,
            })
        } else if te {
            // Not chunked last: hyper refuses it.
            At::Opaque
        } else {
            match length {
                Some(0) | None => At::Head,
                Some(n) => At::Body(n),
            }
        };
        Ok((next, upgrade))
    }

    /// Follow a chunked body through `input`; returns how many bytes were consumed (all
    /// passed on), leaving `self.at` where the next byte belongs.
    fn chunk(&mut self, mut chunk: Chunk, input: &[u8]) -> usize {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match chunk {
                Chunk::Size { size, digits, ext } => {
                    i += 1;
                    if b == b'\n' {
                        if !digits {
                            self.at = At::Opaque;
                            return i;
                        }
                        chunk = match size {
                            0 => Chunk::Trailer { empty: true },
                            n => Chunk::Data(n),
                        };
                    } else if ext || b == b'\r' {
                        // Extensions and the CR run to the LF.
                    } else if b == b';' || b == b' ' || b == b'\t' {
                        chunk = Chunk::Size {
                            size,
                            digits,
                            ext: true,
                        };
                    } else if let Some(d) = (b as char).to_digit(16) {
                        match size.checked_mul(16) {
                            Some(s) => {
                                chunk = Chunk::Size {
                                    size: s + d as u64,
                                    digits: true,
                                    ext,
                                }
                            }
                            None => {
                                self.at = At::Opaque;
                                return i;
                            }
                        }
                    } else {
                        // Not a chunk size: hyper will refuse the body; stop following it.
                        self.at = At::Opaque;
                        return i;
                    }
                }
                Chunk::Data(left) => {
                    let n = left.min((input.len() - i) as u64);
                    i += n as usize;
                    chunk = match left - n {
                        0 => Chunk::DataEnd(2),
                        more => Chunk::Data(more),
                    };
                }
                Chunk::DataEnd(left) => {
                    i += 1;
                    chunk = match (b, left) {
                        (b'\r', 2) => Chunk::DataEnd(1),
                        (b'\n', _) => Chunk::Size {
                            size: 0,
                            digits: false,
                            ext: false,
                        },
                        _ => {
                            self.at = At::Opaque;
                            return i;
                        }
                    };
                }
                Chunk::Trailer { empty } => {
                    i += 1;
                    if b == b'\n' {
                        if empty {
                            self.at = At::Head;
                            return i;
                        }
                        chunk = Chunk::Trailer { empty: true };
                    } else if b != b'\r' {
                        chunk = Chunk::Trailer { empty: false };
                    }
                }
            }
        }
        self.at = At::Chunk(chunk);
        i
    }
}

/// Empty `buf`, letting a large one go: an idle connection keeps no buffer worth counting
/// (1,000 of them are held in under 50 MB).
fn empty(buf: &mut Vec<u8>) {
    if buf.capacity() > 4096 {
        *buf = Vec::new();
    } else {
        buf.clear();
    }
}

/// A client socket read through a [`Guard`]; writes go straight through.
pub struct Guarded<S> {
    inner: S,
    guard: Guard,
    /// Checked bytes not yet handed to the reader.
    out: Vec<u8>,
    /// How many of `out` were handed already.
    taken: usize,
}

impl<S> Guarded<S> {
    /// Wrap `inner`; `upgraded` is set by the proxy when it relays a 101 on this connection.
    pub fn new(inner: S, upgraded: Arc<AtomicBool>) -> Self {
        Guarded {
            inner,
            guard: Guard::new(upgraded),
            out: Vec::new(),
            taken: 0,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.taken < this.out.len() {
                let n = buf.remaining().min(this.out.len() - this.taken);
                buf.put_slice(&this.out[this.taken..this.taken + n]);
                this.taken += n;
                if this.taken == this.out.len() {
                    empty(&mut this.out);
                    this.taken = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.guard.at == At::Refused {
                // The refusal went out; what the client sends after it is not read.
                return Poll::Ready(Ok(()));
            }
            // Read into the caller's buffer (no buffer of our own), check, and take the
            // bytes back out: what may pass is put back from `out`.
            let before = buf.filled().len();
            match Pin::new(&mut this.inner).poll_read(cx, buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    if buf.filled().len() == before {
                        // End of input: an unfinished head goes to hyper as it is.
                        let rest = std::mem::take(&mut this.guard.head);
                        this.out.extend_from_slice(&rest);
                        if this.out.is_empty() {
                            return Poll::Ready(Ok(()));
                        }
                        continue;
                    }
                    this.guard.feed(&buf.filled()[before..], &mut this.out);
                    buf.set_filled(before);
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &[u8], step: usize) -> (Vec<u8>, Option<Refusal>) {
        let mut g = Guard::default();
        let mut out = Vec::new();
        let mut refused = None;
        for piece in input.chunks(step.max(1)) {
            refused = refused.or(g.feed(piece, &mut out));
        }
        (out, refused)
    }

    /// Whatever the read boundaries, the same bytes come out.
    fn all_splits(input: &[u8]) -> (Vec<u8>, Option<Refusal>) {
        let whole = run(input, input.len());
        for step in [1, 2, 3, 5, 7, 64] {
            assert_eq!(run(input, step), whole, "split every {step} bytes");
        }
        whole
    }

    /// Issue 26, item 11: a request that merely carries `Upgrade:` (nothing upgraded: no
    /// 101) turned the guard off for the rest of the connection, and the next pipelined
    /// request with both Content-Length and Transfer-Encoding was forwarded.
    #[test]
    fn issue26_11_an_upgrade_that_did_not_happen_keeps_the_connection_checked() {
        for head in [
            &b"GET /x HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n"[..],
            b"GET /x HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
        ] {
            let smuggle =
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
            let input = [head, &smuggle[..]].concat();
            let (out, refused) = all_splits(&input);
            assert_eq!(refused, Some(Refusal::Conflict));
            assert!(out.starts_with(head) && !out.windows(4).any(|w| w == b"POST"));
        }
    }

    #[test]
    fn ordinary_requests_pass_unchanged_across_keep_alive_and_any_read_boundary() {
        let input = b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n\
POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
POST /y HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\n\
GET /z HTTP/1.1\r\nHost: a\r\n\r\n";
        let (out, refused) = all_splits(input);
        assert_eq!(refused, None);
        assert_eq!(out, input);
    }

    #[test]
    fn content_length_with_transfer_encoding_is_refused_and_nothing_after_it_passes() {
        for input in [
            &b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\ncontent-length: 0\r\n\r\n",
        ] {
            let (out, refused) = all_splits(input);
            assert_eq!(refused, Some(Refusal::Conflict));
            assert_eq!(out, REFUSED);
        }
        // The second request of a connection is checked too, after a chunked body that
        // contains something that looks like a head.
        let input = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
12\r\nGET / HTTP/1.1\r\n\r\n\r\n0\r\n\r\n\
POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let (out, refused) = all_splits(input);
        assert_eq!(refused, Some(Refusal::Conflict));
        let first_len = input.len()
            - b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n".len();
        assert_eq!(&out[..first_len], &input[..first_len]);
        assert_eq!(&out[first_len..], REFUSED);
    }

    #[test]
    fn oversized_heads_and_too_many_headers_are_refused() {
        let mut big = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_HEAD + 10));
        let (out, refused) = run(&big, 4096);
        assert_eq!(
            (out.as_slice(), refused),
            (REFUSED, Some(Refusal::TooLarge))
        );
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..150 {
            many.extend(format!("X-{i}: 1\r\n").bytes());
        }
        many.extend(b"\r\n");
        let (out, refused) = all_splits(&many);
        assert_eq!(
            (out.as_slice(), refused),
            (REFUSED, Some(Refusal::TooLarge))
        );
    }

    proptest::proptest! {
        /// Any sequence of well-framed requests (no body, a Content-Length body, a chunked
        /// body whose data looks like heads with both headers), read in any pieces, passes
        /// through byte for byte and nothing is refused.
        #[test]
        fn well_framed_requests_pass_whatever_the_pieces(
            bodies in proptest::collection::vec(
                (0u8..3, proptest::collection::vec(0usize..40, 0..4)), 1..6),
            step in 1usize..50,
        ) {
            let trap = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
            let mut input = Vec::new();
            for (kind, sizes) in &bodies {
                match kind {
                    0 => input.extend(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
                    1 => {
                        let n: usize = sizes.iter().sum();
                        input.extend(format!("POST / HTTP/1.1\r\nContent-Length: {n}\r\n\r\n").bytes());
                        input.extend(trap.iter().cycle().take(n));
                    }
                    _ => {
                        input.extend(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
                        for n in sizes.iter().filter(|n| **n > 0) {
                            input.extend(format!("{n:x}\r\n").bytes());
                            input.extend(trap.iter().cycle().take(*n));
                            input.extend(b"\r\n");
                        }
                        input.extend(b"0\r\n\r\n");
                    }
                }
            }
            let (out, refused) = run(&input, step);
            proptest::prop_assert_eq!(refused, None);
            proptest::prop_assert_eq!(out, input);
        }
    }

    #[test]
    fn after_an_upgrade_or_an_unreadable_head_bytes_pass_unexamined() {
        // The 101 was relayed (the proxy set the flag) before the client's frames came.
        let head = b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
        let frames = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: x\r\n\r\n";
        let upgraded = Arc::new(AtomicBool::new(false));
        let mut g = Guard::new(upgraded.clone());
        let mut out = Vec::new();
        assert_eq!(g.feed(head, &mut out), None);
        upgraded.store(true, Ordering::Release);
        assert_eq!(g.feed(frames, &mut out), None);
        assert_eq!(out, [&head[..], &frames[..]].concat());
        let input = b"GARBAGE\r\n\r\nanything";
        let (out, refused) = all_splits(input);
        assert_eq!((out.as_slice(), refused), (&input[..], None));
    }
}
