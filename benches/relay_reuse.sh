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
cd "$(dirname "$0")/.."
if [ $# -eq 0 ]; then
  cargo build --release --quiet --bin sendmail --bin mailroom --bin mailq --bin newaliases
fi
BIN=${1:-$(pwd)/target/release}; N=${2:-2000}; PORT=${3:-40599}; EXTRA=${4:-}
command -v smtp-sink >/dev/null || { echo "relay_reuse.sh: smtp-sink (postfix) not installed" >&2; exit 2; }
T=$(mktemp -d /tmp/mr-relay-bench.XXXXXX); chmod 755 "$T"
DAEMON=""; SINK=""
stop() { [ -n "$DAEMON" ] && { kill -TERM "$DAEMON" 2>/dev/null; wait "$DAEMON" 2>/dev/null || true; DAEMON=""; }; }
trap 'set +e; stop; [ -n "$SINK" ] && kill $SINK 2>/dev/null; rm -rf "$T"' EXIT
mkdir -p "$T/config" "$T/spool"; chmod 1777 "$T/spool"
cat > "$T/config/main.cf" <<CF
myhostname = bench.example.org
mydomain = example.org
mydestination = \$myhostname, localhost
queue_directory = $T/queue
mail_spool_directory = $T/spool
alias_maps = cdb:$T/config/aliases
alias_database = cdb:$T/config/aliases
maillog_file = $T/maillog
smtpd_port =
relayhost = [127.0.0.1]:$PORT
$EXTRA
CF
echo "postmaster: root" > "$T/config/aliases"
MR="env MAIL_CONFIG=$T/config"
$MR "$BIN/newaliases"
smtp-sink -u nobody -c 127.0.0.1:$PORT 256 >"$T/sink.out" 2>&1 & SINK=$!
{ printf 'From: bench@example.org\nTo: user@relay.test\nSubject: bench\n\n'
  for i in $(seq 1 30); do echo "line $i of a two kilobyte message body padding padding padding padding"; done
} > "$T/m.eml"
empty() { [ "$($MR "$BIN/mailq" 2>/dev/null | head -1)" = "Mail queue is empty" ]; }
drain() { local t=0; until empty; do sleep 0.05; t=$((t+1)); [ $t -lt 12000 ] || { echo "queue did not drain" >&2; return 1; }; done; }
now() { date +%s%N; }
$MR "$BIN/sendmail" -bD >"$T/daemon.out" 2>&1 & DAEMON=$!; sleep 0.5
s=$(now)
for i in $(seq 1 "$N"); do $MR "$BIN/sendmail" -i user@relay.test < "$T/m.eml"; done
drain
live=$(( ($(now) - s) / 1000000 ))
stop
for i in $(seq 1 "$N"); do $MR "$BIN/sendmail" -odq -i user@relay.test < "$T/m.eml"; done
s=$(now)
$MR "$BIN/sendmail" -bD >"$T/daemon.out" 2>&1 & DAEMON=$!
drain
queued=$(( ($(now) - s) / 1000000 ))
stop
sent=$(grep -c 'status=sent' "$T/maillog" || true)
tr "\r" "\n" < "$T/sink.out" | tail -1; echo "live ${live} ms  queued ${queued} ms  sent $sent of $((2*N))"
