//! The proxy's HTTP/1.1, sans I/O: a request head judged and rewritten for the worktree's
//! server, a response head rewritten for the client, and the framing of each body followed
//! byte by byte, so the proxy passes bodies on as they come without decoding them (as nginx
//! and haproxy do), and a connection holds no parser state between requests.
//!
//! Refused with 400 and never forwarded: a head that does not parse, one over [`MAX_HEAD`]
//! bytes or [`MAX_HEADERS`] lines, Content-Length with Transfer-Encoding (request
//! smuggling), a Transfer-Encoding whose last coding is not chunked, Content-Lengths that
//! disagree or do not parse, and a chunked body that breaks its framing.

use std::net::IpAddr;
use std::ops::Range;

/// The longest request or response head accepted.
pub const MAX_HEAD: usize = 64 * 1024;
/// At most this many header lines in a head.
pub const MAX_HEADERS: usize = 100;

/// Why a request is refused (400, and its connection closes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not an HTTP/1 request head.
    Malformed,
    /// Longer than [`MAX_HEAD`], or more than [`MAX_HEADERS`] header lines.
    TooLarge,
    /// Both Content-Length and Transfer-Encoding.
    Conflict,
    /// A Transfer-Encoding not ending in chunked, a Content-Length that is not one number,
    /// or chunks that break their framing.
    Framing,
    /// A request target that is neither a path nor an absolute `http://` URL.
    Target,
}

impl Refusal {
    /// What the 400 page says.
    pub fn why(self) -> &'static str {
        match self {
            Refusal::Malformed => "the request is not HTTP/1",
            Refusal::TooLarge => "the request head is over 64 KiB or 100 header lines",
            Refusal::Conflict => "the request has both Content-Length and Transfer-Encoding",
            Refusal::Framing => "the request body's length or chunks cannot be read",
            Refusal::Target => "the request path cannot be forwarded",
        }
    }
}

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// No body.
    None,
    /// This many bytes.
    Length(u64),
    /// Chunks, up to the last chunk and the trailers.
    Chunked,
    /// Everything until the server closes (responses only).
    UntilClose,
}

/// The method, as far as the proxy cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Connect,
    Other,
}

/// A request head, read.
#[derive(Debug)]
pub struct Request {
    /// Bytes of the input the head took (blank lines before it included).
    pub len: usize,
    pub method: Method,
    /// The path and query (for an absolute-form target, without its scheme and authority).
    pub path: Range<usize>,
    /// The host it is for, as sent: the absolute-form target's authority, else its one Host
    /// header. None: none, or several.
    pub host: Option<String>,
    pub body: Body,
    /// It asks for a protocol upgrade (`Upgrade:` with `Connection: upgrade`).
    pub upgrade: bool,
    /// The client keeps the connection after this request (HTTP/1.1 without
    /// `Connection: close`; an HTTP/1.0 client's connection ends after one request).
    pub keep_alive: bool,
    /// `Expect: 100-continue` on a request with a body.
    pub expect_continue: bool,
}

fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|b| *b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// A Content-Length value: digits only (a list of equal values counts as one).
fn content_length(value: &[u8]) -> Option<u64> {
    let mut n = None;
    for part in value.split(|b| *b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let v: u64 = std::str::from_utf8(part).ok()?.parse().ok()?;
        if n.is_some_and(|n| n != v) {
            return None;
        }
        n = Some(v);
    }
    n
}

/// Length and coding headers of one message, gathered.
#[derive(Default)]
struct Framing {
    length: Option<u64>,
    bad_length: bool,
    coded: bool,
    chunked: bool,
}

impl Framing {
    fn see(&mut self, name: &str, value: &[u8]) -> bool {
        if name.eq_ignore_ascii_case("content-length") {
            match content_length(value) {
                Some(n) if self.length.is_none_or(|l| l == n) => self.length = Some(n),
                _ => self.bad_length = true,
            }
            true
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            self.coded = true;
            // The last coding of the last header decides.
            self.chunked = value
                .rsplit(|b| *b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            true
        } else {
            false
        }
    }
}

/// Headers a proxy never passes on (RFC 9110 section 7.6.1), plus the forwarding headers it
/// sets itself. Content-Length and Transfer-Encoding pass: bodies go on framed as they came.
fn dropped(name: &str) -> bool {
    const NAMES: [&str; 11] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "upgrade",
        "host",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
    ];
    NAMES.iter().any(|n| name.eq_ignore_ascii_case(n))
}

