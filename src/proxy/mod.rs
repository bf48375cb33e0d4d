//! The proxy: one HTTP/1.1 port on 127.0.0.1 and ::1 that routes by the Host header to the
//! worktrees' servers (`feature.app.localhost:7355` -> the worktree's first HTTP service,
//! `api.feature.app.localhost:7355` -> its `api`). Keep-alive, chunked and streamed bodies
//! (server-sent events) and upgrades (WebSocket: dev servers' hot reload) pass through;
//! `X-Forwarded-For`, `-Host` and `-Proto` are set. A known host whose server is down gets a
//! 502 page saying how to start it; an unknown host a 404 page listing the known ones;
//! `localhost` itself (no worktree's name) the dashboard ([`dashboard`]) and its JSON;
//! requests with an unusable Host, both Content-Length and Transfer-Encoding, or a head over
//! 64 KiB get 400 and are never forwarded (the last two refused by [`guard`] before hyper
//! parses them).
//!
//! The async runtime starts here and only here: every other command keeps its start-up cost.
//! One thread serves (tokio's current-thread runtime: measured faster than two workers on this
//! 2-core machine, 41% against 34% of direct throughput), each client connection keeping its
//! own upstream connection; another thread re-reads the routes when the files change.

pub mod daemon;
pub mod dashboard;
pub mod guard;
pub mod routes;

use std::convert::Infallible;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use crate::machine::Machine;
use crate::model::names;
use routes::{Route, Routes};

/// The default port: high, unprivileged, not Portless's 1355.
pub const DEFAULT_PORT: u16 = 7355;

type Body = BoxBody<Bytes, hyper::Error>;

struct State {
    routes: RwLock<Routes>,
    port: u16,
    /// The dashboard's data (`list --all --json`), made by the caller.
    listing: dashboard::Listing,
    /// The last listing and when it was made: every open page asks once a second, and a
    /// listing reads every registry and the socket tables, so pages share one per 500 ms.
    listed: std::sync::Mutex<Option<(std::time::Instant, String)>>,
}

/// The upstream connection of one client connection: HTTP/1.1 requests on a connection come
/// one after another, so each client connection keeps one upstream connection (per port) and
/// reuses it, with no shared pool to lock.
type Upstream = Arc<tokio::sync::Mutex<Option<(u16, SendRequest<Incoming>)>>>;

/// Why a request could not be passed on to the worktree's server (the 502 page says which).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// Nothing listens on the port, on 127.0.0.1 or ::1.
    Refused,
    /// The connection was not made within 2 s.
    TimedOut,
    /// The server closed or reset the connection, or answered with something not HTTP.
    Reset,
}

impl Failure {
    fn of(e: &std::io::Error) -> Failure {
        match e.kind() {
            std::io::ErrorKind::ConnectionRefused => Failure::Refused,
            std::io::ErrorKind::TimedOut => Failure::TimedOut,
            _ => Failure::Reset,
        }
    }
}

/// A new connection to the worktree's server: where it listens, 127.0.0.1 or ::1 (a dev
/// server on `localhost` is often on ::1 only: Vite where localhost resolves to ::1 first),
/// 2 s to connect.
async fn connect(port: u16) -> Result<SendRequest<Incoming>, Failure> {
    let mut failure = Failure::Refused;
    let mut stream = None;
    for ip in [
        IpAddr::from([127, 0, 0, 1]),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ] {
        match tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::TcpStream::connect(SocketAddr::new(ip, port)),
        )
        .await
        {
            Ok(Ok(s)) => {
                stream = Some(s);
                break;
            }
            // Nothing there: the other loopback may have it. Any other failure is said.
            Ok(Err(e)) if Failure::of(&e) == Failure::Refused => {}
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::AddrNotAvailable => {}
            Ok(Err(e)) => failure = Failure::of(&e),
            Err(_) => failure = Failure::TimedOut,
        }
    }
    let stream = stream.ok_or(failure)?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|_| Failure::Reset)?;
    tokio::spawn(conn.with_upgrades());
    Ok(sender)
}

/// Send `req` to `port`: on the client connection's upstream connection when it has a ready
/// one to that port (a request it could not take is sent again on a new one), else on a new
/// connection, kept for the next request (never for an upgrade: that one becomes a tunnel).
async fn send(
    upstream: &Upstream,
    port: u16,
    req: Request<Incoming>,
    upgrade: bool,
) -> Result<Response<Incoming>, Failure> {
    let mut slot = upstream.lock().await;
    let mut req = req;
    if !upgrade
        && let Some((p, sender)) = slot.as_mut()
        && *p == port
        && sender.ready().await.is_ok()
    {
        match sender.try_send_request(req).await {
            Ok(r) => return Ok(r),
            Err(mut e) => req = e.take_message().ok_or(Failure::Reset)?,
        }
    }
    let mut sender = connect(port).await?;
    let response = sender.send_request(req).await.map_err(|_| Failure::Reset)?;
    if !upgrade {
        *slot = Some((port, sender));
    }
    Ok(response)
}

