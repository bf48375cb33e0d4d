#!/usr/bin/env bash
# Whole-process benchmarks, side by side, with hyperfine (installed from Debian's packages if
# missing). One command from a fresh clone:   bash benches/cli.sh
#
# Prints, for the release build (copied and read back from disk, as a user's installed copy
# runs; see `installed` below):
#   - git worktree add alone vs git worktree-ports add (fresh paths each run), and both against
#     the floor of a durable add (benches/floor_save.c as a git plugin)
#   - the read path: get, and allocate when already allocated
#   - a fresh allocation of 5 services (fsyncs included); through git, against `git true` and
#     the floor of a durable registry rewrite through git
#   - git switch with and without the post-checkout hook
#   - allocate with a 10,000-worktree registry (records as the first versions wrote them, as
#     this one writes them in one file, and apart as it keeps them from 2,000 worktrees on),
#     and its peak memory (GNU time)
#   - status of one worktree (5 services, its server listening) among 500 other processes,
#     and list with its LIVE column against list --no-probe, with 10,000 worktrees
# RUNS=<n> sets the runs per command (default 100). ONLY="machine big" runs only those groups
# (add many read fresh floor machine checkout big status list start; vs-* come with BASELINE).
# BASELINE=<path to another git-worktree-ports binary> adds paired rounds of that build against
# this one for the everyday rows (get, idempotent allocate, fresh allocate, 10,000 worktrees)
# and its peak memory: how a change is shown to cost nothing, on a disk whose speed drifts.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-100}

. benches/debian.sh
need() { command -v "$1" >/dev/null || [ -x "$1" ]; }
if ! need hyperfine || ! need /usr/bin/time; then
	debian_install "hyperfine and GNU time" hyperfine time
fi
cargo build --release --locked -q
root="$PWD"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# What a user runs: the binary `cargo install` copied, as read back from disk (after a
# reboot, or once the page cache let it go): copied, evicted, then run once. How its pages
# came into the page cache changes every start by up to 0.2 ms (BENCHMARKS.md, "Fifteenth
# session"; the `start` group measures the states side by side): the linker's own file is the
# slowest, a copy just made the fastest, and this the state a user's copy spends most of its
# life in. The baseline build is measured the same way.
installed() { # source, destination
	cp "$1" "$2"
	python3 -c 'import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY); os.fsync(fd); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)' "$2"
	"$2" --version >/dev/null
}
LINKED="$root/target/release/git-worktree-ports"
mkdir -p "$work/installed"
installed "$LINKED" "$work/installed/git-worktree-ports"
BIN="$work/installed/git-worktree-ports"
export PATH="$work/installed:$PATH"
if [ -n "${BASELINE:-}" ]; then
	installed "$(realpath "$BASELINE")" "$work/baseline"
	B="$work/baseline"
fi

export HOME="$work/home" GIT_CONFIG_GLOBAL="$work/gitconfig" GIT_CONFIG_SYSTEM=/dev/null
mkdir -p "$HOME"
git config --global user.name bench
git config --global user.email bench@example.com
git config --global init.defaultBranch main
git config --global advice.detachedHead false
results="$work/results"
mkdir -p "$results"

# A repository with 50 files on two branches, ports in a high private range.
make_repo() {
	git init -q "$1"
	mkdir -p "$1/.worktree-ports"
	printf '[services.web]\nrange = [62000, 62199]\n[services.api]\nrange = [62200, 62399]\n[services.db]\nrange = [62400, 62599]\n[services.test]\nrange = [62600, 62799]\n[services.debug]\nrange = [62800, 62999]\n' >"$1/.worktree-ports/config.toml"
	for i in $(seq 1 50); do echo "$i" >"$1/file$i.txt"; done
	git -C "$1" add -A && git -C "$1" commit -q -m one
	git -C "$1" switch -q -c two
	for i in $(seq 1 50); do echo "two $i" >"$1/file$i.txt"; done
	git -C "$1" commit -q -am two
	git -C "$1" switch -q main
}

