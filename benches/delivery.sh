#!/usr/bin/env bash
# End-to-end local delivery: N messages, each submitted by its own `sendmail -i USER`
# process (2 KB), with the daemon running (`sendmail -bD`), timed until every one sits in
# the user's mbox (`mailq` says "Mail queue is empty", then the From_ lines are counted).
# Once with one submitter, once with four in parallel. Postfix on our machines, for
# scale: 1,000 sequential in ~6.1 s (164 msg/s), 4 parallel in ~5.4 s.
#
#   benches/delivery.sh [BIN_DIR]     (default target/release; N=1000 USER=root)
set -euo pipefail
# shellcheck source=benches/world.sh
source "$(dirname "$0")/world.sh"
BIN=$(cd "${1:-target/release}" && pwd)
N=${N:-1000}; U=${USER_TO:-root}
for b in sendmail; do [ -x "$BIN/$b" ] || { echo "missing $BIN/$b (cargo build --release)" >&2; exit 2; }; done
# Its aliases (world_new compiles them) are consulted on every delivery, as in compare.sh.
# shellcheck disable=SC2016 # $myhostname and $mydomain are main.cf's
world_new mr-delivery bench.localdomain localdomain '$myhostname, localhost.$mydomain, localhost'
export MAIL_CONFIG=$T/config
msg=$T/msg.eml
world_message "$msg" "$U"

# mailq is another helper's binary; until it is there, an empty queue is no regular file
# left under maildrop/ incoming/ active/ deferred/.
empty() {
  if [ -x "$BIN/mailq" ]; then [ "$("$BIN/mailq" 2>/dev/null | head -1)" = "Mail queue is empty" ]
  else [ -z "$(find "$T/queue/maildrop" "$T/queue/incoming" "$T/queue/active" "$T/queue/deferred" -type f 2>/dev/null | head -1)" ]; fi
}
drain() { local t=0; until empty; do sleep 0.02; t=$((t+1)); [ $t -lt 30000 ] || { echo "queue did not drain" >&2; return 1; }; done; }
now() { date +%s%N; }

run() { # $1 = parallel submitters
  local p=$1 per=$((N / $1)) s e got
  rm -f "$T/spool/$U"
  s=$(now)
  local pids=()
  for j in $(seq 1 "$p"); do ( for i in $(seq 1 "$per"); do "$BIN/sendmail" -i "$U" < "$msg"; done ) & pids+=($!); done
  wait "${pids[@]}"   # not a bare wait: the daemon is a child too
  drain
  e=$(now)
  got=$(grep -c '^From ' "$T/spool/$U" || true)
  [ "$got" -eq $((per * p)) ] || echo "warning: $got messages in the mbox, expected $((per * p))" >&2
  python3 -c "import sys; n,ms=int(sys.argv[1]),int(sys.argv[2])/1e6; print(f'{sys.argv[3]:<28} {n:>6} {ms/1000:>8.2f} {n/(ms/1000):>8.0f} {sys.argv[4]:>9}')" \
    "$got" "$((e - s))" "$p submitter(s)" "$5"
}

daemon_start
sleep 0.3
printf '%-28s %6s %8s %8s %9s\n' workload msgs seconds "msg/s" "postfix s"
run 1 x x x 6.1
run 4 x x x 5.4
daemon_stop
