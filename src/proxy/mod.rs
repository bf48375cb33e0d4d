//! The proxy: one HTTP/1.1 port on 127.0.0.1 and ::1 that routes by the Host header to the
//! worktrees' servers (`feature.app.localhost:7355` -> the worktree's first HTTP service,
//! `api.feature.app.localhost:7355` -> its `api`). Keep-alive, chunked and streamed bodies
//! (server-sent events) and upgrades (WebSocket: dev servers' hot reload) pass through;
//! `X-Forwarded-For`, `-Host` and `-Proto` are set. A known host whose server is down gets a
//! 502 page saying how to start it; an unknown host a 404 page listing the known ones;
//! `localhost` itself (no worktree's name) the dashboard ([`dashboard`]) and its JSON;
//! requests with an unusable Host, both Content-Length and Transfer-Encoding, or a head over
//! 64 KiB get 400 and are never forwarded ([`http1`] says which).
//!
//! The async runtime starts here and only here: every other command keeps its start-up cost.
//! One serving thread per two cores ([`threads`]), each a current-thread runtime with its own
//! pool of server connections; the first accepts and hands each connection to the thread with
//! the fewest, where it stays until it closes. HTTP is read and written by
//! [`http1`] (sans I/O) and [`relay`] (the connection loop): heads are parsed once and
//! rewritten, bodies pass as they come, framed as they came, and a connection waiting for its
//! next request holds no buffer. Connections to the worktrees' servers are kept in one pool
//! per port and thread and taken by whichever client connection asks next (as nginx's
//! `keepalive`).
//! Another thread re-reads the routes when the files change.

pub mod daemon;
pub mod dashboard;
pub mod http1;
mod relay;
pub mod routes;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use crate::machine::Machine;
use http1::Method;
use routes::{Route, Routes};

/// Where the proxy listens, and where it looks for a worktree's server: both loopbacks.
const LOOPBACKS: [IpAddr; 2] = [
    IpAddr::V4(Ipv4Addr::LOCALHOST),
    IpAddr::V6(Ipv6Addr::LOCALHOST),
];

/// The default port: high, unprivileged, not Portless's 1355.
pub const DEFAULT_PORT: u16 = 7355;

/// Idle connections kept per server port (nginx's `keepalive` in the benchmark's setup).
const POOL: usize = 64;

/// What one serving thread's connections share.
struct State {
    /// The routes, the same for every thread (the routes thread replaces them).
    routes: Arc<RwLock<Routes>>,
    port: u16,
    /// The dashboard's data (`list --all --json`), made by the caller.
    listing: dashboard::Listing,
    /// The last listing and when it was made: every open page asks once a second, and a
    /// listing reads every registry and the socket tables, so pages share one per 500 ms.
    listed: Mutex<Option<(Instant, String)>>,
    /// Idle connections to the worktrees' servers, by port, the last used on top (this
    /// thread's: a socket is driven by the runtime that registered it).
    pool: Mutex<HashMap<u16, Vec<TcpStream>>>,
}

impl State {
    /// An idle connection to `port` the server has not closed meanwhile.
    fn checkout(&self, port: u16) -> Option<TcpStream> {
        let mut pool = self.pool.lock().expect("pool lock");
        let idle = pool.get_mut(&port)?;
        while let Some(stream) = idle.pop() {
            // A server that closed its end (its keep-alive timeout) made the socket readable
            // (an end of file); one still open has nothing to say between requests.
            if let Err(e) = stream.try_read(&mut [0u8; 1])
                && e.kind() == std::io::ErrorKind::WouldBlock
            {
                return Some(stream);
            }
        }
        None
    }

