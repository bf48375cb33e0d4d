#!/usr/bin/env bash
# The proxy against direct requests to the same local server, side by side in one run, with wrk
# (installed from Debian's packages if missing). One command from a fresh clone:
#   bash benches/proxy.sh
# Prints: latency (median, p99) and throughput at 64 keep-alive connections, direct, through
# the proxy, and through nginx with one and with two workers as a reference (installed from
# Debian's packages if missing), in alternating rounds; the proxy's memory holding 1,000
# keep-alive connections (and per connection); a
# hung upstream's effect on another route; memory before and after clients that disconnect
# mid-stream; and a bounded soak (SOAK seconds, default 60, at most 600).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-4}
DURATION=${DURATION:-5}
SOAK=${SOAK:-60}
[ "$SOAK" -gt 600 ] && SOAK=600
. benches/debian.sh
command -v wrk >/dev/null || debian_install wrk wrk
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
if [ ! -x "$NGINX" ]; then
	debian_install "nginx, the reference" nginx-light
fi
cargo build --release --locked -q
BIN="$PWD/target/release/git-worktree-ports"
BACKEND=$(cargo bench --locked --no-run --bench backend --message-format=json 2>/dev/null |
	python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "backend" and m.get("executable"):
        print(m["executable"])')

SETSID=$(command -v setsid || true)
[ -n "$SETSID" ] || echo "setsid is missing: nginx runs in the benchmark's session, the proxy in its own (not comparable)" >&2
work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; "$BIN" proxy stop >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
export HOME="$work/home" GIT_CONFIG_GLOBAL="$work/gitconfig" GIT_CONFIG_SYSTEM=/dev/null XDG_STATE_HOME="$work/state"
mkdir -p "$HOME"
git config --global user.name bench && git config --global user.email bench@example.com
git init -q "$work/app" && cd "$work/app"
mkdir .worktree-ports
printf '[services.web]\nrange = [63100, 63109]\n[services.slow]\nrange = [63110, 63119]\nhttp = true\n[services.work]\nrange = [63120, 63129]\nhttp = true\n' >.worktree-ports/config.toml
git add -A && git commit -q -m init
"$BIN" allocate --no-render >/dev/null
web=$("$BIN" get web)
slow=$("$BIN" get slow)
work_port=$("$BIN" get work)
BACKEND_PORT=$web "$BACKEND" & pids+=($!)
# The same server spending 100 us of CPU per request (a light dev-server handler).
BACKEND_PORT=$work_port BACKEND_WORK_US=100 "$BACKEND" & pids+=($!)
# A hung upstream: accepts connections and never answers.
python3 -c 'import socket,sys,time; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(4096); c=[]; [c.append(s.accept()) for _ in iter(int, 1)]' "$slow" & pids+=($!)
# nginx in front of the same backend, as a reverse proxy is set up for speed: upstream
# keep-alive, no access log; one worker and two (this machine's cores).
for w in 1 2; do
	cat >"$work/nginx-$w.conf" <<EOF
worker_processes $w;
pid $work/nginx-$w.pid;
error_log $work/nginx-$w.log;
events { worker_connections 4096; }
http {
	access_log off;
	upstream backend { server 127.0.0.1:$web; keepalive 64; }
	server {
		listen 127.0.0.1:$((63190 + w));
		location / {
			proxy_pass http://backend;
			proxy_http_version 1.1;
			proxy_set_header Connection "";
		}
	}
}
EOF
	# In a session of its own, as the proxy's daemon is (`proxy start` calls setsid) and as
	# either runs in real use: with the kernel's autogroup scheduling (on by default), a
	# session is a scheduling group, and a proxy sharing the benchmark's session with wrk and
	# the backend gets a larger share of the 2 cores under saturation than one in a session
	# of its own (measured: nginx with two workers 31-36 k req/s in the session, 24-31 k
	# in its own; p99 4 ms against 7-15 ms).
	$SETSID "$NGINX" -c "$work/nginx-$w.conf" -p "$work" -g 'daemon off;' & pids+=($!)
done
PROXY=63199
"$BIN" proxy start --port $PROXY >/dev/null
# The pid file names the process by pid, start time and executable: the pid is the first.
ppid=$(awk '{print $1; exit}' "$XDG_STATE_HOME/git-worktree-ports/proxy.pid")
sleep 0.5
direct="http://127.0.0.1:$web/"
proxied="http://127.0.0.1:$PROXY/"
host="app.localhost:$PROXY"
rss() { awk '/VmRSS/ {print $2}' "/proc/$ppid/status"; }
run() { # label url [host]
	local out
	if [ -n "${3:-}" ]; then
		out=$(wrk -t1 -c64 -d"${DURATION}s" --latency -H "Host: $3" "$2")
	else
		out=$(wrk -t1 -c64 -d"${DURATION}s" --latency "$2")
	fi
	python3 - "$1" <<PY
import re, sys
text = """$out"""
def ms(v):
    m = re.match(r"([\d.]+)(us|ms|s)", v)
    if not m:
        print(f"unreadable latency {v!r} in wrk's output:\n{text}", file=sys.stderr)
        return float("nan")
    n, u = m.groups()
    return float(n) * {"us": 0.001, "ms": 1, "s": 1000}[u]
# Anchored: "94.99%" in wrk's +/- Stdev column must not read as the 99th percentile.
p50 = ms(re.search(r"^\s*50%\s+(\S+)", text, re.M).group(1))
p99 = ms(re.search(r"^\s*99%\s+(\S+)", text, re.M).group(1))
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
print(f"{sys.argv[1]} {p50:.3f} {p99:.3f} {rps:.0f} {non2xx.group(1) if non2xx else 0}")
PY
}
echo "== 64 keep-alive connections, ${DURATION}s each, $ROUNDS alternating rounds (p50 ms, p99 ms, req/s, non-2xx)"
results="$work/results"
order=(direct proxy nginx-1 nginx-2)
for r in $(seq 1 "$ROUNDS"); do
	for i in 0 1 2 3; do
		# The order turns every round: drift does not land on one of them.
		label=${order[$(((i + r) % 4))]}
		case $label in
		direct) run direct "$direct" ;;
		proxy) run proxy "$proxied" "$host" ;;
		nginx-1) run nginx-1 "http://127.0.0.1:63191/" ;;
		nginx-2) run nginx-2 "http://127.0.0.1:63192/" ;;
		esac | tee -a "$results"
	done