# A difference between two commands, robust to a disk whose speed drifts (as on shared VMs):
# ROUNDS short rounds, the order flipped every round, and the median of the per-round
# differences. hyperfine alone runs all of A before all of B, so drift lands on one side.
paired() { # name, name-a, prepare-a, command-a, name-b, prepare-b, command-b
	local name=$1 na=$2 pa=$3 ca=$4 nb=$5 pb=$6 cb=$7 r
	for r in $(seq 1 "${ROUNDS:-6}"); do
		if [ $((r % 2)) = 1 ]; then
			hyperfine -N --style none --warmup 3 --runs "$((RUNS / 4 + 5))" --export-json "$results/$name.$r.json" \
				--prepare "$pa" -n "$na" "$ca" --prepare "$pb" -n "$nb" "$cb" >/dev/null
		else
			hyperfine -N --style none --warmup 3 --runs "$((RUNS / 4 + 5))" --export-json "$results/$name.$r.json" \
				--prepare "$pb" -n "$nb" "$cb" --prepare "$pa" -n "$na" "$ca" >/dev/null
		fi
	done
	echo; echo "== $name: $na vs $nb, ${ROUNDS:-6} alternating rounds"
}

# Three commands the same way, the order rotated every round: a command, its floor and ours,
# so that both ratios come from the same rounds.
paired3() { # name, then name, prepare, command three times
	local name=$1 r; shift
	local -a c=("$@") order
	for r in $(seq 1 "${ROUNDS:-6}"); do
		case $((r % 3)) in 1) order=(0 1 2) ;; 2) order=(1 2 0) ;; 0) order=(2 0 1) ;; esac
		local -a args=()
		local i
		for i in "${order[@]}"; do
			args+=(--prepare "${c[$((i * 3 + 1))]}" -n "${c[$((i * 3))]}" "${c[$((i * 3 + 2))]}")
		done
		hyperfine -N --style none --warmup 3 --runs "$((RUNS / 4 + 5))" --export-json "$results/$name.$r.json" "${args[@]}" >/dev/null
	done
	echo; echo "== $name: ${c[0]}, ${c[3]}, ${c[6]}, ${ROUNDS:-6} rotating rounds"
}

# Whether the group is asked for (ONLY unset: every group).
want() { [ -z "${ONLY:-}" ] || [[ " $ONLY " == *" $1 "* ]]; }

bench() { # name, then hyperfine arguments
	local name=$1; shift
	echo; echo "== $name"
	hyperfine -N --style basic --warmup 5 --runs "$RUNS" --export-json "$results/$name.json" "$@"
}

repo="$work/repo"
make_repo "$repo"
cd "$repo"
"$BIN" allocate >/dev/null

# The floor of any git plugin: git's dispatch of an external no-op (`git true` runs a
# git-true that is /bin/true), timed in alternation with what a user types. And the floor of
# a durable one: benches/floor_save.c as `git floor-save` (compiled with cc when there is one).
mkdir -p "$work/bin" && ln -sf "$(type -P true)" "$work/bin/git-true"
if command -v cc >/dev/null; then
	cc -O2 -o "$work/bin/git-floor-save" "$root/benches/floor_save.c"
fi
export PATH="$work/bin:$PATH"

# Each run removes the worktree the previous one made (-N runs prepares without a shell, so
# there is one to remove from the start). The floor of `add`: `git floor-save` running `git
# worktree add`, then fsyncing a token and rewriting the registry as a save must.
if want add; then
git -C "$repo" worktree add -q --detach "$work/plain"
git -C "$repo" worktree-ports add -q --detach "$work/ours" >/dev/null
paired add \
	"git worktree add" "git -C $repo worktree remove --force $work/plain" "git -C $repo worktree add -q --detach $work/plain" \
	"git worktree-ports add" "git -C $repo worktree-ports remove --force $work/ours" "git -C $repo worktree-ports add -q --detach $work/ours"
if [ -x "$work/bin/git-floor-save" ]; then
	git -C "$repo" floor-save "$repo/.git/worktree-registry" "$work/floor"
	paired3 add-floor \
		"git worktree add" "git -C $repo worktree remove --force $work/plain" "git -C $repo worktree add -q --detach $work/plain" \
		"floor: git floor-save (git worktree add, a token, the registry)" "git -C $repo worktree remove --force $work/floor" "git -C $repo floor-save $repo/.git/worktree-registry $work/floor" \
		"git worktree-ports add" "git -C $repo worktree-ports remove --force $work/ours" "git -C $repo worktree-ports add -q --detach $work/ours"