/// How long a connection may wait without sending a whole request head: 30 s, or
/// `GIT_WORKTREE_PORTS_PROXY_IDLE_MS` (the tests' short one).
fn idle_timeout() -> Duration {
    std::env::var("GIT_WORKTREE_PORTS_PROXY_IDLE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(Duration::from_secs(30), Duration::from_millis)
}

/// Bound listeners, before serving (so `run` can fail loudly on a busy port first).
pub struct Bound {
    listeners: Vec<std::net::TcpListener>,
    port: u16,
}

/// Bind `port` on 127.0.0.1 and, where the machine has IPv6, ::1. A busy port is an error
/// naming who holds it; never a fallback to another port.
pub fn bind(port: u16) -> anyhow::Result<Bound> {
    let mut listeners = Vec::new();
    for ip in [
        IpAddr::from([127, 0, 0, 1]),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ] {
        match std::net::TcpListener::bind(SocketAddr::new(ip, port)) {
            Ok(l) => {
                l.set_nonblocking(true)?;
                listeners.push(l);
            }
            Err(e) if ip.is_ipv6() && e.kind() == std::io::ErrorKind::AddrNotAvailable => {}
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                let who = crate::sys::probe::holder(port, crate::model::config::Protocol::Tcp)
                    .map_or_else(|| "another process".to_string(), |h| h.to_string());
                return Err(crate::model::error::Error::new(
                    crate::model::error::Code::PortInUse,
                    format!(
                        "the proxy's port {port} is in use by {who}; stop it, or choose another port: `git worktree-ports proxy start --port <port>`"
                    ),
                )
                .with(crate::model::error::Details::ProxyPort(
                    crate::model::error::ProxyPort { port },
                ))
                .into());
            }
            Err(e) => return Err(anyhow::anyhow!("could not listen on {ip}:{port}: {e}")),
        }
    }
    Ok(Bound { listeners, port })
}

/// Serve until SIGTERM or SIGINT. Routes follow the index and the registries (checked twice a
/// second).
pub fn serve(bound: Bound, machine: Machine, listing: dashboard::Listing) -> anyhow::Result<()> {
    // systemd's default soft limit is 1,024 descriptors: take what the hard limit allows.
    crate::sys::procs::raise_open_files_limit();
    let idle = idle_timeout();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let (routes, mut signature) = Routes::read(&machine);
        let state = Arc::new(State {
            routes: RwLock::new(routes),
            port: bound.port,
            listing,
            listed: Default::default(),
        });
        // Routes follow the files: checked on a thread of their own, so reading many
        // registries never stalls the (single-threaded) server.
        {
            let state = state.clone();
            let machine = machine.clone();
            std::thread::spawn(move || {
                loop {
                    std::thread::sleep(Duration::from_millis(500));
                    if Routes::changed(&signature) {
                        let (routes, sig) = Routes::read(&machine);
                        signature = sig;
                        *state.routes.write().expect("routes lock") = routes;
                    }
                }
            });
        }
        for listener in bound.listeners {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            let state = state.clone();
            tokio::spawn(async move {
                loop {
                    let (stream, peer) = match listener.accept().await {
                        Ok(accepted) => accepted,
                        // Out of descriptors (EMFILE): retrying at once spins a core and
                        // answers nobody; a pause lets idle connections time out and close.
                        Err(_) => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let state = state.clone();
                    tokio::spawn(async move {
                        // Nothing of HTTP is set up before the client sends something: a
                        // connection that only waits costs its socket and this task (hyper's
                        // buffers are 12 KB a connection). The idle limit holds here too.
                        // (`peek`, not `readable`, which may wake with nothing to read.)
                        match tokio::time::timeout(idle, stream.peek(&mut [0u8; 1])).await {
                            Ok(Ok(1..)) => {}
                            _ => return,
                        }
                        // Boxed: the connection's state machine is allocated only now.
                        Box::pin(serve_connection(stream, state, peer, idle)).await;
                    });
                }
            });
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        anyhow::Ok(())
    })?;
    runtime.shutdown_timeout(Duration::from_millis(500));
    Ok(())
}