done
echo "== the same against a server spending 100 us of CPU per request, 2 alternating rounds"
for r in 1 2; do
	run work-direct "http://127.0.0.1:$work_port/" | tee -a "$results"
	run work-proxy "$proxied" "work.$host" | tee -a "$results"
done
# At a fixed rate well below saturation (what a developer's browser does), with oha where it
# is installed (`cargo install oha`): the latency the proxy adds, not the queue in front of it.
if command -v oha >/dev/null; then
	echo "== 64 connections at ${RATE:-2000} req/s (oha), ${DURATION}s each, $ROUNDS alternating rounds"
	fixed() { # label url [host]
		local args=(-z "${DURATION}s" -c 64 -q "${RATE:-2000}" --no-tui --output-format json)
		[ -n "${3:-}" ] && args+=(-H "Host: $3")
		oha "${args[@]}" "$2" | python3 -c 'import json,sys
d = json.load(sys.stdin); p = d["latencyPercentiles"]
print(sys.argv[1], "%.3f %.3f %.0f 0" % (p["p50"] * 1000, p["p99"] * 1000, d["summary"]["requestsPerSec"]))' "$1"
	}
	for r in $(seq 1 "$ROUNDS"); do
		if [ $((r % 2)) = 1 ]; then
			fixed "fixed-direct" "$direct" | tee -a "$results"
			fixed "fixed-proxy" "$proxied" "$host" | tee -a "$results"
		else
			fixed "fixed-proxy" "$proxied" "$host" | tee -a "$results"
			fixed "fixed-direct" "$direct" | tee -a "$results"
		fi
	done
else
	echo "skipped the fixed-rate rows: oha is not installed (cargo install oha)" >&2
fi
ulimit -n 8192 2>/dev/null || true
# The proxy's RSS while 1,000 connections are held: ones that sent one request each (with a
# Host), or ones that have sent nothing (without).
held_rss() { # [host]
	python3 - "$PROXY" "${1:-}" >"$work/held" <<'PY' &
import socket, sys, time
port, host = int(sys.argv[1]), sys.argv[2]
socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(1000)]
if host:
    for s in socks:
        s.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    for s in socks:
        data = b""
        while b"\r\n\r\n" not in data:
            data += s.recv(65536)
