#!/usr/bin/env bash
# The figures for issue 18's closing note that ../shared/bench/compare.sh does not print,
# in one table:
#  - the machine: nproc, load average at start and end, kernel, file system of the temp dir;
#  - peak RSS (KB) of `mailq` and `mailq -j` on SMALL and LARGE held messages, and the ratio
#    LARGE/SMALL (goal: at most 1.2, memory flat in queue size);
#  - the daemon's VmHWM (peak) and VmRSS, and its children's, once it has settled on a queue
#    of SMALL and of LARGE deferred messages, and the ratio (goal: at most 1.2); plus, for
#    information, its peak while it deferred the LARGE queue's messages (all due at once);
#  - what DKIM signing costs on the relay path, from benches/relay_dkim.sh (goal: signed
#    relay at most 1.3x the unsigned one).
#
#   benches/round2.sh [BIN_DIR]      (default target/release; build with cargo build --release)
#   SMALL=1000 LARGE=50000 RUNS=3 DKIM_RELAY=1000 DKIM_RUNS=3 benches/round2.sh target/release
#
# Needs root (the daemon's SMTP agents run as mail_owner: the user mailroom must exist) and,
# for the DKIM rows only, smtp-sink (Debian's postfix package); no running Postfix.
# Takes a few minutes on a quiet 2-core machine (7 under a load average of 6-9), mostly
# filling the LARGE queue with 2 submitters.
set -euo pipefail
# shellcheck source=benches/world.sh
source "$(dirname "$0")/world.sh"
BIN=$(cd "${1:-target/release}" && pwd)
cd "$(dirname "$0")/.."
SMALL=${SMALL:-1000}; LARGE=${LARGE:-50000}; RUNS=${RUNS:-3}
DKIM_RELAY=${DKIM_RELAY:-1000}; DKIM_RUNS=${DKIM_RUNS:-3}
[ "$(id -u)" = 0 ] || { echo "round2.sh: run as root" >&2; exit 2; }
for b in sendmail mailq postsuper newaliases mailroom; do
  [ -x "$BIN/$b" ] || { echo "round2.sh: missing $BIN/$b" >&2; exit 2; }
done
load_start=$(cut -d' ' -f1-3 /proc/loadavg)

# The world of compare.sh, with no listener. Deliveries go to a relayhost that refuses
# (nothing listens on port 1), so every message is deferred and stays in the queue; the
# long backoff keeps them from coming due again while the script runs.
world_new mr-round2
world_cf "relayhost = [127.0.0.1]:1" "minimal_backoff_time = 3600s" \
  "maximal_backoff_time = 4000s" "queue_run_delay = 3600s"
world_message "$T/msg.eml" user@relay.test

