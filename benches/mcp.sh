#!/usr/bin/env bash
# MCP tools/call (get_port, allocate) against the CLI doing the same, in paired rounds:
#   bash benches/mcp.sh            (ROUNDS=<n>, default 200)
# Needs python3 only (the requests are written by hand on the server's pipes).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-200}
cargo build --release --locked -q
BIN="$PWD/target/release/git-worktree-ports"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
. benches/hermetic.sh
hermetic "$work"
"$BIN" -h >/dev/null
(cd "$work/app" && "$BIN" allocate --no-render >/dev/null)
python3 benches/mcp.py "$BIN" "$work/app" "$ROUNDS"