/// Read the request head at the start of `input`: `Ok(None)` while it is not whole. The
/// head to send upstream is written to `upstream`: the same method, path and headers,
/// hop-by-hop headers dropped, Host kept as the client sent it (from an absolute-form
/// target's authority too), `X-Forwarded-For`, `-Host` and `-Proto` set.
pub fn request(
    input: &[u8],
    peer: IpAddr,
    upstream: &mut Vec<u8>,
) -> Result<Option<Request>, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(input) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Refusal::TooLarge),
        Err(_) => return Err(Refusal::Malformed),
    };
    if len > MAX_HEAD {
        return Err(Refusal::TooLarge);
    }
    let (Some(method_text), Some(target), Some(version)) = (req.method, req.path, req.version)
    else {
        return Err(Refusal::Malformed);
    };
    let method = match method_text {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "CONNECT" => Method::Connect,
        _ => Method::Other,
    };
    let offset = |s: &str| s.as_ptr() as usize - input.as_ptr() as usize;
    let target_at = offset(target);
    // Origin form (`/x?y`), `*`, or absolute form (`http://host/x`), whose authority names
    // the host (RFC 9112 section 3.2.2: over any Host header).
    let (authority, path) = match target.as_bytes() {
        [b'/', ..] | b"*" => (None, target_at..target_at + target.len()),
        _ => {
            let scheme = target.find("://").ok_or(Refusal::Target)?;
            if !target[..scheme].eq_ignore_ascii_case("http")
                && !target[..scheme].eq_ignore_ascii_case("https")
            {
                return Err(Refusal::Target);
            }
            let rest = &target[scheme + 3..];
            let end = rest.find(['/', '?']).unwrap_or(rest.len());
            (Some(&rest[..end]), {
                let at = offset(rest) + end;
                at..target_at + target.len()
            })
        }
    };
    let mut framing = Framing::default();
    let mut host = authority.map(str::to_string);
    let mut hosts = 0;
    let mut connection_close = false;
    let mut connection_upgrade = false;
    let mut connection_value: Option<&[u8]> = None;
    let mut upgrade_value: Option<&[u8]> = None;
    let mut expect_continue = false;
    let mut forwarded_for: Vec<&[u8]> = Vec::new();
    for h in req.headers.iter() {
        framing.see(h.name, h.value);
        if h.name.eq_ignore_ascii_case("host") {
            hosts += 1;
            if authority.is_none() {
                host = std::str::from_utf8(h.value).ok().map(str::to_string);
            }
        } else if h.name.eq_ignore_ascii_case("connection") {
            connection_close |= has_token(h.value, "close");
            connection_upgrade |= has_token(h.value, "upgrade");
            connection_value = Some(h.value);
        } else if h.name.eq_ignore_ascii_case("upgrade") {
            upgrade_value = Some(h.value);
        } else if h.name.eq_ignore_ascii_case("expect") {
            expect_continue = h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
        } else if h.name.eq_ignore_ascii_case("x-forwarded-for") {
            forwarded_for.push(h.value);
        }
    }
    if authority.is_none() && hosts != 1 {
        host = None;
    }
    if framing.coded && (framing.length.is_some() || framing.bad_length) {
        return Err(Refusal::Conflict);
    }
    let body = if framing.coded {
        if !framing.chunked {
            return Err(Refusal::Framing);
        }
        Body::Chunked
    } else if framing.bad_length {
        return Err(Refusal::Framing);
    } else {
        match framing.length {
            None | Some(0) => Body::None,
            Some(n) => Body::Length(n),
        }
    };
    let upgrade = upgrade_value.is_some() && connection_upgrade;

    upstream.clear();
    // The head, less what is dropped, plus the forwarding headers: one allocation.
    upstream.reserve(len + 160);
    upstream.extend_from_slice(method_text.as_bytes());
    upstream.push(b' ');
    match &input[path.clone()] {
        [] => upstream.push(b'/'),
        [b'?', ..] => {
            upstream.push(b'/');
            upstream.extend_from_slice(&input[path.clone()]);
        }
        p => upstream.extend_from_slice(p),
    }
    upstream.extend_from_slice(if version == 0 {
        b" HTTP/1.0\r\n"
    } else {
        b" HTTP/1.1\r\n"
    });
    for h in req.headers.iter() {
        // `Expect: 100-continue` is answered by the proxy, which then sends the body
        // whatever the server would say: the server is not asked again.
        let answered = h.name.eq_ignore_ascii_case("expect") && expect_continue;
        if dropped(h.name) || answered {
            continue;
        }
        put_header(upstream, h.name.as_bytes(), h.value);
    }
    if let Some(h) = &host {
        put_header(upstream, b"Host", h.as_bytes());
    }
    if upgrade {
        put_header(upstream, b"Upgrade", upgrade_value.unwrap_or_default());
        put_header(
            upstream,
            b"Connection",
            connection_value.unwrap_or(b"upgrade"),
        );
    }
    upstream.extend_from_slice(b"X-Forwarded-For: ");
    for prev in &forwarded_for {
        upstream.extend_from_slice(prev);
        upstream.extend_from_slice(b", ");
    }
    {
        use std::io::Write;
        let _ = write!(upstream, "{peer}\r\n");
    }
    if let Some(h) = &host {
        put_header(upstream, b"X-Forwarded-Host", h.as_bytes());
    }
    upstream.extend_from_slice(b"X-Forwarded-Proto: http\r\n\r\n");
    Ok(Some(Request {
        len,
        method,
        path,
        host,
        body,
        upgrade,
        keep_alive: version == 1 && !connection_close,
        expect_continue: expect_continue && body != Body::None && version == 1,
    }))
}