else
	echo "skipped: the add-floor pair (no C compiler: cc)" >&2
fi
fi

# 200 linked worktrees (an agent's repository): `add` against plain git there, and the
# commands that read git's worktree list.
if want many; then
	many="$work/many"
	make_repo "$many"
	for i in $(seq 1 200); do git -C "$many" worktree add -q --detach "$work/many-wt/w$i"; done
	(cd "$many" && "$BIN" allocate >/dev/null)
	git -C "$many" worktree add -q --detach "$work/many-plain"
	git -C "$many" worktree-ports add -q --detach "$work/many-ours" >/dev/null
	paired many-add \
		"git worktree add, 200 worktrees" "git -C $many worktree remove --force $work/many-plain" "git -C $many worktree add -q --detach $work/many-plain" \
		"git worktree-ports add, 200 worktrees" "git -C $many worktree-ports remove --force $work/many-ours" "git -C $many worktree-ports add -q --detach $work/many-ours"
	bench many-read \
		-n "list --no-probe, 200 worktrees" "env -C $many $BIN list --no-probe" \
		-n "status, 200 worktrees" "env -C $many $BIN status"
	if [ -n "${BASELINE:-}" ]; then
		paired vs-many "baseline: list --no-probe, 200 worktrees" "true" "env -C $many $B list --no-probe" \
			"this build: list --no-probe, 200 worktrees" "true" "env -C $many $BIN list --no-probe"
	fi
fi

# How the binary's pages came into the page cache changes every start (Linux): written by a
# copy (as `cargo install` leaves it) they are large folios, mapped many pages at a time; as
# the linker wrote them (through a mapping), or read back from disk after a reboot, largely
# single pages. The same build in the three states, rotated (every other row runs the third).
# And how much of benches/symbol-order.txt (build.rs's code layout) this build still has: a
# stale list (after a rustc or dependency upgrade) says so.
if want start; then
	if command -v nm >/dev/null; then
		listed=$(wc -l <"$root/benches/symbol-order.txt")
		present=$(nm "$LINKED" | awk '$2 ~ /^[tTwW]$/ { print $3 }' | sort -u | comm -12 - <(sort -u "$root/benches/symbol-order.txt") | wc -l)
		echo "code layout: $present of the $listed functions of benches/symbol-order.txt are in this build" \
			"(rerun bash benches/symbol-order.sh if far fewer)" >&2
	fi
	cp "$LINKED" "$work/copied"
	paired3 start \
		"get web, the binary as the linker wrote it" "true" "$LINKED get web" \
		"get web, the same just copied (as cargo install leaves it)" "true" "$work/copied get web" \
		"get web, the copy read back from disk (as after a reboot; every other row)" "true" "$BIN get web"
fi

want read && bench read \
	-n "get web" "$BIN get web" \
	-n "allocate (already allocated)" "$BIN allocate" \
	-n "git worktree-ports get web (through git)" "git worktree-ports get web"

want fresh && bench fresh \
	--prepare "$BIN release" -n "allocate 5 services (fresh, fsync)" "$BIN allocate --no-render"

if want floor; then
	paired floor-get "git true" "true" "git true" "git worktree-ports get web" "true" "git worktree-ports get web"
	paired floor-fresh "git true" "true" "git true" \
		"git worktree-ports allocate --no-render (fresh)" "$BIN release" "git worktree-ports allocate --no-render"
	# The floor of a durable allocation through git: a plugin in C that only rewrites the same
	# ports.json as a save must (benches/floor_save.c), against our fresh allocation.
	if [ -x "$work/bin/git-floor-save" ]; then
		paired3 floor-save "git true" "true" "git true" \
			"floor: git floor-save (the registry rewritten durably)" "true" "git floor-save $repo/.git/worktree-registry" \
			"git worktree-ports allocate --no-render (fresh)" "$BIN release" "git worktree-ports allocate --no-render"
	else
		echo "skipped: the floor-save pair (no C compiler: cc)" >&2
	fi
fi