print("held", flush=True)
time.sleep(4)
PY
	local holder=$!
	for _ in $(seq 1 100); do grep -q held "$work/held" 2>/dev/null && break; sleep 0.1; done
	sleep 1
	rss
	wait $holder || true
}
echo "== 1,000 connections held that have sent nothing yet (a browser's preconnects)"
rss_silent=$(held_rss)
sleep 1
rss_before=$(rss)
echo "== 1,000 keep-alive connections held (one request each, then idle)"
rss_held=$(held_rss "$host")
echo "== 1,000 connections all sending as fast as they can"
wrk -t2 -c1000 -d"${DURATION}s" -H "Host: $host" "$proxied" >/dev/null &
w=$!
sleep $((DURATION - 1))
rss_1000=$(rss)
wait $w || true
echo "== a hung upstream: 200 requests stuck on it while the other route is measured"
(for _ in $(seq 1 200); do curl -s --max-time 30 -H "Host: slow.app.localhost:$PROXY" "$proxied" >/dev/null & done; wait) &
hung=$!
sleep 1
run "proxy, with 200 requests hung on another route" "$proxied" "$host" | tee -a "$results"
kill $hung 2>/dev/null || true
pkill -f "slow.app.localhost" 2>/dev/null || true
echo "== clients that disconnect mid-response, then a ${SOAK}s soak"
rss_mid_before=$(rss)
for _ in $(seq 1 500); do curl -s --max-time 0.01 -H "Host: $host" "$proxied" >/dev/null 2>&1 || true; done
sleep 1
rss_mid_after=$(rss)
fds_after=$(ls /proc/$ppid/fd | wc -l)
soak_start=$(rss)
wrk -t2 -c64 -d"${SOAK}s" -H "Host: $host" "$proxied" >/dev/null
soak_end=$(rss)
python3 - "$results" "$rss_before" "$rss_held" "$rss_1000" "$rss_mid_before" "$rss_mid_after" "$fds_after" "$soak_start" "$soak_end" "$SOAK" "$rss_silent" <<'PY'
import statistics, sys
res, before, held, at1000, mid_b, mid_a, fds, soak_s, soak_e, soak, silent = sys.argv[1:]
rows = [l.rsplit(" ", 4) for l in open(res).read().splitlines()]
rows = [r for r in rows if len(r) == 5]
def med(label, i):
    return statistics.median(float(r[i]) for r in rows if r[0] == label)
d50, p50 = med("direct", 1), med("proxy", 1)
d99, p99 = med("direct", 2), med("proxy", 2)
drps, prps = med("direct", 3), med("proxy", 3)
print()
print("| what (wrk rows: as fast as it can, saturating 2 cores) | direct | through the proxy | difference | target |")
print("|---|---:|---:|---:|---|")
print(f"| median latency, 64 connections, 1 KB | {d50:.3f} ms | {p50:.3f} ms | {p50 - d50:+.3f} ms | at most +0.2 ms |")
print(f"| p99 latency | {d99:.3f} ms | {p99:.3f} ms | {p99 - d99:+.3f} ms | at most +1 ms |")
print(f"| throughput | {drps:.0f} req/s | {prps:.0f} req/s | {100 * prps / drps:.0f}% | at least nginx with two workers |")
for w in (1, 2):
    if any(r[0] == f"nginx-{w}" for r in rows):
        n50, nrps = med(f"nginx-{w}", 1), med(f"nginx-{w}", 3)
        print(f"| reference: nginx, {w} worker{'s' if w > 1 else ''}: median latency / throughput | | {n50:.3f} ms / {nrps:.0f} req/s | {n50 - d50:+.3f} ms / {100 * nrps / drps:.0f}% | |")
if any(r[0] == "work-direct" for r in rows):
    wd, wp = med("work-direct", 3), med("work-proxy", 3)
    print(f"| throughput, a server spending 100 us of CPU per request | {wd:.0f} req/s | {wp:.0f} req/s | {100 * wp / wd:.0f}% | (not a target: the realistic case) |")
if any(r[0] == "fixed-direct" for r in rows):
    f50, g50 = med("fixed-direct", 1), med("fixed-proxy", 1)
    f99, g99 = med("fixed-direct", 2), med("fixed-proxy", 2)
    print(f"| median latency, 64 connections at a fixed rate (oha) | {f50:.3f} ms | {g50:.3f} ms | {g50 - f50:+.3f} ms | at most +0.2 ms |")
    print(f"| p99 latency, the same | {f99:.3f} ms | {g99:.3f} ms | {g99 - f99:+.3f} ms | at most +1 ms |")
hung = [r for r in rows if r[0].startswith("proxy, with 200")]
if hung:
    print(f"| median latency with 200 requests hung on another route | | {float(hung[0][1]):.3f} ms | | unaffected |")
print(f"| proxy memory (RSS) holding 1,000 keep-alive connections (idle after one request each) | | {int(held)/1024:.1f} MB | | < 50 MB |")
print(f"| of which per idle connection (RSS held - RSS before, / 1,000) | | {(int(held) - int(before)) / 1000:.1f} KB | | at most 8 KB |")
print(f"| per connection that has sent nothing yet (1,000 held) | | {(int(silent) - int(before)) / 1000:.1f} KB | | |")
print(f"| proxy memory (RSS): idle after the rounds / 1,000 connections all sending (wrk -c1000) | | {int(before)/1024:.1f} MB / {int(at1000)/1024:.1f} MB | | |")
print(f"| RSS before / after 500 clients that disconnect mid-response; open fds after | | {int(mid_b)/1024:.1f} MB / {int(mid_a)/1024:.1f} MB; {fds} fds | | back to baseline |")
print(f"| RSS at the start / end of a {soak} s soak (64 connections) | | {int(soak_s)/1024:.1f} MB / {int(soak_e)/1024:.1f} MB | | flat |")
PY
