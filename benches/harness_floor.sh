#!/usr/bin/env bash
# How fast compare.sh's submission rows could ever read: stages 1 and 2 of
# ../shared/bench/compare.sh (submit latency, end to end), each with extra arms that
# stand where mailroom's `sendmail` stands but do nothing:
#  - `env MAIL_CONFIG=... /bin/true`: what the harness costs around a program;
#  - `env MAIL_CONFIG=... noop-static`: a statically linked `int main(void) { return 0; }`
#    (no dynamic loader, no shared libraries), built with cc when there is one.
# A sendmail that cost nothing would measure the Postfix/no-op ratio; a real one must at
# least read the message, create its queue file, write it and fsync it.
#
#   benches/harness_floor.sh [BIN_DIR]        (default target/release)
#   SUBMITS=300 E2E=1000 benches/harness_floor.sh target/release
#
# Needs root, and a running Postfix (Debian's postfix package; compare.sh installs it), as
# compare.sh does. Arms alternate within each iteration of stage 1, in compare.sh's order
# (Postfix first), and each no-op's latency is timed exactly as compare.sh times a
# submission (`date +%s%N` before and after). To see the floor under load, start two busy
# loops (`while :; do :; done &`) half a minute before.
set -euo pipefail
# shellcheck source=benches/world.sh
source "$(dirname "$0")/world.sh"
BIN=$(cd "${1:-target/release}" && pwd)
SUBMITS=${SUBMITS:-300}; E2E=${E2E:-1000}
[ "$(id -u)" = 0 ] || { echo "harness_floor.sh: run as root" >&2; exit 2; }
for b in sendmail mailq; do
  [ -x "$BIN/$b" ] || { echo "harness_floor.sh: missing $BIN/$b" >&2; exit 2; }
done
if ! command -v postfix >/dev/null; then
  echo "harness_floor.sh: needs Postfix (run compare.sh once, it installs it)" >&2; exit 2
fi
postfix status >/dev/null 2>&1 || postfix start >/dev/null 2>&1
U=benchu; id $U >/dev/null 2>&1 || useradd -m $U
load_start=$(cut -d' ' -f1-3 /proc/loadavg)

# shellcheck disable=SC2016 # $myhostname and $mydomain are main.cf's, as in compare.sh
world_new mr-floor bench.localdomain localdomain '$myhostname, localhost.$mydomain, localhost'
world_message "$T/msg.eml" $U
msg=$T/msg.eml
arms=(postfix mailroom true)
if command -v cc >/dev/null; then
  printf 'int main(void) { return 0; }\n' > "$T/noop.c"
  cc -O2 -static -o "$T/noop-static" "$T/noop.c" 2>/dev/null && arms+=(static)
fi
conf=MAIL_CONFIG=$T/config
# One submission by arm $1, the way compare.sh makes one.
run() {
  case $1 in
    postfix) /usr/sbin/sendmail -i $U ;;
    mailroom) env "$conf" "$BIN/sendmail" -i $U ;;
    true) env "$conf" /bin/true -i $U ;;
    static) env "$conf" "$T/noop-static" -i $U ;;
  esac < "$msg"
}

now() { date +%s%N; }
median() { python3 -c "import statistics,sys; print(f'{statistics.median(float(x) for x in sys.argv[1:]):.2f}')" "$@"; }
empty() { [ "$("$@" 2>/dev/null | head -1)" = "Mail queue is empty" ]; }
# Waits for a queue to empty, as compare.sh does, and gives up after 10 minutes.
drain() {
  local t=0
  until empty "$@"; do
    sleep 0.1; t=$((t + 1))
    [ $t -le 6000 ] || { echo "harness_floor.sh: queue did not drain: $*" >&2; exit 1; }
  done
}
drain_both() { drain /usr/bin/mailq; drain env "$conf" "$BIN/mailq"; }

daemon_start; sleep 0.5
postsuper -d ALL >/dev/null 2>&1 || true

# 1. submit latency: the arms in turn, SUBMITS rounds.
declare -A lat
for _ in $(seq 1 "$SUBMITS"); do
  for a in "${arms[@]}"; do
    s=$(now); run "$a"; lat[$a]+="$(( $(now) - s )) "
  done
done
drain_both

# 2. end to end: E2E submissions in a row, then until both queues are empty.
declare -A e2e
for a in "${arms[@]}"; do
  s=$(now)
  for _ in $(seq 1 "$E2E"); do run "$a"; done
  drain_both
  e2e[$a]=$(( ($(now) - s) / 1000000 ))
done
daemon_stop

declare -A sub
for a in "${arms[@]}"; do
  # shellcheck disable=SC2046,SC2086 # lists of numbers
  sub[$a]=$(median $(printf '%s\n' ${lat[$a]} | awk '{print $1/1e6}'))
done
echo "machine: $(nproc) CPUs, load average $load_start at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end"
printf '%-44s %10s %8s %12s %8s\n' "in sendmail's place" "submit ms" ratio "e2e $E2E ms" ratio
for a in "${arms[@]}"; do
  case $a in
    postfix) what="Postfix's sendmail" ;;
    mailroom) what="mailroom's sendmail" ;;
    true) what="env MAIL_CONFIG=... /bin/true (no-op)" ;;
    static) what="env MAIL_CONFIG=... noop-static (no-op)" ;;
  esac
  python3 -c "import sys; w,s,ps,e,pe=sys.argv[1],float(sys.argv[2]),float(sys.argv[3]),float(sys.argv[4]),float(sys.argv[5]); print(f'{w:<44} {s:>10.2f} {ps/s:>8.2f} {e:>12.0f} {pe/e:>8.2f}')" \
    "$what" "${sub[$a]}" "${sub[postfix]}" "${e2e[$a]}" "${e2e[postfix]}"
done