# Machine-wide: a fresh allocation with other repositories listed in the machine index, against
# one with no other repository, side by side: 100 repositories of 10 worktrees x 5 services
# each, and one neighbour of 10,000 worktrees (registries and index as the tool writes them,
# identities included). And the size of an index of 1,000 repositories.
if want machine; then
others="$work/others"
python3 - "$work" "$others" "$results/index-size" <<'PY'
import json, os, sys
work, others, size_out = sys.argv[1:4]
svcs = ["web", "api", "db", "test", "debug"]
def write(common, reg):
    d = os.path.join(common, "worktree-registry")
    os.makedirs(d, exist_ok=True)
    text = json.dumps(reg, separators=(",", ":"), sort_keys=True) + "\n"
    for name in ("ports.json", "ports.json.bak"):
        open(os.path.join(d, name), "w").write(text)
def index(state, repos):
    os.makedirs(state, exist_ok=True)
    open(os.path.join(state, "index.json"), "w").write(json.dumps({"version": 1, "repositories": repos}, separators=(",", ":")) + "\n")
repos = {}
for r in range(100):
    common = os.path.join(others, f"r{r:03}", ".git")
    reg = {"version": 1, "port_ranges": {}, "allocated_ports": {}, "worktrees": {}, "history": [], "repository_id": f"id-r{r:03}"}
    for w in range(10):
        k = "main" if w == 0 else f"wt{w}"
        reg["allocated_ports"][k] = {s: 20000 + r * 50 + w * 5 + i for i, s in enumerate(svcs)}
        reg["worktrees"][k] = {"path": os.path.join(others, f"r{r:03}", k), "branch": k, "allocated_at": "2026-12-01T00:00:00Z"}
    write(common, reg)
    repos[os.path.realpath(common)] = {"name": f"r{r:03}", "added_at": "2026-12-01T00:00:00Z", "id": f"id-r{r:03}"}
index(os.path.join(work, "state-full"), repos)
common = os.path.join(others, "neighbour", ".git")
reg = {"version": 1, "port_ranges": {s: [1100 + i * 12000, 1100 + i * 12000 + 11999] for i, s in enumerate(svcs)},
       "allocated_ports": {}, "worktrees": {}, "repository_id": "id-neighbour"}
for n in range(10000):
    k = f"worktree-{n:05}"
    reg["allocated_ports"][k] = {s: 1100 + i * 12000 + n for i, s in enumerate(svcs)}
    reg["worktrees"][k] = {"path": f"/home/dev/src/neighbour/.worktrees/{k}", "branch": f"feature/{k}", "allocated_at": "2026-11-23T08:00:00Z"}
# History is in history.jsonl beside it (appended, never read by an allocation): none here.
reg["history"] = []
write(common, reg)
index(os.path.join(work, "state-neighbour"), {os.path.realpath(common): {"name": "neighbour", "added_at": "2026-12-01T00:00:00Z", "id": "id-neighbour"}})
big = {f"/home/dev/src/project-{r:04}/.git": {"name": f"project-{r:04}", "added_at": "2026-12-01T00:00:00Z"} for r in range(1000)}
open(size_out, "w").write(str(len(json.dumps({"version": 1, "repositories": big}, separators=(",", ":"))) + 1))  # as the tool writes it
PY
mkdir -p "$work/state-empty"
E="env GIT_WORKTREE_PORTS_STATE_DIR=$work/state-empty"
F="env GIT_WORKTREE_PORTS_STATE_DIR=$work/state-full"
N="env GIT_WORKTREE_PORTS_STATE_DIR=$work/state-neighbour"
paired machine \
	"allocate 5 services (fresh), no other repository" "$E $BIN release" "$E $BIN allocate --no-render" \
	"allocate 5 services (fresh), 100 repositories listed" "$F $BIN release" "$F $BIN allocate --no-render"
paired neighbour \
	"allocate 5 services (fresh), no other repository" "$E $BIN release" "$E $BIN allocate --no-render" \
	"allocate 5 services (fresh), a 10,000-worktree neighbour" "$N $BIN release" "$N $BIN allocate --no-render"
fi

