# shellcheck shell=bash
# The throw-away mail world the bench scripts run in, in one place: they `source` this file
# (it runs nothing by itself). A script sets BIN (the binaries' directory), then:
#
#   world_new PREFIX [MYHOSTNAME MYDOMAIN MYDESTINATION]
#       T = a new /tmp/PREFIX.XXXXXX (mode 755) with config/ and spool/ (1777); a main.cf
#       with the lines every bench shares (default bench.example.org, example.org,
#       "$myhostname, localhost"; no listener: smtpd_port is empty), aliases with
#       "postmaster: root", compiled (sendmail -bi, newaliases' mode, so that only sendmail
#       need be in BIN); MR="env MAIL_CONFIG=$T/config" to put before a command; the EXIT
#       trap (world_exit).
#   world_cf LINE...              more main.cf lines (relayhost, backoff, DKIM, ...)
#   world_message FILE TO [FROM]  the 2 KB message of compare.sh (From: bench@example.org)
#   daemon_start, daemon_stop     `sendmail -bD` in the background (pid in DAEMON, output in
#                                 $T/daemon.out); stop sends TERM and waits, and does
#                                 nothing when no daemon runs
#   world_pid PID...              more processes for the EXIT trap to kill (smtp-sink)
#   world_dir PREFIX              only T and the EXIT trap, for scripts with their own main.cf
#
# At exit: the daemon stopped, the world_pid processes killed, $T removed unless KEEP is set
# (KEEP=1 benches/X.sh leaves it, its maillog and daemon.out, to look at).

DAEMON=""; WORLD_PIDS=""

world_dir() {
  T=$(mktemp -d "/tmp/$1.XXXXXX")
  trap world_exit EXIT
}

world_exit() {
  set +e
  daemon_stop
  # shellcheck disable=SC2086 # a list of pids
  [ -z "$WORLD_PIDS" ] || kill $WORLD_PIDS 2>/dev/null
  [ -n "${KEEP:-}" ] || rm -rf "$T"
}

world_pid() { WORLD_PIDS="$WORLD_PIDS $*"; }

# shellcheck disable=SC2016 # $myhostname is main.cf's, not the shell's
world_new() {
  local host=${2:-bench.example.org} domain=${3:-example.org} dest=${4:-'$myhostname, localhost'}
  world_dir "$1"
  chmod 755 "$T"
  mkdir -p "$T/config" "$T/spool"; chmod 1777 "$T/spool"
  cat > "$T/config/main.cf" <<CF
myhostname = $host
mydomain = $domain
mydestination = $dest
queue_directory = $T/queue
mail_spool_directory = $T/spool
alias_maps = cdb:$T/config/aliases
alias_database = cdb:$T/config/aliases
maillog_file = $T/maillog
smtpd_port =
CF
  echo "postmaster: root" > "$T/config/aliases"
  # shellcheck disable=SC2034 # for the scripts that source this file
  MR="env MAIL_CONFIG=$T/config"
  $MR "$BIN/sendmail" -bi >/dev/null
}

world_cf() { printf '%s\n' "$@" >> "$T/config/main.cf"; }

world_message() {
  local i
  { printf 'From: %s\nTo: %s\nSubject: bench\n\n' "${3:-bench@example.org}" "$2"
    for i in $(seq 1 30); do echo "line $i of a two kilobyte message body padding padding padding padding"; done
  } > "$1"
}

daemon_start() {
  $MR "$BIN/sendmail" -bD >"$T/daemon.out" 2>&1 & DAEMON=$!
}

daemon_stop() {
  if [ -n "$DAEMON" ]; then
    kill -TERM "$DAEMON" 2>/dev/null; wait "$DAEMON" 2>/dev/null || true; DAEMON=""
  fi
}
