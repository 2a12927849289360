#!/usr/bin/env bash
# Queue tools benchmark (a script, not a timed test): builds queues of held messages
# with the hidden `mkqueue` example and times mailq, mailq -j and postsuper -h/-H/-d ALL
# from target/release, printing wall time and peak RSS for each.
#
#   benches/queue.sh                      (sizes 1000 10000 50000)
#   SIZES="50000" RUNS=5 benches/queue.sh
#
# Postfix on the same kind of machine, for scale: mailq on 50,000 held messages ~0.50 s
# (peak RSS 6.9 MB), postsuper -d ALL ~3.4 s. The goal is 3x faster, with memory that
# does not grow with the queue.
set -euo pipefail
# shellcheck source=benches/world.sh
source "$(dirname "$0")/world.sh"
cd "$(dirname "$0")/.."
SIZES=${SIZES:-"1000 10000 50000"}; RUNS=${RUNS:-3}
cargo build --release --quiet --bin mailq --bin postsuper --example mkqueue
BIN=target/release
world_dir mr-queue-bench
mkdir "$T/config"
printf 'queue_directory = %s/queue\nmaillog_file = %s/maillog\n' "$T" "$T" > "$T/config/main.cf"
export MAIL_CONFIG=$T/config

# One run (for commands that change the queue): "seconds KB".
once() { /usr/bin/time -o "$T/time" -f '%e %M' "$@" >/dev/null 2>&1; cat "$T/time"; }
# Median wall time (s) and the peak RSS (KB) of the median run, of RUNS runs.
measure() {
  local runs=() r
  for r in $(seq 1 "$RUNS"); do
    runs+=("$(once "$@")")
  done
  printf '%s\n' "${runs[@]}" | sort -n | sed -n "$(( (RUNS + 1) / 2 ))p"
}

printf '%-22s %8s %10s %12s\n' command messages "wall s" "peak RSS KB"
row() { printf '%-22s %8s %10s %12s\n' "$1" "$2" $3; }
for n in $SIZES; do
  rm -rf "$T/queue"
  "$BIN/examples/mkqueue" "$T/queue" "$n" hold
  sync
  row "mailq" "$n" "$(measure "$BIN/mailq")"
  row "mailq -j" "$n" "$(measure "$BIN/mailq" -j)"
  row "postsuper -H ALL" "$n" "$(once "$BIN/postsuper" -H ALL)"
  row "postsuper -h ALL" "$n" "$(once "$BIN/postsuper" -h ALL)"
  row "postsuper -d ALL" "$n" "$(once "$BIN/postsuper" -d ALL)"
  [ "$("$BIN/mailq")" = "Mail queue is empty" ] || { echo "queue not empty after -d ALL" >&2; exit 1; }
done