# One fresh repository (the one above has been through hundreds of adds), the same for every
# variant: two repositories made alike still differed by up to 5 ms per switch here (racy
# index entries, directory layout), more than what is measured. Each prepare step puts the
# variant's hook in place (or none), then switches back.
if want checkout; then
co="$work/checkout"
make_repo "$co"
(cd "$co" && "$BIN" hooks install >/dev/null)
cp "$co/.git/hooks/post-checkout" "$work/our-hook"
printf '#!/bin/sh\nexit 0\n' >"$work/exit0-hook"
chmod +x "$work/exit0-hook"
for v in none our exit0; do
	{
		echo '#!/bin/sh'
		if [ "$v" = none ]; then echo "rm -f '$co/.git/hooks/post-checkout'"; else echo "cp '$work/$v-hook' '$co/.git/hooks/post-checkout'"; fi
		echo "exec git -C '$co' switch -q main"
	} >"$work/prep-$v"
	chmod +x "$work/prep-$v"
done
paired checkout \
	"git switch, no hook" "$work/prep-none" "git -C $co switch -q two" \
	"git switch, hook installed" "$work/prep-our" "git -C $co switch -q two"
# What any post-checkout hook costs (git starts a shell): a hook that is only `exit 0`.
paired emptyhook \
	"git switch, exit-0 hook" "$work/prep-exit0" "git -C $co switch -q two" \
	"git switch, our hook" "$work/prep-our" "git -C $co switch -q two"
fi

# 10,000 worktrees x 5 services in the registry; allocate a new one (main) each run. `big`'s
# records are as the first versions wrote them (path, branch, time: 2.3 MB), `bigcur`'s as
# this one writes them (also an identity, a compose name, a slot and a hostname: 3.5 MB),
# both in ports.json as versions before 2 kept them: each run is then the first save of this
# version, which moves the records into their own file (registry/apart.rs). `bigapart` is the
# state that save leaves, and every later one: the records apart, one line appended.
make_big() { # repository, "old" | "current" | "apart" (current records, in their own file)
make_repo "$1"
printf '[services.web]\nrange = [1100, 13099]\n[services.api]\nrange = [13100, 25099]\n[services.db]\nrange = [25100, 37099]\n[services.test]\nrange = [37100, 49099]\n[services.debug]\nrange = [49100, 61099]\n' >"$1/.worktree-ports/config.toml"
python3 - "$1/.git/worktree-registry" "$2" <<'PY'
import json, os, sys
d = sys.argv[1]; os.makedirs(d, exist_ok=True)
current = sys.argv[2] in ("current", "apart")
svcs = ["web", "api", "db", "test", "debug"]
# Services in the order a save writes them (sorted), as in every file the tool saved: the
# state each run starts from (see below).
order = sorted(enumerate(svcs), key=lambda e: e[1])
reg = {"version": 1, "port_ranges": {s: [1100 + i * 12000, 1100 + i * 12000 + 11999] for i, s in order},
       "allocated_ports": {}, "worktrees": {}, "history": []}
for n in range(10000):
    k = f"worktree-{n:05}"
    reg["allocated_ports"][k] = {s: 1100 + i * 12000 + n for i, s in order}
    reg["worktrees"][k] = {"path": f"/home/dev/src/project/.worktrees/{k}", "branch": f"feature/{k}", "allocated_at": "2026-11-23T08:00:00Z"}
    if current:
        reg["worktrees"][k].update({"id": f"{0x18ee048f1906af68 + n * 7919:x}-{6194 + n}",
            "compose_project_name": f"project-{k}", "slot": n + 1, "hostname": f"{k}.project.localhost"})
# History is in history.jsonl beside it (appended, never read): what this version writes.
reg["history"] = []
# As the tool writes it: compact, its keys in the order of the tool's model.
reg = {k: reg[k] for k in ("version", "port_ranges", "allocated_ports", "worktrees", "history")}
if sys.argv[2] == "apart":
    # Version 2 (registry/apart.rs): the records one a line in records-1.jsonl, sorted, as a
    # save that writes them whole leaves them; ports.json names the file and its length.
    records = reg.pop("worktrees")
    lines = "".join(json.dumps({k: records[k]}, separators=(",", ":")) + "\n" for k in sorted(records))
    for name in ("records10k.jsonl", "records-1.jsonl"):
        open(os.path.join(d, name), "w").write(lines)
    reg = {"version": 2, "port_ranges": reg["port_ranges"], "allocated_ports": reg["allocated_ports"],
           "records": {"generation": 1, "bytes": len(lines.encode())}, "history": []}
text = json.dumps(reg, separators=(",", ":")) + "\n"
for name in ("ports10k.json", "ports.json", "ports.json.bak"):
    open(os.path.join(d, name), "w").write(text)
print(f"10,000-worktree registry ({sys.argv[2]} records): {len(text):,} bytes", file=sys.stderr)
PY
}
big="$work/big"
make_big "$big" old
reg="$big/.git/worktree-registry"
# Each run starts from the state a save leaves: ports.json and its backup alike. Restoring
# only ports.json would make every run also rewrite the lagging backup, which no real run does.
# `sync` lets the 4.8 MB the restore just wrote reach the disk first, as the previous save's
# had long before a real allocation; the second row measures without it, the worst case of an
# allocation that queues behind megabytes of someone else's writes.
restore="$work/restore-big"
printf '#!/bin/sh\ncp %s/ports10k.json %s/ports.json && cp %s/ports10k.json %s/ports.json.bak\n' "$reg" "$reg" "$reg" "$reg" >"$restore"
printf '#!/bin/sh\n%s && sync\n' "$restore" >"$restore.sync"
chmod +x "$restore" "$restore.sync"
cd "$big"
# `get` of one worktree among 10,000 against `get` in the small repository, in alternating
# rounds: both started by `env -C` (the same extra exec for both), so the difference is what
# the 10,000 worktrees cost; the ratio is that over the `read` group's `get web`.
want big && paired bigget \
	"get web, small repository" "true" "env -C $repo $BIN get web" \
	"get web -w worktree-04242, 10,000 worktrees" "true" "env -C $big $BIN get web -w worktree-04242"
