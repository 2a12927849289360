#!/usr/bin/env bash
# The relay path with the SMTP connection cache: N messages to relayhost = Postfix's
# smtp-sink on loopback, twice: "live" submits them one after the other while the daemon
# runs and times until the queue is empty (compare.sh's relay stage, bound by the
# submissions); "queued" submits them with -odq while the daemon is down and times from
# its start to an empty queue (the delivery side alone). smtp-sink's last counters line
# shows how many SMTP sessions carried the 2N messages.
#
#   benches/relay_reuse.sh [BIN [N [PORT [EXTRA]]]]   (target/release, 2000, 40599)
#
# EXTRA is one more main.cf line, e.g. "smtp_connection_cache_on_demand = no" for the
# comparison without the cache. Needs smtp-sink (Debian's postfix package).
set -euo pipefail
# shellcheck source=benches/world.sh
source "$(dirname "$0")/world.sh"
cd "$(dirname "$0")/.."
if [ $# -eq 0 ]; then
  cargo build --release --quiet --bin sendmail --bin mailroom --bin mailq --bin newaliases
fi
BIN=${1:-$(pwd)/target/release}; N=${2:-2000}; PORT=${3:-40599}; EXTRA=${4:-}
command -v smtp-sink >/dev/null || { echo "relay_reuse.sh: smtp-sink (postfix) not installed" >&2; exit 2; }
world_new mr-relay-bench
world_cf "relayhost = [127.0.0.1]:$PORT" "$EXTRA"
smtp-sink -u nobody -c "127.0.0.1:$PORT" 256 >"$T/sink.out" 2>&1 & world_pid $!
world_message "$T/m.eml" user@relay.test
empty() { [ "$($MR "$BIN/mailq" 2>/dev/null | head -1)" = "Mail queue is empty" ]; }
drain() { local t=0; until empty; do sleep 0.05; t=$((t+1)); [ $t -lt 12000 ] || { echo "queue did not drain" >&2; return 1; }; done; }
now() { date +%s%N; }
daemon_start; sleep 0.5
s=$(now)
for i in $(seq 1 "$N"); do $MR "$BIN/sendmail" -i user@relay.test < "$T/m.eml"; done
drain
live=$(( ($(now) - s) / 1000000 ))
daemon_stop
for i in $(seq 1 "$N"); do $MR "$BIN/sendmail" -odq -i user@relay.test < "$T/m.eml"; done
s=$(now)
daemon_start
drain
queued=$(( ($(now) - s) / 1000000 ))
daemon_stop
sent=$(grep -c 'status=sent' "$T/maillog" || true)
tr "\r" "\n" < "$T/sink.out" | tail -1; echo "live ${live} ms  queued ${queued} ms  sent $sent of $((2*N))"
