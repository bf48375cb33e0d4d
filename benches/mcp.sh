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
export HOME="$work/home" XDG_STATE_HOME="$work/state" GIT_CONFIG_GLOBAL="$work/gitconfig" GIT_CONFIG_SYSTEM=/dev/null
mkdir -p "$HOME"
git config --global user.name bench
git config --global user.email bench@example.com
git init -q -b main "$work/app"
git -C "$work/app" commit -q --allow-empty -m init
"$BIN" -h >/dev/null
(cd "$work/app" && "$BIN" allocate --no-render >/dev/null)
python3 benches/mcp.py "$BIN" "$work/app" "$ROUNDS"