# A fresh allocation among 10,000 worktrees against one in the small repository, in
# alternating rounds (both from a synced disk, both started by `env -C`): the issue's ratio.
# And against the floor of any save that rewrites the whole file: benches/floor_save.c reads
# ports.json and writes it back as a save does (temp file, its backup's copy written while it
# syncs, rename, directory fsync, the backup exchanged into place), with no parsing at all. Compiled with cc; without one the pair is skipped, saying so.
printf '#!/bin/sh\ncd %s && %s release >/dev/null && sync\n' "$repo" "$BIN" >"$work/release-small.sync"
chmod +x "$work/release-small.sync"
want big && paired bigfresh \
	"allocate (fresh), small repository" "$work/release-small.sync" "env -C $repo $BIN allocate --no-render" \
	"allocate (fresh), 10,000 worktrees" "$restore.sync" "env -C $big $BIN allocate --no-render"
if want big && command -v cc >/dev/null; then
	cc -O2 -o "$work/floor_save" "$root/benches/floor_save.c"
	paired floorsave \
		"floor: rewrite the 10,000-worktree ports.json (no parsing)" "$restore.sync" "$work/floor_save $reg" \
		"allocate (fresh), 10,000 worktrees" "$restore.sync" "$BIN allocate --no-render"
elif want big; then
	echo "skipped: the floorsave pair (no C compiler: cc)" >&2
