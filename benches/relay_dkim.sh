#!/usr/bin/env bash
# What DKIM signing costs on the relay path: ../shared/bench/compare.sh's relay stage
# (RELAY messages through relayhost = Postfix's smtp-sink on loopback, submission plus
# delivery until the queue is empty) run with signing off, with an RSA-2048 key and with an
# Ed25519 key, in turns (off, rsa, ed25519, off, ...) so that whatever else the machine is
# doing weighs on each alike. Prints the median of RUNS rounds per mode and its ratio to
# "off"; the goal is on/off within 1.3.
#
#   benches/relay_dkim.sh [BIN_DIR]       (RELAY=2000 RUNS=3)
#
# Without BIN_DIR it builds and uses target/release; with it (benches/round2.sh passes its
# own) it uses the binaries there and builds nothing.
# Needs smtp-sink (Debian's postfix package: compare.sh installs it) and root (the daemon
# drops to mail_owner for its SMTP agents; the user mailroom must exist).
set -euo pipefail
# shellcheck source=benches/world.sh
source "$(dirname "$0")/world.sh"
BIN=""; if [ $# -gt 0 ]; then BIN=$(cd "$1" && pwd); fi
cd "$(dirname "$0")/.."
RELAY=${RELAY:-2000}; RUNS=${RUNS:-3}; SINK_PORT=${SINK_PORT:-40625}
command -v smtp-sink >/dev/null || { echo "relay_dkim.sh: smtp-sink (postfix) not installed" >&2; exit 2; }
if [ -z "$BIN" ]; then
  cargo build --release --quiet --bin sendmail --bin mailroom --bin mailq --bin newaliases
  BIN=$(pwd)/target/release
fi

world_new mr-relay-dkim
world_cf "relayhost = [127.0.0.1]:$SINK_PORT" \
  "dkim_domains = rsa.example.org, ed.example.org" "dkim_selector = bench"
$MR "$BIN/mailroom" dkim keygen -d rsa.example.org -s bench >/dev/null
$MR "$BIN/mailroom" dkim keygen -d ed.example.org -s bench --algorithm ed25519 >/dev/null
# The sink appends what it receives to one file, the same cost in every mode, so that the
# end can count the signatures that really left.
mkdir "$T/sink"; chmod 1777 "$T/sink"   # smtp-sink, as nobody, makes its own files there
smtp-sink -u nobody -D "$T/sink/received" "127.0.0.1:$SINK_PORT" 256 >"$T/sink.out" 2>&1 & world_pid $!

# The same two-kilobyte message as compare.sh; only the From: domain picks the mode
# (off.example.org is not in dkim_domains).
for mode in off rsa ed; do world_message "$T/$mode.eml" user@relay.test "bench@$mode.example.org"; done
empty() { [ "$($MR "$BIN/mailq" 2>/dev/null | head -1)" = "Mail queue is empty" ]; }
drain() { local t=0; until empty; do sleep 0.1; t=$((t+1)); [ $t -lt 6000 ] || { echo "queue did not drain" >&2; return 1; }; done; }
now() { date +%s%N; }

daemon_start; sleep 0.5
declare -A times
for r in $(seq 1 "$RUNS"); do
  for mode in off rsa ed; do
    s=$(now)
    for i in $(seq 1 "$RELAY"); do $MR "$BIN/sendmail" -i user@relay.test < "$T/$mode.eml"; done
    drain
    times[$mode]+="$(( ($(now) - s) / 1000000 )) "
  done
done
daemon_stop
rsa_signed=$(grep -c '^DKIM-Signature: .*a=rsa-sha256' -h "$T"/sink/* || true)
ed_signed=$(grep -c '^DKIM-Signature: .*a=ed25519-sha256' -h "$T"/sink/* || true)
if [ "$rsa_signed" -ne $((RELAY * RUNS)) ] || [ "$ed_signed" -ne $((RELAY * RUNS)) ]; then
  echo "relay_dkim.sh: expected $((RELAY * RUNS)) signatures of each kind, the sink got $rsa_signed RSA and $ed_signed Ed25519" >&2
  grep -i 'warning' "$T/maillog" >&2 || true
  exit 1
fi

median() { python3 -c "import statistics,sys; print(f'{statistics.median(float(x) for x in sys.argv[1:]):.0f}')" "$@"; }
off=$(median ${times[off]})
printf '%-34s %10s %8s %12s\n' "relay $RELAY msgs to smtp-sink" "ms" "on/off" "msgs/s"
for mode in off rsa ed; do
  m=$(median ${times[$mode]})
  label=$([ $mode = off ] && echo "signing off" || { [ $mode = rsa ] && echo "signed, RSA-2048" || echo "signed, Ed25519"; })
  python3 -c "import sys; n,m,o,c=sys.argv[1],float(sys.argv[2]),float(sys.argv[3]),int(sys.argv[4]); print(f'{n:<34} {m:>10.0f} {m/o:>8.2f} {c*1000/m:>12.0f}')" "$label" "$m" "$off" "$RELAY"
done
echo "(median of $RUNS rounds; the rounds in ms: off ${times[off]}/ rsa ${times[rsa]}/ ed25519 ${times[ed]}; every signed message arrived signed)"