fn put_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// A response head, read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    /// Bytes of the input the head took.
    pub len: usize,
    pub status: u16,
    pub body: Body,
    /// The server keeps the connection for another request.
    pub reusable: bool,
}

impl Response {
    /// 1xx other than 101: another head follows.
    pub fn interim(&self) -> bool {
        (100..200).contains(&self.status) && self.status != 101
    }
}

/// Read the response head at the start of `input` (`Ok(None)` while it is not whole; `Err`:
/// not an HTTP/1 response) to a request with method `method`, and write the head to send the
/// client to `client`: HTTP/1.1, hop-by-hop headers dropped (a 101 keeps `Upgrade` and
/// `Connection`), and `Connection: close` when `close` or when the body runs to the close.
pub fn response(
    input: &[u8],
    method: Method,
    close: bool,
    client: &mut Vec<u8>,
) -> Result<Option<Response>, Broken> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(input) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(Broken),
    };
    let (Some(status), Some(version)) = (resp.code, resp.version) else {
        return Err(Broken);
    };
    let mut framing = Framing::default();
    let mut server_close = version == 0;
    for h in resp.headers.iter() {
        framing.see(h.name, h.value);
        if h.name.eq_ignore_ascii_case("connection") {
            if has_token(h.value, "close") {
                server_close = true;
            } else if version == 0 && has_token(h.value, "keep-alive") {
                server_close = false;
            }
        }
    }
    let informational = (100..200).contains(&status);
    let body = if method == Method::Head || informational || status == 204 || status == 304 {
        Body::None
    } else if framing.coded {
        if framing.chunked {
            Body::Chunked
        } else {
            Body::UntilClose
        }
    } else if framing.bad_length {
        return Err(Broken);
    } else {
        match framing.length {
            Some(0) => Body::None,
            Some(n) => Body::Length(n),
            None => Body::UntilClose,
        }
    };
    let switching = status == 101;
    client.clear();
    client.reserve(len + 32);
    {
        use std::io::Write;
        let _ = write!(
            client,
            "HTTP/1.1 {status} {}\r\n",
            resp.reason.unwrap_or_default()
        );
    }
    for h in resp.headers.iter() {
        let is = |name: &str| h.name.eq_ignore_ascii_case(name);
        let keep = if is("upgrade") || is("connection") {
            switching
        } else if is("keep-alive") || is("proxy-connection") {
            false
        } else if is("content-length") {
            // With a Transfer-Encoding, the length is the coding's (RFC 9112 section 6.3):
            // a client must not see both.
            !framing.coded
        } else {
            true
        };
        if keep {
            put_header(client, h.name.as_bytes(), h.value);
        }
    }
    if !informational && (close || body == Body::UntilClose) {
        client.extend_from_slice(b"Connection: close\r\n");
    }
    client.extend_from_slice(b"\r\n");
    Ok(Some(Response {
        len,
        status,
        body,
        reusable: !server_close && !switching && body != Body::UntilClose,
    }))
}

