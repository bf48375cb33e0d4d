#!/usr/bin/env python3
"""MCP `tools/call` against the CLI doing the same, in paired rounds (one run: this machine's
disk speed drifts). Run by `bash benches/mcp.sh` (which builds the release binary and makes
a hermetic repository); prints one Markdown table.

For get_port and allocate (idempotent): the round-trip time of one `tools/call` to a warm
server over its stdio pipes, the same through `ping` (the protocol's floor: framing, JSON,
the pipe), and one CLI process doing the same (`get web`, `allocate --no-render --json`).
"""

import json
import os
import statistics
import subprocess
import sys
import time

BIN, REPO, ROUNDS = sys.argv[1], sys.argv[2], int(sys.argv[3])

server = subprocess.Popen([BIN, "mcp"], cwd=REPO, stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
next_id = 0


def rpc(method, params):
    global next_id
    next_id += 1
    line = json.dumps({"jsonrpc": "2.0", "id": next_id, "method": method, "params": params})
    server.stdin.write(line.encode() + b"\n")
    server.stdin.flush()
    answer = json.loads(server.stdout.readline())
    assert answer["id"] == next_id and "error" not in answer, answer
    return answer


rpc("initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "bench", "version": "1"}})
server.stdin.write(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')
server.stdin.flush()

calls = {
    "ping": lambda: rpc("ping", {}),
    "get_port": lambda: rpc("tools/call", {"name": "get_port",
                                           "arguments": {"path": REPO, "service": "web"}}),
    "allocate": lambda: rpc("tools/call", {"name": "allocate",
                                           "arguments": {"path": REPO, "render": False}}),
    "cli get": lambda: subprocess.run([BIN, "get", "web"], cwd=REPO, check=True,
                                      stdout=subprocess.DEVNULL),
    "cli allocate": lambda: subprocess.run([BIN, "allocate", "--no-render", "--json"],
                                           cwd=REPO, check=True, stdout=subprocess.DEVNULL),
}
for f in calls.values():  # warm: caches, the registry's first read
    f()
times = {name: [] for name in calls}
for _ in range(ROUNDS):
    # One of each per round, so drift hits all alike; MCP calls are cheap: 10 per round.
    for name, f in calls.items():
        n = 1 if name.startswith("cli") else 10
        for _ in range(n):
            t = time.perf_counter()
            f()
            times[name].append((time.perf_counter() - t) * 1e6)
server.stdin.close()
server.wait()


def row(name):
    ts = sorted(times[name])
    p99 = ts[min(len(ts) - 1, int(len(ts) * 0.99))]
    return f"| {name} | {len(ts)} | {statistics.median(ts):.0f} | {statistics.mean(ts):.0f} | {p99:.0f} |"


print("| call | n | median µs | mean µs | p99 µs |")
print("|---|---|---|---|---|")
for name in calls:
    print(row(name))
g, c = statistics.median(times["get_port"]), statistics.median(times["cli get"])
a, ca = statistics.median(times["allocate"]), statistics.median(times["cli allocate"])
print(f"\nget: MCP {g:.0f} µs = {g / c:.3f}x the CLI process ({c:.0f} µs); "
      f"allocate: MCP {a:.0f} µs = {a / ca:.3f}x ({ca:.0f} µs)")
