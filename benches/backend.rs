//! A small, fast HTTP/1.1 server for `benches/proxy.sh`: keep-alive, a 1 KB body, one thread
//! per connection. Not a benchmark of its own: run by `cargo bench` it has nothing to do and
//! exits; `BACKEND_PORT=<port>` makes it serve until killed. `BACKEND_WORK_US=<n>` makes it
//! spend n microseconds of CPU on each request first, like a light dev-server handler.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;

fn main() {
    let Some(port) = std::env::var("BACKEND_PORT")
        .ok()
        .and_then(|p| p.parse::<u16>().ok())
    else {
        return;
    };
    let work = std::time::Duration::from_micros(
        (std::env::var("BACKEND_WORK_US").ok())
            .and_then(|w| w.parse().ok())
            .unwrap_or(0),
    );
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind");
    let body = "x".repeat(1024);
    for stream in listener.incoming().flatten() {
        let body = body.clone();
        std::thread::spawn(move || {
            let _ = stream.set_nodelay(true);
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut out = stream;
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n{body}",
                body.len()
            );
            loop {
                let mut len = 0usize;
                let mut line = String::new();
                // Request line and headers.
                loop {
                    line.clear();
                    match reader.read_line(&mut line) {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    if line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut skip = vec![0; len];
                let start = std::time::Instant::now();
                while start.elapsed() < work {
                    std::hint::spin_loop();
                }
                if reader.read_exact(&mut skip).is_err()
                    || out.write_all(response.as_bytes()).is_err()
                {
                    return;
                }
            }
        });
    }
}