/// One client connection, over HTTP/1 with keep-alive and upgrades.
async fn serve_connection(
    stream: tokio::net::TcpStream,
    state: Arc<State>,
    peer: SocketAddr,
    idle: Duration,
) {
    let upstream: Upstream = Arc::default();
    let upgraded: Arc<AtomicBool> = Arc::default();
    let guarded = guard::Guarded::new(stream, upgraded.clone());
    let service = hyper::service::service_fn(move |req| {
        handle(req, state.clone(), upstream.clone(), peer, upgraded.clone())
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .max_buf_size(64 * 1024)
        // A connection that sends no (whole) request head within this time, first or between
        // keep-alive requests, is closed: idle clients cannot hold every descriptor.
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(idle)
        .serve_connection(TokioIo::new(guarded), service)
        .with_upgrades()
        .await;
}

fn page(status: StatusCode, title: &str, body: &str) -> Response<Body> {
    let html = format!(
        "<!doctype html><meta charset=utf-8><title>{title}</title><h1>{title}</h1>{body}<p><small>git-worktree-ports proxy</small>\n"
    );
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Full::new(Bytes::from(html)).map_err(|e| match e {}).boxed())
        .expect("a valid response")
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The host a request is for, as sent: the request target's authority in absolute form
/// (`GET http://other/x`: RFC 9112 section 3.2.2 makes it win over any Host header), else
/// its one Host header. None: none, or several.
fn host_value(req: &Request<Incoming>) -> Option<String> {
    if let Some(authority) = req.uri().authority() {
        return Some(authority.as_str().to_string());
    }
    let mut hosts = req.headers().get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(h), None) => Some(h.to_str().ok()?.to_string()),
        _ => None,
    }
}

/// The name a request is for ([`host_value`], a DNS name). None: 400.
fn request_host(req: &Request<Incoming>) -> Option<String> {
    names::host_of(&host_value(req)?)
}

/// A request for no worktree's name: the loopback itself (`localhost`, `127.0.0.1`, `[::1]`,
/// with or without the port), which the dashboard answers. No route has such a name.
fn for_dashboard(req: &Request<Incoming>) -> bool {
    let Some(value) = host_value(req) else {
        return false;
    };
    value == "[::1]"
        || value.starts_with("[::1]:")
        || matches!(
            names::host_of(&value).as_deref(),
            Some("localhost" | "127.0.0.1")
        )
}

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
];

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

async fn handle(
    mut req: Request<Incoming>,
    state: Arc<State>,
    upstream: Upstream,
    peer: SocketAddr,
    upgraded: Arc<AtomicBool>,
) -> Result<Response<Body>, Infallible> {
    // A request this wrong ends its connection.
    let bad = |why: &str| {
        let mut r = page(
            StatusCode::BAD_REQUEST,
            "400 Bad Request",
            &format!("<p>{}</p>", escape(why)),
        );
        (r.headers_mut()).insert(header::CONNECTION, HeaderValue::from_static("close"));
        r
    };
    if for_dashboard(&req) {
        return Ok(dashboard(&req, &state).await);
    }
    let Some(host) = request_host(&req) else {
        return Ok(bad(
            "the Host header is missing, repeated, or not a host name",
        ));
    };
    // Content-Length with Transfer-Encoding, and oversized heads, never get here: the
    // guard (guard.rs) refused them before hyper parsed them.
    let route = state.routes.read().expect("routes lock").get(&host);
    let Some(route) = route else {
        return Ok(not_found(&state, &host));
    };
    let upgrade = is_upgrade(req.headers());
    // The server sees the host the request was routed by.
    let original_host = match req.uri().authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => req.headers().get(header::HOST).cloned(),
    };
    if let Some(h) = &original_host {
        req.headers_mut().insert(header::HOST, h.clone());
    }
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let uri = match path.parse::<hyper::Uri>() {
        Ok(u) => u,
        Err(_) => return Ok(bad("the request path cannot be forwarded")),
    };
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    parts.uri = uri;
    let headers = &mut parts.headers;
    let keep_upgrade = upgrade.then(|| {
        (
            headers.get(header::UPGRADE).cloned(),
            headers.get(header::CONNECTION).cloned(),
        )
    });
    for h in HOP_BY_HOP {
        headers.remove(h);
    }
    headers.remove(header::UPGRADE);
    if let Some((up, conn)) = keep_upgrade {
        if let Some(up) = up {
            headers.insert(header::UPGRADE, up);
        }
        headers.insert(
            header::CONNECTION,
            conn.unwrap_or(HeaderValue::from_static("upgrade")),
        );
    }
    let peer_ip = peer.ip().to_string();
    let xff = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {peer_ip}"),
        None => peer_ip,
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert("x-forwarded-for", v);
    }
    if let Some(h) = original_host {
        headers.insert("x-forwarded-host", h);
    }
    headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    let outgoing = Request::from_parts(parts, body);
    let mut response = match send(&upstream, route.port, outgoing, upgrade).await {
        Ok(r) => r,
        Err(failure) => return Ok(bad_gateway(&route, &host, failure)),
    };
    if response.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(client_upgrade) = client_upgrade
    {
        // Before the 101 goes out: what the client sends next is the new protocol's, and the
        // guard lets it through unexamined only from now.
        upgraded.store(true, std::sync::atomic::Ordering::Release);
        let upstream_upgrade = hyper::upgrade::on(&mut response);
        tokio::spawn(async move {
            if let (Ok(client), Ok(server)) = (client_upgrade.await, upstream_upgrade.await) {
                let mut client = TokioIo::new(client);
                let mut server = TokioIo::new(server);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            }
        });
        let (parts, _) = response.into_parts();
        return Ok(Response::from_parts(
            parts,
            http_body_util::Empty::new().map_err(|e| match e {}).boxed(),
        ));
    }
    let (mut parts, body) = response.into_parts();
    for h in HOP_BY_HOP {
        parts.headers.remove(h);
    }
    Ok(Response::from_parts(parts, body.boxed()))
}