/// Where a body is, followed through the bytes that carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Follow(At);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    Length(u64),
    Chunk(Chunk),
    UntilClose,
    Done,
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

/// A response head that is not HTTP/1, or a chunked body that breaks its framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Broken;

impl Follow {
    pub fn new(body: Body) -> Follow {
        Follow(match body {
            Body::None | Body::Length(0) => At::Done,
            Body::Length(n) => At::Length(n),
            Body::Chunked => At::Chunk(Chunk::Size {
                size: 0,
                digits: false,
                ext: false,
            }),
            Body::UntilClose => At::UntilClose,
        })
    }

    /// The body is complete.
    pub fn done(&self) -> bool {
        self.0 == At::Done
    }

    /// How many of `input`'s first bytes belong to the body (the rest is the next
    /// message's).
    pub fn advance(&mut self, input: &[u8]) -> Result<usize, Broken> {
        match self.0 {
            At::Done => Ok(0),
            At::UntilClose => Ok(input.len()),
            At::Length(left) => {
                let n = left.min(input.len() as u64);
                self.0 = match left - n {
                    0 => At::Done,
                    more => At::Length(more),
                };
                Ok(n as usize)
            }
            At::Chunk(chunk) => self.chunk(chunk, input),
        }
    }

    fn chunk(&mut self, mut chunk: Chunk, input: &[u8]) -> Result<usize, Broken> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match chunk {
                Chunk::Size { size, digits, ext } => {
                    i += 1;
                    if b == b'\n' {
                        if !digits {
                            return Err(Broken);
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
                        let size = size.checked_mul(16).ok_or(Broken)? + d as u64;
                        chunk = Chunk::Size {
                            size,
                            digits: true,
                            ext,
                        };
                    } else {
                        return Err(Broken);
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
                        _ => return Err(Broken),
                    };
                }
                Chunk::Trailer { empty } => {
                    i += 1;
                    if b == b'\n' {
                        if empty {
                            self.0 = At::Done;
                            return Ok(i);
                        }
                        chunk = Chunk::Trailer { empty: true };
                    } else if b != b'\r' {
                        chunk = Chunk::Trailer { empty: false };
                    }
                }
            }
        }
        self.0 = At::Chunk(chunk);
        Ok(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn req(input: &[u8]) -> Result<Option<(Request, String)>, Refusal> {
        let mut out = Vec::new();
        Ok(request(input, PEER, &mut out)?.map(|r| (r, String::from_utf8(out).unwrap())))
    }

    /// Follow a sequence of messages' bodies through `input` cut every `step` bytes: the
    /// number of bytes each body took, and where the rest starts.
    fn follow_all(body: Body, input: &[u8], step: usize) -> Result<usize, Broken> {
        let mut f = Follow::new(body);
        let mut taken = 0;
        for piece in input.chunks(step.max(1)) {
            let n = f.advance(piece)?;
            taken += n;
            if f.done() {
                return Ok(taken);
            }
            assert_eq!(n, piece.len());
        }
        Ok(taken)
    }

    #[test]
    fn a_request_head_goes_upstream_with_hop_by_hop_headers_dropped_and_forwarding_set() {
        let (r, up) = req(b"\r\nGET /a?b HTTP/1.1\r\nHost: App.localhost:7355\r\nConnection: keep-alive, X-Gone\r\nKeep-Alive: 5\r\nTE: trailers\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Host: evil\r\nAccept: */*\r\n\r\nnext")
            .unwrap()
            .unwrap();
        assert_eq!(r.len, b"\r\nGET /a?b HTTP/1.1\r\nHost: App.localhost:7355\r\nConnection: keep-alive, X-Gone\r\nKeep-Alive: 5\r\nTE: trailers\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Host: evil\r\nAccept: */*\r\n\r\n".len());
        assert_eq!(r.host.as_deref(), Some("App.localhost:7355"));
        assert_eq!(
            (r.method, r.body, r.keep_alive, r.upgrade),
            (Method::Get, Body::None, true, false)
        );
        assert_eq!(
            up,
            "GET /a?b HTTP/1.1\r\nAccept: */*\r\nHost: App.localhost:7355\r\nX-Forwarded-For: 10.0.0.1, 127.0.0.1\r\nX-Forwarded-Host: App.localhost:7355\r\nX-Forwarded-Proto: http\r\n\r\n"
        );
    }

    #[test]
    fn an_absolute_form_target_names_the_host_and_goes_upstream_as_a_path() {
        let (r, up) = req(
            b"GET http://feature.app.localhost:7355?x=1 HTTP/1.1\r\nHost: other.localhost\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.host.as_deref(), Some("feature.app.localhost:7355"));
        assert!(
            up.starts_with("GET /?x=1 HTTP/1.1\r\nHost: feature.app.localhost:7355\r\n"),
            "{up}"
        );
        assert!(matches!(
            req(b"GET ftp://x/ HTTP/1.1\r\nHost: a\r\n\r\n"),
            Err(Refusal::Target)
        ));
    }

    #[test]
    fn hosts_missing_or_repeated_are_none() {
        for input in [
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n",
        ] {
            assert_eq!(req(input).unwrap().unwrap().0.host, None);
        }
    }

    #[test]
    fn an_upgrade_keeps_its_upgrade_and_connection_headers() {
        let (r, up) = req(
            b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert!(r.upgrade);
        assert!(
            up.contains("Upgrade: websocket\r\nConnection: Upgrade\r\n"),
            "{up}"
        );
        // Upgrade without Connection: upgrade is no upgrade, and the header does not pass.
        let (r, up) = req(b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!r.upgrade && !up.contains("h2c"), "{up}");
    }

    #[test]
    fn bodies_framing_and_keep_alive_are_read_from_the_head() {
        let body = |input: &[u8]| req(input).map(|r| r.map(|r| (r.0.body, r.0.keep_alive)));
        assert_eq!(
            body(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n"),
            Ok(Some((Body::Length(5), true)))
        );
        assert_eq!(
            body(b"POST / HTTP/1.1\r\nContent-Length: 5, 5\r\nConnection: close\r\n\r\n"),
            Ok(Some((Body::Length(5), false)))
        );
        assert_eq!(
            body(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            Ok(Some((Body::Chunked, true)))
        );
        assert_eq!(
            body(b"GET / HTTP/1.0\r\n\r\n"),
            Ok(Some((Body::None, false)))
        );
        assert_eq!(
            body(b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(Refusal::Conflict)
        );
        assert_eq!(
            body(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\ncontent-length: 0\r\n\r\n"),
            Err(Refusal::Conflict)
        );
        assert_eq!(
            body(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
            Err(Refusal::Framing)
        );
        assert_eq!(
            body(b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
            Err(Refusal::Framing)
        );
        assert_eq!(
            body(b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n"),
            Err(Refusal::Framing)
        );
        assert_eq!(body(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n"), Ok(None));
        assert_eq!(body(b"GARBAGE\r\n\r\n"), Err(Refusal::Malformed));
        let (r, up) =
            req(b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n")
                .unwrap()
                .unwrap();
        assert!(
            r.expect_continue && !up.to_ascii_lowercase().contains("expect"),
            "{up}"
        );
    }

    #[test]
    fn oversized_heads_and_too_many_headers_are_refused() {
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..150 {
            many.extend(format!("X-{i}: 1\r\n").bytes());
        }
        assert!(matches!(req(&many), Err(Refusal::TooLarge)));
        let mut big = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_HEAD + 10));
        big.extend(b"\r\n\r\n");
        assert!(matches!(req(&big), Err(Refusal::TooLarge)));
    }

    #[test]
    fn a_response_head_goes_to_the_client_as_http_1_1_with_its_framing() {
        let mut out = Vec::new();
        let r = response(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\nabc", Method::Get, false, &mut out)
            .unwrap()
            .unwrap();
        assert_eq!((r.status, r.body, r.reusable), (200, Body::Length(3), true));
        assert_eq!(out, b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n");
        let r = response(b"HTTP/1.0 200 OK\r\n\r\n", Method::Get, false, &mut out)
            .unwrap()
            .unwrap();
        assert_eq!((r.body, r.reusable), (Body::UntilClose, false));
        assert_eq!(out, b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
        let r = response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            Method::Head,
            true,
            &mut out,
        )
        .unwrap()
        .unwrap();
        assert_eq!((r.body, r.reusable), (Body::None, true));
        assert!(out.ends_with(b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"));
        let r = response(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", Method::Get, false, &mut out).unwrap().unwrap();
        assert_eq!((r.status, r.reusable), (101, false));
        assert!(out.ends_with(b"Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n"));
        let r = response(
            b"HTTP/1.1 100 Continue\r\n\r\n",
            Method::Other,
            false,
            &mut out,
        )
        .unwrap()
        .unwrap();
        assert!(r.interim() && r.body == Body::None);
        let r = response(
            b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n",
            Method::Get,
            false,
            &mut out,
        )
        .unwrap()
        .unwrap();
        assert_eq!((r.body, r.reusable), (Body::None, false));
        assert!(
            response(
                b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
                Method::Get,
                false,
                &mut out
            )
            .is_err()
        );
        assert!(
            response(b"HTTP/1.1 200 OK\r\nContent-", Method::Get, false, &mut out)
                .unwrap()
                .is_none()
        );
        let both = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
        let r = response(both, Method::Get, false, &mut out)
            .unwrap()
            .unwrap();
        assert_eq!(r.body, Body::Chunked);
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
    }

    #[test]
    fn chunked_bodies_end_after_the_last_chunk_and_the_trailers_whatever_the_pieces() {
        let body = b"5;ext=1\r\nhello\r\n12\r\nGET / HTTP/1.1\r\n\r\n\r\n0\r\nX-T: 1\r\n\r\n";
        let input = [&body[..], b"GET /next HTTP/1.1\r\n\r\n"].concat();
        for step in [1, 2, 3, 5, 7, 64, input.len()] {
            assert_eq!(
                follow_all(Body::Chunked, &input, step),
                Ok(body.len()),
                "step {step}"
            );
        }
        for broken in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\r\nhelloXX",
            b"ffffffffffffffffff\r\n",
        ] {
            assert_eq!(
                follow_all(Body::Chunked, broken, 1),
                Err(Broken),
                "{broken:?}"
            );
        }
        assert_eq!(follow_all(Body::Length(4), b"abcdef", 3), Ok(4));
        let mut f = Follow::new(Body::UntilClose);
        assert_eq!((f.advance(b"abc"), f.done()), (Ok(3), false));
    }

    proptest::proptest! {
        /// Any chunked body, read in any pieces, is followed to its exact end.
        #[test]
        fn any_chunked_body_is_followed_to_its_end(
            sizes in proptest::collection::vec(1usize..300, 0..6),
            step in 1usize..50,
        ) {
            let trap = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
            let mut body = Vec::new();
            for n in &sizes {
                body.extend(format!("{n:x}\r\n").bytes());
                body.extend(trap.iter().cycle().take(*n));
                body.extend(b"\r\n");
            }
            body.extend(b"0\r\n\r\n");
            let input = [&body[..], &trap[..]].concat();
            proptest::prop_assert_eq!(follow_all(Body::Chunked, &input, step), Ok(body.len()));
        }
    }
}
