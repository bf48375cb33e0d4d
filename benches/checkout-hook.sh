#!/usr/bin/env bash
# What the post-checkout hook costs an ordinary checkout: `git switch` between two branches in
# two identical repositories, one with the hook installed. Target: within noise (< 2 ms).
#
#   bash benches/checkout-hook.sh        (installs hyperfine from Debian's packages if missing)
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v hyperfine >/dev/null; then
	echo "installing hyperfine (Debian package)..." >&2
	if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq hyperfine >/dev/null
	else sudo apt-get update -qq && sudo apt-get install -y -qq hyperfine >/dev/null; fi
fi
cargo build --release --locked -q
export PATH="$PWD/target/release:$PATH"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export HOME="$work/home" GIT_CONFIG_GLOBAL="$work/gitconfig" GIT_CONFIG_SYSTEM=/dev/null
mkdir -p "$HOME"
git config --global user.name bench
git config --global user.email bench@example.com
git config --global init.defaultBranch main

make_repo() {
	git init -q "$1"
	for i in $(seq 1 50); do echo "$i" >"$1/file$i.txt"; done
	git -C "$1" add -A && git -C "$1" commit -q -m one
	git -C "$1" switch -q -c two
	for i in $(seq 1 50); do echo "two $i" >"$1/file$i.txt"; done
	git -C "$1" commit -q -am two
	git -C "$1" switch -q main
}
make_repo "$work/plain"
make_repo "$work/hooked"
(cd "$work/hooked" && git worktree-ports hooks install >/dev/null)

git --version
hyperfine -N --warmup 20 --runs "${RUNS:-300}" \
	--prepare "git -C $work/plain switch -q main" -n "git switch, no hook" "git -C $work/plain switch -q two" \
	--prepare "git -C $work/hooked switch -q main" -n "git switch, hook installed" "git -C $work/hooked switch -q two"
