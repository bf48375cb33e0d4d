//! One client connection: each request head read and judged by [`http1`], answered by the
//! proxy itself or passed to the worktree's server on a pooled connection; the response's
//! head rewritten and its body passed back as it comes; an upgrade (101) turned into a
//! tunnel. The I/O half of the proxy's HTTP; what is decided lives in [`http1`].
//!
//! Memory: between requests a connection holds its socket and this task's state, no buffer
//! (it waits for the socket to become readable before it reserves one), so a thousand idle
//! keep-alive connections cost about what their sockets do.

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::http1::{self, Body, Follow, Method, Refusal, Request};
use super::routes::Route;
use super::{Answer, Failure, State};
use crate::model::names;

/// The 400 page's reason for a Host the proxy cannot route by.
const BAD_HOST: &str = "the Host header is missing, repeated, or not a host name";

/// Bytes reserved for a read: enough for any usual head and a body's piece.
const READ: usize = 16 * 1024;

/// Serve one client connection until it ends, fails, or waits `idle` for a request head.
pub(super) async fn connection(
    mut client: TcpStream,
    state: Arc<State>,
    peer: SocketAddr,
    idle: Duration,
) {
    let mut input: Vec<u8> = Vec::new();
    let mut head: Vec<u8> = Vec::new();
    loop {
        let read =
            tokio::time::timeout(idle, read_request(&mut client, &mut input, peer, &mut head));
        let req = match read.await {
            Ok(Ok(req)) => req,
            Ok(Err(Some(why))) => {
                let answer = Answer::bad_request(why.why());
                let _ = client.write_all(&answer.bytes(false, true)).await;
                return linger(&mut client).await;
            }
            // Closed, failed, or idle too long: nothing to answer.
            _ => return,
        };
        // Boxed: the exchange's state (the forward, a tunnel) is allocated per request, so a
        // connection waiting between requests is a small task.
        match Box::pin(exchange(&mut client, &mut input, &head, req, &state)).await {
            Ok(true) => {}
            Ok(false) => return linger(&mut client).await,
            Err(_) => return,
        }
        // Between requests: no buffer (unless the client already sent the next request).
        if input.is_empty() {
            input = Vec::new();
        }
        head = Vec::new();
    }
}

/// The connection ends after an answer: say so (FIN after the answer's bytes) and read
/// what the client still sends for a moment, so its unread bytes do not turn the close
/// into a reset that could destroy the answer before the client read it.
async fn linger(client: &mut TcpStream) {
    let _ = client.shutdown().await;
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let mut sink = vec![0u8; READ];
        let mut total = 0;
        while total < (1 << 20) {
            match client.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    })
    .await;
}

/// Read until `input` starts with a whole request head (its upstream form in `head`).
/// `Err(None)`: the connection closed or failed; `Err(Some(_))`: refused.
async fn read_request(
    client: &mut TcpStream,
    input: &mut Vec<u8>,
    peer: SocketAddr,
    head: &mut Vec<u8>,
) -> Result<Request, Option<Refusal>> {
    loop {
        if !input.is_empty() {
            match http1::request(input, peer.ip(), head) {
                Ok(Some(req)) => return Ok(req),
                Ok(None) if input.len() > http1::MAX_HEAD => return Err(Some(Refusal::TooLarge)),
                Ok(None) => {}
                Err(why) => return Err(Some(why)),
            }
        }
        match read_some(client, input).await {
            Ok(0) | Err(_) => return Err(None),
            Ok(_) => {}
        }
    }
}