fn bad_gateway(route: &Route, host: &str, failure: Failure) -> Response<Body> {
    let (title, what) = match failure {
        Failure::Refused => (
            "502 Bad Gateway: nothing listens there",
            "nothing listens on port {} (127.0.0.1 or ::1)",
        ),
        Failure::TimedOut => (
            "502 Bad Gateway: the server did not answer",
            "the server on port {} did not accept a connection within 2 s",
        ),
        Failure::Reset => (
            "502 Bad Gateway: the server closed the connection",
            "the server on port {} closed or reset the connection without an HTTP answer",
        ),
    };
    let what = what.replace("{}", &route.port.to_string());
    page(
        StatusCode::BAD_GATEWAY,
        title,
        &format!(
            "<p><b>{}</b> is worktree <b>{}</b> of {} (service {}, port {}), and {what}.</p><p>Start its server, for example: <code>cd {} &amp;&amp; git worktree-ports exec -- npm run dev</code> (its port is in <code>$WEB_PORT</code>; <code>git worktree-ports status</code> there shows what runs).</p>",
            escape(host),
            escape(&route.worktree),
            escape(&route.repository.display().to_string()),
            escape(&route.service),
            route.port,
            escape(&route.path.display().to_string()),
        ),
    )
}

/// `GET /`: the dashboard; `GET /worktrees.json`: its data, `list --all --json`.
async fn dashboard(req: &Request<Incoming>, state: &State) -> Response<Body> {
    let path = req.uri().path();
    if req.method() != hyper::Method::GET && req.method() != hyper::Method::HEAD {
        return page(
            StatusCode::METHOD_NOT_ALLOWED,
            "405 Method Not Allowed",
            "<p>The dashboard only reads.</p>",
        );
    }
    if path != "/" && path != "/worktrees.json" {
        return page(
            StatusCode::NOT_FOUND,
            "404 Not Found",
            "<p>The proxy answers <a href=\"/\">/</a> (its dashboard) and /worktrees.json on localhost; a worktree's server is at http://&lt;worktree&gt;.&lt;repo&gt;.localhost.</p>",
        );
    }
    let fresh = (state.listed.lock().expect("listing lock").as_ref())
        .filter(|(at, _)| at.elapsed() < Duration::from_millis(500))
        .map(|(_, json)| json.clone());
    let answer = match fresh {
        Some(json) => Some(json),
        None => {
            // Reading every registry and the socket tables blocks: off the serving thread.
            let listing = state.listing.clone();
            let made = tokio::task::spawn_blocking(move || listing())
                .await
                .ok()
                .flatten();
            if let Some(json) = &made {
                *state.listed.lock().expect("listing lock") =
                    Some((std::time::Instant::now(), json.clone()));
            }
            made
        }
    };
    let Some(json) = answer else {
        return page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "500: the machine's listing could not be read",
            "<p>See the proxy's log; <code>git worktree-ports list --all</code> says why.</p>",
        );
    };
    let (body, kind) = match path {
        "/" => {
            let value: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
            (
                dashboard::page(&value, state.port),
                "text/html; charset=utf-8",
            )
        }
        _ => (json, "application/json"),
    };
    Response::builder()
        .header(header::CONTENT_TYPE, kind)
        .header(header::CACHE_CONTROL, "no-store")
        .body(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed())
        .expect("a valid response")
}

fn not_found(state: &State, host: &str) -> Response<Body> {
    let routes = state.routes.read().expect("routes lock");
    let items: String = routes
        .0
        .iter()
        .map(|(name, r)| {
            format!(
                "<li><a href=\"http://{name}:{port}/\">{name}</a>: worktree {} of {} ({} on port {})</li>",
                escape(&r.worktree),
                escape(&r.repository.display().to_string()),
                escape(&r.service),
                r.port,
                name = escape(name),
                port = state.port,
            )
        })
        .collect();
    page(
        StatusCode::NOT_FOUND,
        "404 Not Found: no worktree has this name",
        &format!(
            "<p>No worktree is called <b>{}</b>. The known ones:</p><ul>{items}</ul>",
            escape(host)
        ),
    )
}