    /// Keep `stream`, between requests, for the next request to `port`.
    fn checkin(&self, port: u16, stream: TcpStream) {
        let mut pool = self.pool.lock().expect("pool lock");
        let idle = pool.entry(port).or_default();
        if idle.len() < POOL {
            idle.push(stream);
        }
    }
}

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
async fn connect(port: u16) -> Result<TcpStream, Failure> {
    let mut failure = Failure::Refused;
    for ip in LOOPBACKS {
        match tokio::time::timeout(
            Duration::from_secs(2),
            TcpStream::connect(SocketAddr::new(ip, port)),
        )
        .await
        {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            // Nothing there: the other loopback may have it. Any other failure is said.
            Ok(Err(e)) if Failure::of(&e) == Failure::Refused => {}
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::AddrNotAvailable => {}
            Ok(Err(e)) => failure = Failure::of(&e),
            Err(_) => failure = Failure::TimedOut,
        }
    }
    Err(failure)
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
    for ip in LOOPBACKS {
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

/// How many threads serve: `GIT_WORKTREE_PORTS_PROXY_THREADS`, else one per two cores (at
/// least 1, at most 4): the proxy shares the machine with the servers behind it and their
/// clients. Measured on 2 cores under saturation, as a daemon: one thread 28.6-32.6 k req/s
/// with p99 4.0-4.3 ms, two threads 27.3-28.4 k with p99 12-20 ms.
fn threads() -> usize {
    std::env::var("GIT_WORKTREE_PORTS_PROXY_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() / 2))
        .clamp(1, 4)
}

/// Serve until SIGTERM or SIGINT. Routes follow the index and the registries (checked twice a
/// second).
pub fn serve(bound: Bound, machine: Machine, listing: dashboard::Listing) -> anyhow::Result<()> {
    // systemd's default soft limit is 1,024 descriptors: take what the hard limit allows.
    crate::sys::procs::raise_open_files_limit();
    // A server outlives any file it reads: never mapped (fsio::never_map).
    crate::sys::fsio::never_map();
    let idle = idle_timeout();
    let (routes, mut signature) = Routes::read(&machine);
    let routes = Arc::new(RwLock::new(routes));
    // Routes follow the files: checked on a thread of their own, so reading many registries
    // never stalls a serving thread.
    {
        let routes = routes.clone();
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(500));
                if Routes::changed(&signature) {
                    let (read, sig) = Routes::read(&machine);
                    signature = sig;
                    *routes.write().expect("routes lock") = read;
                }
            }
        });
    }
    // Each serving thread is a runtime of its own with its own pool of server connections;
    // a connection lives on one thread from accept to close, so no request waits for
    // another thread. The first accepts and gives each connection to the thread with the
    // fewest open (itself, without a hand-over, when that is it): with every thread
    // accepting on the shared sockets, the split went to whichever thread woke first.
    let count = threads();
    let mut inboxes = Vec::new();
    let mut workers = Vec::new();
    for _ in 0..count {
        let (sender, inbox) = tokio::sync::mpsc::unbounded_channel();
        inboxes.push(inbox);
        workers.push((sender, Arc::new(AtomicUsize::new(0))));
    }
    let workers = Arc::new(workers);
    let mut listeners = Some(bound.listeners);
    for (index, mut inbox) in inboxes.into_iter().enumerate() {
        let state = Arc::new(State {
            routes: routes.clone(),
            port: bound.port,
            listing: listing.clone(),
            listed: Default::default(),
            pool: Default::default(),
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let listeners = if index == 0 {
            let mut mine = Vec::new();
            for l in listeners.take().unwrap_or_default() {
                let _guard = runtime.enter();
                mine.push(tokio::net::TcpListener::from_std(l)?);
            }
            mine
        } else {
            Vec::new()
        };
        let workers = workers.clone();
        std::thread::spawn(move || {
            runtime.block_on(async move {
                for listener in listeners {
                    tokio::spawn(accept(listener, workers.clone(), state.clone(), idle));
                }
                let open = &workers[index].1;
                while let Some((stream, peer)) = inbox.recv().await {
                    match TcpStream::from_std(stream) {
                        Ok(stream) => serve_counted(stream, state.clone(), peer, idle, open),
                        Err(_) => {
                            open.fetch_sub(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        });
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        anyhow::Ok(())
    })
}

/// A serving thread: where its connections are sent, and how many it has open.
type Worker = (
    tokio::sync::mpsc::UnboundedSender<(std::net::TcpStream, SocketAddr)>,
    Arc<AtomicUsize>,
);

/// Serve `stream` on this thread (already counted in `open`), uncounting it at the end.
fn serve_counted(
    stream: TcpStream,
    state: Arc<State>,
    peer: SocketAddr,
    idle: Duration,
    open: &Arc<AtomicUsize>,
) {
    let open = open.clone();
    tokio::spawn(async move {
        relay::connection(stream, state, peer, idle).await;
        open.fetch_sub(1, Ordering::Relaxed);
    });
}

/// Accept connections on `listener` (on the first serving thread, whose `state` this is),
/// each served by the thread with the fewest open.
async fn accept(
    listener: tokio::net::TcpListener,
    workers: Arc<Vec<Worker>>,
    state: Arc<State>,
    idle: Duration,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Out of descriptors (EMFILE): retrying at once spins a core and answers nobody;
            // a pause lets idle connections time out and close.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Some((index, (sender, open))) =
            (workers.iter().enumerate()).min_by_key(|(_, (_, open))| open.load(Ordering::Relaxed))
        else {
            return;
        };
        open.fetch_add(1, Ordering::Relaxed);
        if index == 0 {
            serve_counted(stream, state.clone(), peer, idle, open);
            continue;
        }
        let sent = (stream.into_std()).is_ok_and(|stream| sender.send((stream, peer)).is_ok());
        if !sent {
            open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// An answer the proxy makes itself: a page, the dashboard, its JSON.
struct Answer {
    status: u16,
    reason: &'static str,
    kind: &'static str,
    body: String,
    /// The connection ends after it (a request this wrong).
    close: bool,
}

impl Answer {
    fn page(status: u16, reason: &'static str, title: &str, body: &str) -> Answer {
        Answer {
            status,
            reason,
            kind: "text/html; charset=utf-8",
            body: format!(
                "<!doctype html><meta charset=utf-8><title>{title}</title><h1>{title}</h1>{body}<p><small>git-worktree-ports proxy</small>\n"
            ),
            close: false,
        }
    }

    /// 400, and the connection ends.
    fn bad_request(why: &str) -> Answer {
        Answer {
            close: true,
            ..Answer::page(
                400,
                "Bad Request",
                "400 Bad Request",
                &format!("<p>{}</p>", dashboard::esc(why)),
            )
        }
    }

    /// The response's bytes (without the body for HEAD); `close` says the connection ends.
    fn bytes(&self, head_only: bool, close: bool) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nCache-Control: no-store\r\nContent-Length: {}\r\n{}\r\n",
            self.status,
            self.reason,
            self.kind,
            self.body.len(),
            if close { "Connection: close\r\n" } else { "" },
        )
        .into_bytes();
        if !head_only {
            out.extend_from_slice(self.body.as_bytes());
        }
        out
    }
}

/// A request for no worktree's name: the loopback itself (`localhost`, `127.0.0.1`, `[::1]`,
/// with or without the port), which the dashboard answers. No route has such a name.
/// `value` is the host as sent, `host` its name ([`crate::model::names::host_of`]).
fn for_dashboard(value: &str, host: Option<&str>) -> bool {
    value == "[::1]"
        || value.starts_with("[::1]:")
        || matches!(host, Some("localhost" | "127.0.0.1"))
}

fn bad_gateway(route: &Route, host: &str, failure: Failure) -> Answer {
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
    Answer::page(
        502,
        "Bad Gateway",
        title,
        &format!(
            "<p><b>{}</b> is worktree <b>{}</b> of {} (service {}, port {}), and {what}.</p><p>Start its server, for example: <code>cd {} &amp;&amp; git worktree-ports exec -- npm run dev</code> (its port is in <code>$WEB_PORT</code>; <code>git worktree-ports status</code> there shows what runs).</p>",
            dashboard::esc(host),
            dashboard::esc(&route.worktree),
            dashboard::esc(&route.repository.display().to_string()),
            dashboard::esc(&route.service),
            route.port,
            dashboard::esc(&route.path.display().to_string()),
        ),
    )
}

/// `GET /`: the dashboard; `GET /worktrees.json`: its data, `list --all --json`.
async fn dashboard(method: Method, target: &str, state: &State) -> Answer {
    let path = target.split('?').next().unwrap_or(target);
    if method != Method::Get && method != Method::Head {
        return Answer::page(
            405,
            "Method Not Allowed",
            "405 Method Not Allowed",
            "<p>The dashboard only reads.</p>",
        );
    }
    if path != "/" && path != "/worktrees.json" {
        return Answer::page(
            404,
            "Not Found",
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
                *state.listed.lock().expect("listing lock") = Some((Instant::now(), json.clone()));
            }
            made
        }
    };
    let Some(json) = answer else {
        return Answer::page(
            500,
            "Internal Server Error",
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
    Answer {
        status: 200,
        reason: "OK",
        kind,
        body,
        close: false,
    }
}

fn not_found(state: &State, host: &str) -> Answer {
    let routes = state.routes.read().expect("routes lock");
    let items: String = routes
        .0
        .iter()
        .map(|(name, r)| {
            format!(
                "<li><a href=\"http://{name}:{port}/\">{name}</a>: worktree {} of {} ({} on port {})</li>",
                dashboard::esc(&r.worktree),
                dashboard::esc(&r.repository.display().to_string()),
                dashboard::esc(&r.service),
                r.port,
                name = dashboard::esc(name),
                port = state.port,
            )
        })
        .collect();
    Answer::page(
        404,
        "Not Found",
        "404 Not Found: no worktree has this name",
        &format!(
            "<p>No worktree is called <b>{}</b>. The known ones:</p><ul>{items}</ul>",
            dashboard::esc(host)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error pages quote names from the registry and the Host header: escaped with the
    /// dashboard's one escape, quotes included (they had an escape of their own that left
    /// quotes alone).
    #[test]
    fn error_pages_escape_what_they_quote_as_the_dashboard_does() {
        let route = Route {
            repository: "/src/a\"b<".into(),
            worktree: "w'<x>&".into(),
            path: "/src/\"p\"".into(),
            service: "web".into(),
            port: 8081,
        };
        let a = bad_gateway(&route, "h\"<i>", Failure::Reset);
        assert!(
            a.body.contains(
                "<b>h&quot;&lt;i&gt;</b> is worktree <b>w&#39;&lt;x&gt;&amp;</b> of /src/a&quot;b&lt;"
            ),
            "{}",
            a.body
        );
        assert!(
            a.body.contains("<code>cd /src/&quot;p&quot; &amp;&amp;"),
            "{}",
            a.body
        );
    }
}
