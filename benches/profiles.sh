#!/usr/bin/env bash
# What link-time optimisation costs to build and what it gives at run time:
#   bash benches/profiles.sh          (ROUNDS=<n> paired rounds, default 10, of RUNS=<n> each)
# Builds the release binary three ways from clean target dirs (fat LTO with one codegen unit,
# thin LTO, none), one after another, timing the clean build and a rebuild of the crate alone;
# then runs `get` and an idempotent `allocate` of each binary in alternating rounds (this
# machine's disk speed drifts within minutes) and prints the medians of the round medians.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-10}
RUNS=${RUNS:-30}
. benches/debian.sh
command -v hyperfine >/dev/null || debian_install hyperfine hyperfine
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
profiles=(fat thin off)
for p in "${profiles[@]}"; do
	case $p in
	fat) lto=fat cgu=1 ;;
	thin) lto=thin cgu=16 ;;
	off) lto=false cgu=16 ;;
	esac
	t0=$(date +%s.%N)
	CARGO_PROFILE_RELEASE_LTO=$lto CARGO_PROFILE_RELEASE_CODEGEN_UNITS=$cgu \
		CARGO_TARGET_DIR="$work/target-$p" cargo build --release --locked -q
	t1=$(date +%s.%N)
	touch src/lib.rs
	CARGO_PROFILE_RELEASE_LTO=$lto CARGO_PROFILE_RELEASE_CODEGEN_UNITS=$cgu \
		CARGO_TARGET_DIR="$work/target-$p" cargo build --release --locked -q
	t2=$(date +%s.%N)
	cp "$work/target-$p/release/git-worktree-ports" "$work/$p"
	printf '%-5s build: clean %5.0f s, the crate alone %4.0f s; binary %s bytes\n' "$p" \
		"$(echo "$t1 - $t0" | bc)" "$(echo "$t2 - $t1" | bc)" "$(stat -c %s "$work/$p")"
	rm -rf "$work/target-$p"
done

. benches/hermetic.sh
hermetic "$work"
cd "$work/app"
"$work/fat" allocate --no-render >/dev/null
for r in $(seq 1 "$ROUNDS"); do
	for p in "${profiles[@]}"; do
		hyperfine -N -w 3 -r "$RUNS" --export-json "$work/get-$p-$r.json" "$work/$p get web" >/dev/null
		hyperfine -N -w 3 -r "$RUNS" --export-json "$work/alloc-$p-$r.json" "$work/$p allocate --no-render" >/dev/null
	done
done
python3 - "$work" "$ROUNDS" "${profiles[@]}" <<'PY'
import json, statistics, sys
work, rounds, profiles = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
def med(kind, p):
    return statistics.median(
        json.load(open(f"{work}/{kind}-{p}-{r}.json"))["results"][0]["median"] for r in range(1, rounds + 1)) * 1000
print("| profile | `get web` ms | `allocate` (idempotent) ms |")
print("|---|---:|---:|")
for p in profiles:
    print(f"| {p} | {med('get', p):.2f} | {med('alloc', p):.2f} |")
PY