fi
# The same with the records as this version writes them (the file 1.5x larger), on a machine
# of its own (its own state dir): the machine has ports for one repository of 10,000 worktrees
# of five services, not two.
if want big; then
	bigcur="$work/bigcur"
	make_big "$bigcur" current
	regcur="$bigcur/.git/worktree-registry"
	printf '#!/bin/sh\ncp %s/ports10k.json %s/ports.json && cp %s/ports10k.json %s/ports.json.bak && sync\n' "$regcur" "$regcur" "$regcur" "$regcur" >"$work/restore-bigcur.sync"
	chmod +x "$work/restore-bigcur.sync"
	# The small repository on the same machine as the large one, as in `bigfresh`: on the
	# main one, its index lists `big`, whose file the rows above restored behind the tool's
	# back, so every allocation there read those 10,000 worktrees again (a stamp that no longer
	# matches is never trusted): 8-9 ms instead of 3 in session 18's first run.
	paired bigcurfresh \
		"allocate (fresh), small repository" "$work/release-small.sync" "env -C $repo XDG_STATE_HOME=$work/state-bigcur $BIN allocate --no-render" \
		"allocate (fresh), 10,000 worktrees, current records" "$work/restore-bigcur.sync" "env -C $bigcur XDG_STATE_HOME=$work/state-bigcur $BIN allocate --no-render"
	[ -x "$work/floor_save" ] && paired floorsavecur \
		"floor: rewrite the current-records ports.json (no parsing)" "$work/restore-bigcur.sync" "$work/floor_save $regcur" \
		"allocate (fresh), 10,000 worktrees, current records" "$work/restore-bigcur.sync" "env -C $bigcur XDG_STATE_HOME=$work/state-bigcur $BIN allocate --no-render"
	# And as this version keeps a registry of 2,000 worktrees or more: its records in their
	# own file (registry/apart.rs), a fresh allocation appending one line to it. On a machine
	# of its own too. Its floor: floor_save rewriting what is still rewritten (ports.json).
	bigap="$work/bigapart"
	make_big "$bigap" apart
	regap="$bigap/.git/worktree-registry"
	printf '#!/bin/sh\ncp %s/ports10k.json %s/ports.json && cp %s/ports10k.json %s/ports.json.bak && cp %s/records10k.jsonl %s/records-1.jsonl && sync\n' "$regap" "$regap" "$regap" "$regap" "$regap" "$regap" >"$work/restore-bigapart.sync"
	chmod +x "$work/restore-bigapart.sync"
	paired bigapartfresh \
		"allocate (fresh), small repository" "$work/release-small.sync" "env -C $repo XDG_STATE_HOME=$work/state-bigapart $BIN allocate --no-render" \
		"allocate (fresh), 10,000 worktrees, records apart" "$work/restore-bigapart.sync" "env -C $bigap XDG_STATE_HOME=$work/state-bigapart $BIN allocate --no-render"
	[ -x "$work/floor_save" ] && paired floorsaveapart \
		"floor: rewrite the records-apart ports.json (no parsing)" "$work/restore-bigapart.sync" "$work/floor_save $regap" \
		"allocate (fresh), 10,000 worktrees, records apart" "$work/restore-bigapart.sync" "env -C $bigap XDG_STATE_HOME=$work/state-bigapart $BIN allocate --no-render"
fi
want big && bench big \
	--prepare "$restore.sync" -n "allocate, 10,000 worktrees (fresh)" "$BIN allocate --no-render" \
	--prepare "$restore" -n "allocate, 10,000 worktrees (fresh, disk busy with 4.8 MB of unsynced writes)" "$BIN allocate --no-render" \
	--prepare true -n "get web, 10,000 worktrees" "$BIN get web -w worktree-04242"
# status: the process scan with 500 other processes on the machine, a server of the worktree
# listening on one of its ports (so the scan runs). list: its LIVE column (one read of the
# socket tables for 50,000 ports) against --no-probe.
if want status; then
cd "$repo"
web=$("$BIN" get web)
python3 -c 'import socket,sys,time; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(); time.sleep(3600)' "$web" &
server=$!
sleepers=()
for _ in $(seq 1 500); do sleep 3600 & sleepers+=($!); done
echo "processes on the machine: $(ls /proc | grep -c '^[0-9]')" >&2
bench status \
	-n "status (5 services, 500 more processes, a server listening)" "$BIN status" \
	-n "status --json (the same)" "$BIN status --json"
kill "$server" "${sleepers[@]}" 2>/dev/null || true
wait 2>/dev/null || true
fi
cd "$big"
"$restore"
want list && paired list \
	"list --no-probe, 10,000 worktrees" "true" "$BIN list --no-probe" \
	"list (LIVE for 50,000 ports), 10,000 worktrees" "true" "$BIN list"
"$restore"
peak() { /usr/bin/time -v "$1" allocate --no-render 2>&1 >/dev/null | awk -F': ' '/Maximum resident set size/ {print $2}'; }
peak=$(peak "$BIN")
base_peak=0
if [ -n "${BASELINE:-}" ]; then
	paired vs-big \
		"baseline: allocate, 10,000 worktrees (fresh)" "$restore.sync" "$B allocate --no-render" \
		"this build: allocate, 10,000 worktrees (fresh)" "$restore.sync" "$BIN allocate --no-render"
	paired vs-bigget \
		"baseline: get web, 10,000 worktrees" "true" "$B get web -w worktree-04242" \
		"this build: get web, 10,000 worktrees" "true" "$BIN get web -w worktree-04242"
	"$restore"
	base_peak=$(peak "$B")
	cd "$repo"
	paired vs-get "baseline: get web" "true" "$B get web" "this build: get web" "true" "$BIN get web"
	paired vs-allocate "baseline: allocate (already allocated)" "true" "$B allocate" \
		"this build: allocate (already allocated)" "true" "$BIN allocate"
	paired vs-fresh "baseline: allocate 5 services (fresh)" "$B release" "$B allocate --no-render" \
		"this build: allocate 5 services (fresh)" "$BIN release" "$BIN allocate --no-render"