/// Read what `stream` has after what `buf` holds. With nothing held it waits for the
/// socket to be readable and only then reserves room, giving it back when the wake-up had
/// nothing to read (tokio's readiness can wake without data: measured on a new socket, 1,000
/// silent connections held 6.5 KB each instead of 1): a waiting connection holds no buffer.
async fn read_some(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    if buf.capacity() == 0 {
        loop {
            stream.readable().await?;
            buf.reserve(READ / 4);
            let room = buf.capacity();
            match stream.try_read_buf(buf) {
                Ok(n) => {
                    if n > 0 && n < room {
                        drained(stream);
                    }
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => *buf = Vec::new(),
                Err(e) => return Err(e),
            }
        }
    }
    if buf.capacity() - buf.len() < READ / 16 {
        buf.reserve(READ);
    }
    // `read_buf` tells tokio itself when a read left room (the socket is drained).
    stream.read_buf(buf).await
}

/// Tell tokio that `stream` has nothing more to read, after a read that left room in its
/// buffer (the kernel had no more): the next read then waits for the socket instead of
/// trying it in vain, one system call less per request. tokio's own `read_buf` does the same
/// after such a read; `try_read_buf` does not. Sound here: the read and this run in the same
/// poll of the task, on a current-thread runtime whose driver (the only writer of the
/// socket's readiness) does not run in between, so no readiness that came after the read is
/// lost.
fn drained(stream: &TcpStream) {
    let _ = stream.try_io(tokio::io::Interest::READABLE, || {
        Err::<(), _>(io::ErrorKind::WouldBlock.into())
    });
}

/// Ready when the client has closed its connection or it failed: a request it no longer
/// waits for is not waited for either (its server connection is closed, not kept). Bytes it
/// sent meanwhile (a pipelined request) say nothing: then this never completes.
async fn gone(client: &TcpStream) {
    match client.peek(&mut [0u8; 1]).await {
        Ok(0) | Err(_) => {}
        Ok(_) => std::future::pending().await,
    }
}

/// Write `a` then `b`, in one system call when the socket takes both.
async fn write_two(stream: &mut TcpStream, mut a: &[u8], mut b: &[u8]) -> io::Result<()> {
    while !a.is_empty() && !b.is_empty() {
        let n = stream
            .write_vectored(&[IoSlice::new(a), IoSlice::new(b)])
            .await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        if n >= a.len() {
            b = &b[n - a.len()..];
            a = &[];
        } else {
            a = &a[n..];
        }
    }
    stream.write_all(a).await?;
    stream.write_all(b).await
}

/// Answer `req` with the proxy's own `answer`. `end`: where the request ends in `input`,
/// when all of it is there. The connection goes on only then (a body not read cannot be
/// skipped), if the client keeps it and the answer does not end it; the request's bytes
/// are dropped from `input`.
async fn reply(
    client: &mut TcpStream,
    input: &mut Vec<u8>,
    req: &Request,
    answer: Answer,
    end: Option<usize>,
) -> io::Result<bool> {
    let end = end.filter(|_| req.keep_alive && !answer.close);
    client
        .write_all(&answer.bytes(req.method == Method::Head, end.is_none()))
        .await?;
    if let Some(end) = end {
        input.drain(..end);
    }
    Ok(end.is_some())
}

/// Answer one request whose head starts `input` (`head`: its upstream form). `Ok(true)`:
/// the connection goes on, `input` holding what the client sent after the request.
async fn exchange(
    client: &mut TcpStream,
    input: &mut Vec<u8>,
    head: &[u8],
    req: Request,
    state: &State,
) -> io::Result<bool> {
    // A request answered here is whole in `input` only without a body.
    let end = (req.body == Body::None).then_some(req.len);
    if req.method == Method::Connect {
        let answer = Answer::page(
            405,
            "Method Not Allowed",
            "405 Method Not Allowed",
            "<p>The proxy routes requests by their Host; it does not open tunnels (CONNECT).</p>",
        );
        return reply(client, input, &req, answer, end).await;
    }
    let Some(value) = req.host.as_deref() else {
        return reply(client, input, &req, Answer::bad_request(BAD_HOST), end).await;
    };
    let host = names::host_of(value);
    if super::for_dashboard(value, host.as_deref()) {
        // The path is the target httparse read as text.
        let target = std::str::from_utf8(&input[req.path.clone()]).unwrap_or("/");
        let answer = super::dashboard(req.method, target, state).await;
        return reply(client, input, &req, answer, end).await;
    }
    let Some(host) = host else {
        return reply(client, input, &req, Answer::bad_request(BAD_HOST), end).await;
    };
    let route = state.routes.read().expect("routes lock").get(&host);
    let Some(route) = route else {
        let answer = super::not_found(state, &host);
        return reply(client, input, &req, answer, end).await;
    };
    forward(client, input, head, req, state, &route, &host).await
}

/// Why no response head came from the server.
enum NoResponse {
    /// The connection ended before any byte of a response: a kept connection the server
    /// closed as the request went out; the request may be sent again on a new one.
    Nothing,
    /// It ended or sent something not HTTP after that.
    Broken,
    /// Writing an interim response (100, 103) to the client failed.
    Client(io::Error),
}

/// Pass `req` to the route's server and its response back.
async fn forward(
    client: &mut TcpStream,
    input: &mut Vec<u8>,
    head: &[u8],
    req: Request,
    state: &State,
    route: &Route,
    host: &str,
) -> io::Result<bool> {
    let mut body = Follow::new(req.body);
    let Ok(here) = body.advance(&input[req.len..]) else {
        let answer = Answer::bad_request(Refusal::Framing.why());
        return reply(client, input, &req, answer, None).await;
    };
    // The whole request is in `input`: it can be sent again if a kept connection fails.
    let whole = body.done();
    let request_end = req.len + here;
    // Where the request ends in `input` for the 502 page, while it is there whole.
    let gateway = |failure| {
        (
            super::bad_gateway(route, host, failure),
            whole.then_some(request_end),
        )
    };
    if req.expect_continue && !whole {
        // The proxy reads the body whatever the server would say (as nginx does).
        client.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
    }
    let mut response_head = Vec::new();
    let mut from_server: Vec<u8> = Vec::new();
    let mut tried_kept = false;
    let (mut server, response) = loop {
        let kept = if tried_kept {
            None
        } else {
            state.checkout(route.port)
        };
        tried_kept |= kept.is_some();
        let reused = kept.is_some();
        let mut server = match kept {
            Some(s) => s,
            None => match super::connect(route.port).await {
                Ok(s) => s,
                Err(failure) => {
                    let (answer, end) = gateway(failure);
                    return reply(client, input, &req, answer, end).await;
                }
            },
        };
        if write_two(&mut server, head, &input[req.len..request_end])
            .await
            .is_err()
        {
            if reused && whole {
                continue;
            }
            let (answer, end) = gateway(Failure::Reset);
            return reply(client, input, &req, answer, end).await;
        }
        if !whole {
            input.drain(..request_end);
            send_body(client, input, &mut server, &mut body).await?;
        }
        let close = !req.keep_alive;
        match read_response(
            &mut server,
            &mut from_server,
            req.method,
            close,
            &mut response_head,
            client,
        )
        .await
        {
            Ok(response) => {
                if whole {
                    input.drain(..request_end);
                }
                break (server, response);
            }
            Err(NoResponse::Nothing) if reused && whole => from_server.clear(),
            Err(NoResponse::Client(e)) => return Err(e),
            // A body already read and sent is no longer in `input`: after this 502 the
            // connection ends.
            Err(_) => {
                let (answer, end) = gateway(Failure::Reset);
                return reply(client, input, &req, answer, end).await;
            }
        }
    };
    let after_head = &from_server[response.len..];
    if response.status == 101 {
        if !req.upgrade {
            return Ok(false);
        }
        // The new protocol's bytes either side may already have sent go first.
        write_two(client, &response_head, after_head).await?;
        server.write_all(input).await?;
        input.clear();
        let _ = tokio::io::copy_bidirectional(client, &mut server).await;
        return Ok(false);
    }
    let mut rest = Follow::new(response.body);
    let Ok(first) = rest.advance(after_head) else {
        return Ok(false);
    };
    write_two(client, &response_head, &after_head[..first]).await?;
    let mut clean = first == after_head.len();
    while !rest.done() {
        from_server.clear();
        let n = tokio::select! {
            n = read_some(&mut server, &mut from_server) => n?,
            // A client gone while the server holds the stream (server-sent events) ends it.
            () = gone(client) => return Ok(false),
        };
        if n == 0 {
            if response.body == Body::UntilClose {
                break;
            }
            // Cut short: the client sees its connection end before the body does.
            return Ok(false);
        }
        let Ok(k) = rest.advance(&from_server) else {
            return Ok(false);
        };
        client.write_all(&from_server[..k]).await?;
        clean = k == n;
    }
    if response.reusable && clean {
        state.checkin(route.port, server);
    }
    Ok(req.keep_alive && response.body != Body::UntilClose)
}

/// Send the rest of a request body from the client to the server, leaving in `input` what
/// the client sent after it.
async fn send_body(
    client: &mut TcpStream,
    input: &mut Vec<u8>,
    server: &mut TcpStream,
    body: &mut Follow,
) -> io::Result<()> {
    while !body.done() {
        if input.is_empty() && read_some(client, input).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let k = body
            .advance(input)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
        server.write_all(&input[..k]).await?;
        input.drain(..k);
    }
    Ok(())
}

/// Read the server's response head into `buf` (the head for the client in `out`), passing
/// interim responses (100 Continue, 103 Early Hints) on to the client as they come.
async fn read_response(
    server: &mut TcpStream,
    buf: &mut Vec<u8>,
    method: Method,
    close: bool,
    out: &mut Vec<u8>,
    client: &mut TcpStream,
) -> Result<http1::Response, NoResponse> {
    let mut interim = false;
    loop {
        if !buf.is_empty() {
            match http1::response(buf, method, close, out) {
                Ok(Some(r)) if r.interim() => {
                    client.write_all(out).await.map_err(NoResponse::Client)?;
                    buf.drain(..r.len);
                    interim = true;
                    continue;
                }
                Ok(Some(r)) => return Ok(r),
                Ok(None) if buf.len() <= http1::MAX_HEAD => {}
                _ => return Err(NoResponse::Broken),
            }
        }
        let read = tokio::select! {
            read = read_some(server, buf) => read,
            () = gone(client) => return Err(NoResponse::Client(io::ErrorKind::ConnectionAborted.into())),
        };
        match read {
            Ok(1..) => {}
            _ if buf.is_empty() && !interim => return Err(NoResponse::Nothing),
            _ => return Err(NoResponse::Broken),
        }
    }
}
