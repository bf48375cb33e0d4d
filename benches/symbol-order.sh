#!/usr/bin/env bash
# Regenerate benches/symbol-order.txt: the release binary's functions that the everyday
# commands run, in the order the linker should lay them out (build.rs passes the file to the
# linker as `--symbol-ordering-file` when the linker takes it: rust-lld, rustc's default on
# x86_64 Linux, does; GNU ld does not, and then nothing changes).
#
# Why: a start pays for every page of code it maps, and the code a `get` or an allocation
# runs was spread over the whole 7.5 MB of text. When the binary's pages were read from disk
# (after a reboot, or as the linker wrote them) the page cache holds them mostly as single
# pages, each mapped on its own: laid out together, `get web` measured 0.17 ms faster there
# (BENCHMARKS.md, "Fifteenth session").
#
# How: each command below runs once under valgrind's callgrind (installed from Debian's
# packages when missing) in a throwaway repository with its own HOME, XDG dirs and git config;
# the functions it ran that the binary defines are listed, the first command's first, so the
# commands that run most (get, allocate, the hook) get the densest code. Symbol names are
# mangled with a hash of the crate's build (rustc version, dependency versions, features), not
# of its code: the file stays valid across most edits, and names that no longer exist are
# ignored (--no-warn-symbol-ordering). Rerun after a rustc or dependency upgrade:
#   bash benches/symbol-order.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

. benches/debian.sh
if ! command -v valgrind >/dev/null || ! command -v nm >/dev/null; then
	debian_install "valgrind and nm" valgrind binutils
fi
cargo build --release --locked -q
BIN="$root/target/release/git-worktree-ports"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export HOME="$work/home" XDG_STATE_HOME="$work/state" XDG_CONFIG_HOME="$work/config" \
	XDG_DATA_HOME="$work/data" XDG_CACHE_HOME="$work/cache" XDG_RUNTIME_DIR="$work/run" \
	GIT_CONFIG_GLOBAL="$work/gitconfig" GIT_CONFIG_SYSTEM=/dev/null LC_ALL=C NO_COLOR=1
mkdir -p "$HOME" "$XDG_RUNTIME_DIR"
git config --global user.name order
git config --global user.email order@example.com
git config --global init.defaultBranch main
export PATH="$root/target/release:$PATH"

repo="$work/repo"
git init -q "$repo"
mkdir -p "$repo/.worktree-ports"
printf '[services.web]\nrange = [62000, 62199]\n[services.api]\nrange = [62200, 62399]\n[services.db]\nrange = [62400, 62599]\n[services.test]\nrange = [62600, 62799]\n[services.debug]\nrange = [62800, 62999]\n' >"$repo/.worktree-ports/config.toml"
echo one >"$repo/file.txt"
git -C "$repo" add -A && git -C "$repo" commit -q -m one
cd "$repo"
"$BIN" allocate >/dev/null

n=0
profile() { # a command's arguments; runs in the current directory
	n=$((n + 1))
	valgrind --tool=callgrind --demangle=no --callgrind-out-file="$work/cg.$(printf %02d $n)" \
		"$BIN" "$@" >/dev/null 2>&1 || true
}
# Most frequent first.
profile get web
profile allocate
"$BIN" release >/dev/null
profile allocate --no-render
profile --version
profile env
git worktree add -q --detach "$work/wt" # no hook installed: the hook command is run below
(cd "$work/wt" && profile hook post-checkout 0000000000000000000000000000000000000000 "$(git rev-parse HEAD)" 1)
"$BIN" release >/dev/null
profile allocate
profile render
profile add -q --detach "$work/added"
profile list
profile status
profile release -w "$work/added"
profile exec -- true

nm "$BIN" | awk '$2 ~ /^[tTwW]$/ { print $3 }' | sort -u >"$work/defined"
for f in "$work"/cg.*; do
	grep -oP '^c?fn=\(\d+\) \K.*' "$f" | sort -u >"$f.fns" || true
done
# The first command's functions first, then what each later command adds.
: >"$work/order"
for f in "$work"/cg.*.fns; do
	comm -12 "$f" "$work/defined" | grep -vxFf "$work/order" >>"$work/order" || true
done
# One mangled name a line, nothing else: the linker reads every line as a name.
cp "$work/order" "$root/benches/symbol-order.txt"
echo "benches/symbol-order.txt: $(wc -l <"$work/order") functions of $(wc -l <"$work/defined")" >&2
