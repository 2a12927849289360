#!/usr/bin/env bash
# Compile time, peak memory and lookup rate of newaliases on 1,000 / 10,000 / 100,000
# aliases, shaped like ../shared/bench/compare.sh's (every 10th a 3-target list spanning
# two lines, every 10th a quoted command, the rest one-target aliases).
#
#   benches/aliases.sh                 (SIZES="1000 10000 100000" RUNS=9)
#
# Builds the release binaries first. Times are medians of RUNS runs of the whole process
# (start, read, parse, write, fsync, rename); the goal for 100k is well under 40 ms
# (Postfix's `postalias cdb:` takes ~61 ms on our machines).
set -euo pipefail
# shellcheck source=benches/world.sh
source "$(dirname "$0")/world.sh"
cd "$(dirname "$0")/.."
SIZES=${SIZES:-"1000 10000 100000"}; RUNS=${RUNS:-9}
cargo build --release --quiet --bin newaliases
BIN=target/release/newaliases
world_dir mr-aliases-bench

generate() {
  python3 - "$1" "$2" <<'PY'
import sys
f, n = sys.argv[1], int(sys.argv[2])
with open(f, "w") as o:
    for i in range(n):
        if i % 10 == 0:
            o.write(f"list{i}: user{i}, user{i+1},\n\tuser{i+2}@example.org\n")
        elif i % 10 == 1:
            o.write(f"pipe{i}: \"|/usr/bin/true {i}\"\n")
        else:
            o.write(f"alias{i}: user{i}\n")
PY
}
median() { python3 -c "import statistics,sys; print(f'{statistics.median(float(x) for x in sys.argv[1:]):.1f}')" "$@"; }

printf '%-9s %10s %12s %10s %14s %16s %14s\n' aliases "source KB" "compile ms" "RSS KB" "get/s" "lookup+stat/s" "expand/s"
for n in $SIZES; do
  dir=$T/$n; mkdir -p "$dir"
  generate "$dir/aliases" "$n"
  printf 'alias_database = cdb:%s/aliases\nalias_maps = cdb:%s/aliases\n' "$dir" "$dir" > "$dir/main.cf"
  times=()
  for r in $(seq 1 "$RUNS"); do
    s=$(date +%s%N); MAIL_CONFIG=$dir "$BIN"; e=$(date +%s%N)
    times+=("$(awk -v a="$s" -v b="$e" 'BEGIN{print (b-a)/1e6}')")
  done
  rss=$( { MAIL_CONFIG=$dir /usr/bin/time -f %M "$BIN"; } 2>&1 | tail -1 )
  read -r get lookup expand < <(cargo bench --quiet --bench aliases_lookup -- "$dir/aliases" "$n" 2>/dev/null)
  printf '%-9s %10s %12s %10s %14s %16s %14s\n' "$n" "$(( $(stat -c %s "$dir/aliases") / 1024 ))" \
    "$(median "${times[@]}")" "$rss" "$get" "$lookup" "$expand"
done