count() { find "$T/queue/$1" -type f 2>/dev/null | wc -l; }
# Adds N messages to the queue as compare.sh does: `sendmail -odq` from 2 submitters.
submit() {
  local n=$1 p
  for p in 0 1; do
    ( for i in $(seq 1 $(( n / 2 + p * (n % 2) ))); do
        $MR "$BIN/sendmail" -odq -i user@relay.test < "$T/msg.eml"; done ) &
  done
  wait
}
# Peak RSS (KB) of a command: the median of RUNS runs.
rss() {
  local r
  for r in $(seq 1 "$RUNS"); do
    /usr/bin/time -o "$T/time" -f %M $MR "$@" >/dev/null 2>&1; cat "$T/time"
  done | sort -n | sed -n "$(( (RUNS + 1) / 2 ))p"
}
# The daemon and its children (it execs `mailroom ... daemon`; its SMTP agents are
# `mailroom smtp-agent`), found by the config path on their command lines.
procs() { pgrep -f -- "-c $T/config" || true; }
# "daemon_hwm daemon_rss children_hwm children_rss children_count" in KB: the children's
# peaks and resident sizes added up.
status() {
  local p dh=0 dr=0 ch=0 cr=0 cn=0 h r
  for p in $(procs); do
    h=$(awk '/^VmHWM:/ {print $2}' "/proc/$p/status" 2>/dev/null || true)
    r=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || true)
    [ -n "$h" ] && [ -n "$r" ] || continue
    if [ "$p" = "$DAEMON" ]; then dh=$h; dr=$r; else ch=$((ch + h)); cr=$((cr + r)); cn=$((cn + 1)); fi
  done
  echo "$dh $dr $ch $cr $cn"
}
cpu() { awk '{print $14 + $15}' "/proc/$DAEMON/stat"; }
# Waits until the daemon has walked the queue at start: at least 3 s, then until its CPU
# time and RSS have not moved for 1 s (at most 60 s).
settle() {
  local t=0 same=0 last="" now
  sleep 3
  while [ $t -lt 114 ]; do
    now="$(cpu) $(status)"
    if [ "$now" = "$last" ]; then same=$((same + 1)); [ $same -lt 2 ] || return 0; else same=0; fi
    last=$now; sleep 0.5; t=$((t + 1))
  done
  echo "round2.sh: the daemon did not settle in 60 s" >&2
}
# Waits until the daemon has tried (and deferred) all N messages of the queue.
deferred_all() {
  local n=$1 t=0
  until [ "$(count deferred)" -ge "$n" ] && [ "$(count active)" -eq 0 ] \
        && [ "$(count incoming)" -eq 0 ] && [ "$(count maildrop)" -eq 0 ] \
        && [ "$(grep -c 'status=deferred' "$T/maillog" || true)" -ge "$n" ]; do
    sleep 0.5; t=$((t + 1))
    [ $t -lt 1200 ] || { echo "round2.sh: the queue was not deferred in 600 s" >&2; exit 1; }
  done
}

declare -A R
# One queue size, from the previous one: submit the difference, hold everything, measure
# mailq; release (root's held mail goes to deferred/, due at once), let a daemon defer it
# all, then restart the daemon on the deferred queue and measure it once settled.
#
# Why deferred and not held mail for the daemon: it never walks hold/ (scheduler.rs,
# RUNNABLE), so a held queue would measure an idle daemon. At start it reads the envelope
# of every deferred file to see whether it is due (none is here), which is the walk whose
# memory must not grow with the queue; its read bytes (rchar) show that it did.
have=0
for n in $SMALL $LARGE; do
  submit $((n - have)); have=$n
  $MR "$BIN/postsuper" -h ALL >/dev/null 2>&1
  [ "$(count hold)" -eq "$n" ] || { echo "round2.sh: $(count hold) held, expected $n" >&2; exit 1; }
  sync
  R[mailq,$n]=$(rss "$BIN/mailq")
  R[mailqj,$n]=$(rss "$BIN/mailq" -j)

  $MR "$BIN/postsuper" -H ALL >/dev/null 2>&1
  daemon_start; deferred_all "$n"
  read -r dh _ ch _ cn <<<"$(status)"
  R[burst,$n]=$dh; R[burstc,$n]="$ch ($cn)"
  daemon_stop
  [ "$(count deferred)" -eq "$n" ] || { echo "round2.sh: $(count deferred) deferred, expected $n" >&2; exit 1; }
  sync
  daemon_start; settle
  read -r dh dr ch cr cn <<<"$(status)"
  R[dhwm,$n]=$dh; R[drss,$n]=$dr; R[chwm,$n]=$ch; R[crss,$n]=$cr; R[cn,$n]=$cn
  R[rchar,$n]=$(( $(awk '/^rchar:/ {print $2}' "/proc/$DAEMON/io") / 1024 ))
  daemon_stop
done
$MR "$BIN/postsuper" -d ALL >/dev/null 2>&1