fi

echo
echo "== summary (median, ms)"
python3 - "$results" "$peak" "$base_peak" <<'PY'
import json, os, sys
res, peak, base_peak = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
import glob, statistics
rows = []
def paired(group):
    rounds = [json.load(open(f))["results"] for f in sorted(glob.glob(os.path.join(res, group + ".*.json")))]
    names = [r["command"] for r in rounds[0]]  # round 1 runs A, then B
    med = {n: [next(r["median"] for r in rr if r["command"] == n) * 1000 for rr in rounds] for n in names}
    a, b = names
    for n in (a, b):
        rows.append((n, statistics.median(med[n]), statistics.pstdev(med[n])))
    diffs = [y - x for x, y in zip(med[a], med[b])]
    rows.append((f"  difference: {b} - {a}", statistics.median(diffs), statistics.pstdev(diffs)))
def paired3(group):
    rounds = [json.load(open(f))["results"] for f in sorted(glob.glob(os.path.join(res, group + ".*.json")))]
    names = [r["command"] for r in rounds[0]]  # round 1 runs them in the order given
    med = {n: [next(r["median"] for r in rr if r["command"] == n) * 1000 for rr in rounds] for n in names}
    for n in names:
        rows.append((n, statistics.median(med[n]), statistics.pstdev(med[n])))
    for n in names[1:]:
        ratios = [y / x for x, y in zip(med[names[0]], med[n])]
        rows.append((f"  ratio: {n} / {names[0]} (x)", statistics.median(ratios), statistics.pstdev(ratios)))
vs = ["vs-get", "vs-allocate", "vs-fresh", "vs-big", "vs-bigget", "vs-many"] if base_peak else []
for group in ["start", "add", "add-floor", "many-add", "many-read", "read", "fresh", "floor-get", "floor-fresh", "floor-save", "machine", "neighbour", "checkout", "emptyhook", "bigget", "bigfresh", "floorsave", "bigcurfresh", "floorsavecur", "bigapartfresh", "floorsaveapart", "big", "status", "list"] + vs:
    if not glob.glob(os.path.join(res, group + "*.json")):
        continue  # not asked for (ONLY)
    if group in ["add-floor", "floor-save", "start"]:
        paired3(group)
        continue
    if group in ["add", "many-add", "floor-get", "floor-fresh", "machine", "neighbour", "checkout", "emptyhook", "bigget", "bigfresh", "floorsave", "bigcurfresh", "floorsavecur", "bigapartfresh", "floorsaveapart", "list"] + vs:
        paired(group)
        continue
    for r in json.load(open(os.path.join(res, group + ".json")))["results"]:
        rows.append((r["command"], r["median"] * 1000, r["stddev"] * 1000 if r["stddev"] else 0.0))
w = max(len(n) for n, _, _ in rows)
print(f"| {'command'.ljust(w)} | median ms | stddev ms |")  # paired: median and spread of the round medians
print(f"|{'-' * (w + 2)}|----------:|----------:|")
for n, m, s in rows:
    print(f"| {n.ljust(w)} | {m:9.2f} | {s:9.2f} |")
print(f"| {'peak memory, allocate with 10,000 worktrees'.ljust(w)} | {peak / 1024:6.1f} MB |           |")
if base_peak:
    print(f"| {'baseline: peak memory, the same'.ljust(w)} | {base_peak / 1024:6.1f} MB |           |")
if os.path.exists(os.path.join(res, "index-size")):
    size = int(open(os.path.join(res, "index-size")).read())
    print(f"| {'machine index file, 1,000 repositories'.ljust(w)} | {size / 1024:6.1f} KB |           |")
PY