# DKIM on the relay path: benches/relay_dkim.sh, with the same binaries.
dkim=""
if command -v smtp-sink >/dev/null; then
  dkim=$(RELAY=$DKIM_RELAY RUNS=$DKIM_RUNS bash benches/relay_dkim.sh "$BIN" 2>"$T/dkim.err") \
    || { echo "round2.sh: relay_dkim.sh failed:" >&2; cat "$T/dkim.err" >&2; dkim=""; }
fi
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

# The table.
fmt() { python3 -c "import sys; print(f'{int(sys.argv[1]):,}')" "$1"; }
ratio() { python3 -c "import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print(f'{b/a:.2f}' if a else '-')" "$1" "$2"; }
line() { printf '%-46s %12s %12s %8s %7s\n' "$@"; }
text() { printf '%-46s %s\n' "$1" "$2"; }
S=$(fmt "$SMALL"); L=$(fmt "$LARGE")
line "figure" "$S" "$L" "ratio" "goal"
text "machine: nproc" "$(nproc)"
text "machine: load average at start / end" "$load_start / $load_end"
text "machine: kernel" "$(uname -r)"
text "machine: temp dir fs ($(dirname "$T"))" "$(findmnt -n -o FSTYPE,OPTIONS -T "$T")"
for k in mailq mailqj; do
  name=$([ $k = mailq ] && echo "mailq" || echo "mailq -j")
  line "$name peak RSS KB, held" "$(fmt "${R[$k,$SMALL]}")" "$(fmt "${R[$k,$LARGE]}")" \
    "$(ratio "${R[$k,$SMALL]}" "${R[$k,$LARGE]}")" "<= 1.2"
done
line "daemon VmHWM KB, settled, deferred" "$(fmt "${R[dhwm,$SMALL]}")" "$(fmt "${R[dhwm,$LARGE]}")" \
  "$(ratio "${R[dhwm,$SMALL]}" "${R[dhwm,$LARGE]}")" "<= 1.2"
line "daemon VmRSS KB, settled, deferred" "$(fmt "${R[drss,$SMALL]}")" "$(fmt "${R[drss,$LARGE]}")" \
  "$(ratio "${R[drss,$SMALL]}" "${R[drss,$LARGE]}")" "<= 1.2"
line "children VmHWM/VmRSS KB, settled (count)" \
  "${R[chwm,$SMALL]}/${R[crss,$SMALL]} (${R[cn,$SMALL]})" "${R[chwm,$LARGE]}/${R[crss,$LARGE]} (${R[cn,$LARGE]})" "" ""
line "daemon KB read at start (rchar: the walk)" "$(fmt "${R[rchar,$SMALL]}")" "$(fmt "${R[rchar,$LARGE]}")" \
  "$(ratio "${R[rchar,$SMALL]}" "${R[rchar,$LARGE]}")" ""
line "daemon VmHWM KB, deferring all (all due)" "$(fmt "${R[burst,$SMALL]}")" "$(fmt "${R[burst,$LARGE]}")" \
  "$(ratio "${R[burst,$SMALL]}" "${R[burst,$LARGE]}")" "(info)"
line "  its smtp-agents' VmHWM KB summed (count)" "${R[burstc,$SMALL]}" "${R[burstc,$LARGE]}" "" "(info)"
if [ -n "$dkim" ]; then
  # relay_dkim.sh's rows: "label ms on/off msgs/s".
  while read -r label; do
    r=$(awk -v l="$label" 'index($0, l) == 1 { print $(NF - 1) }' <<<"$dkim")
    ms=$(awk -v l="$label" 'index($0, l) == 1 { print $(NF - 2) }' <<<"$dkim")
    line "DKIM relay $DKIM_RELAY msgs, $label (ms)" "" "$(fmt "$ms")" "$r" "$([ "$label" = "signing off" ] || echo "<= 1.3")"
  done <<<$'signing off\nsigned, RSA-2048\nsigned, Ed25519'
  text "  (relay_dkim.sh)" "$(tail -1 <<<"$dkim" | tr -d '()')"
else
  text "DKIM relay" "skipped (smtp-sink not installed, or relay_dkim.sh failed)"
fi
