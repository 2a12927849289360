#!/usr/bin/env bash
# The Debian package and install.sh on a real machine, as root: install, upgrade over
# itself, an end-to-end check as an unprivileged user (submission through the set-gid
# sendmail, MAIL_CONFIG ignored, queue files unreadable, postsuper refused, a symlinked
# mailbox refused), remove, purge; then install.sh into a DESTDIR and for real, twice,
# and uninstall.
#
#   tests/package.sh [path/to/mailroom.deb]
#
# Without an argument it builds the package (debian/build.sh, needs cargo-deb). It changes
# the machine (installs the package, adds users mrtest and victim, removes them at the
# end), so it refuses to run where another MTA is installed; .ci/run runs it on the
# throwaway CI machine. The last line is "N passed, N failed"; the exit status is 1 if
# anything failed.
set -uo pipefail
cd "$(dirname "$0")/.."
export LC_ALL=C

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok: $*"; }
fail() { failed=$((failed + 1)); echo "FAIL: $*"; }
check() { # check DESCRIPTION COMMAND...
  local what=$1
  shift
  if "$@"; then ok "$what"; else fail "$what"; fi
}
finish() {
  echo "$passed passed, $failed failed"
  [ "$failed" -eq 0 ]
  exit $?
}

if [ "$(id -u)" != 0 ]; then
  echo "tests/package.sh: needs root" >&2
  exit 77
fi
for mta in postfix exim4-daemon-light exim4-daemon-heavy sendmail-bin nullmailer dma msmtp-mta opensmtpd; do
  if dpkg-query -W -f='${Status}' "$mta" 2>/dev/null | grep -q 'ok installed'; then
    echo "tests/package.sh: $mta is installed; this test replaces the MTA, run it on a throwaway machine" >&2
    exit 77
  fi
done

deb=${1:-}
if [ -z "$deb" ]; then
  debian/build.sh >/tmp/mailroom-deb-build.log 2>&1 || {
    tail -20 /tmp/mailroom-deb-build.log
    fail "build the package"
    finish
  }
  deb=$(ls -t target/debian/mailroom_*.deb | head -1)
fi
echo "package: $deb"

mode_of() { stat -c '%a %U:%G' "$1" 2>/dev/null; }
as_user() { local u=$1; shift; setpriv --reuid="$u" --regid="$u" --init-groups env -i PATH=/usr/bin:/bin HOME=/tmp "$@"; }
# wait_for SECONDS COMMAND...: polls until the command succeeds.
wait_for() {
  local n=$(($1 * 5))
  shift
  while [ "$n" -gt 0 ]; do
    "$@" && return 0
    sleep 0.2
    n=$((n - 1))
  done
  return 1
}

installed_right() {
  [ "$(mode_of /usr/sbin/sendmail)" = "2755 root:mailroom" ] &&
    [ "$(mode_of /usr/bin/mailq)" = "2755 root:mailroom" ] &&
    [ "$(mode_of /var/spool/mailroom/maildrop)" = "1730 root:mailroom" ] &&
    [ "$(mode_of /var/spool/mailroom/deferred)" = "750 root:mailroom" ] &&
    [ "$(mode_of /var/spool/mailroom/hold)" = "750 root:mailroom" ] &&
    [ "$(readlink /usr/lib/sendmail)" = ../sbin/sendmail ] &&
    [ -f /etc/mailroom/main.cf ] && [ -x /usr/bin/mail ] &&
    { [ -f /lib/systemd/system/mailroom.service ] || [ -f /usr/lib/systemd/system/mailroom.service ]; }
}

# --- install, upgrade over itself ---------------------------------------------------
check "dpkg -i installs" dpkg -i "$deb"
check "installed with the set-gid modes, groups, queue, link, config and unit" installed_right
check "dpkg -i again (upgrade over itself)" dpkg -i "$deb"
check "the modes survive the upgrade" installed_right
check "dpkg -s says installed" sh -c "dpkg -s mailroom | grep -q 'Status: install ok installed'"

# --- end to end as an unprivileged user ---------------------------------------------
for u in mrtest victim; do
  id "$u" >/dev/null 2>&1 || useradd --create-home "$u"
done
touch /var/log/mailroom.log
mailroom config set maillog_file=/var/log/mailroom.log >/dev/null
rm -f /var/mail/victim /var/mail/mrtest

# A message of victim's, queued while no daemon runs: mrtest must not read it.
echo "Subject: victim's secret" | as_user victim /usr/sbin/sendmail -odq root
held=$(ls /var/spool/mailroom/maildrop | head -1)
check "victim's message sits in maildrop" test -n "$held"
check "mrtest cannot list maildrop" bash -c "! setpriv --reuid=mrtest --regid=mrtest --init-groups ls /var/spool/mailroom/maildrop >/dev/null 2>&1"
check "mrtest cannot read victim's maildrop file" bash -c "! setpriv --reuid=mrtest --regid=mrtest --init-groups cat /var/spool/mailroom/maildrop/$held >/dev/null 2>&1"
as_user mrtest /usr/sbin/postsuper -d ALL >/dev/null 2>&1
check "postsuper -d ALL as mrtest exits 77" test $? -eq 77
check "and deleted nothing" test -e "/var/spool/mailroom/maildrop/$held"
as_user mrtest /usr/sbin/sendmail -q >/dev/null 2>&1
check "sendmail -q as mrtest exits 77" test $? -eq 77
as_user mrtest /usr/sbin/sendmail -bi >/dev/null 2>&1
check "sendmail -bi as mrtest exits 77" test $? -eq 77
postsuper -d ALL >/dev/null 2>&1

check "the daemon starts (sendmail -bd)" /usr/sbin/sendmail -bd
token=hi-$$-$RANDOM
check "echo hi | sendmail root as mrtest" as_user mrtest sh -c "printf 'Subject: $token\n\nhi\n' | /usr/sbin/sendmail root"
check "delivered to /var/mail/root" wait_for 20 grep -q "Subject: $token" /var/mail/root
mkdir -p /tmp/mrx && chmod 777 /tmp/mrx
printf 'queue_directory = /tmp/mrx/queue\n' >/tmp/mrx/main.cf
token2=cf-$$-$RANDOM
check "MAIL_CONFIG=/tmp/mrx sendmail root as mrtest" as_user mrtest sh -c "printf 'Subject: $token2\n\nhi\n' | MAIL_CONFIG=/tmp/mrx /usr/sbin/sendmail root"
check "-C /tmp/mrx as mrtest" as_user mrtest sh -c "printf 'Subject: $token2-C\n\nhi\n' | /usr/sbin/sendmail -C /tmp/mrx root"
check "MAIL_CONFIG was ignored: the real queue delivered it" wait_for 20 grep -q "Subject: $token2\$" /var/mail/root
check "-C was ignored too" wait_for 20 grep -q "Subject: $token2-C" /var/mail/root
check "nothing went to /tmp/mrx/queue" test ! -e /tmp/mrx/queue
rm -rf /tmp/mrx

echo "untouched" >/tmp/mr-target
ln -sfn /tmp/mr-target /var/mail/victim
token3=sym-$$-$RANDOM
printf 'Subject: %s\n\nowned\n' "$token3" | as_user mrtest /usr/sbin/sendmail victim
check "the delivery to a symlinked /var/mail/victim was attempted" wait_for 20 grep -q "to=<victim@" /var/log/mailroom.log
check "and refused: the symlink's target is untouched" grep -qx untouched /tmp/mr-target
check "the symlink is still a symlink" test -L /var/mail/victim
check "the log says it was not sent" sh -c "grep 'to=<victim@' /var/log/mailroom.log | grep -qv 'status=sent'"
rm -f /var/mail/victim /tmp/mr-target

# A message the daemon has picked up and deferred (its relay refuses connections):
# root's and the group's (0640), so mrtest's set-gid mailq lists it but mrtest cannot
# read it.
mailroom config set 'relayhost=[127.0.0.1]:9' >/dev/null && mailroom reload >/dev/null
sleep 1
printf 'Subject: deferred\n\nx\n' | as_user mrtest /usr/sbin/sendmail someone@example.com
check "a remote message is deferred" wait_for 20 sh -c 'ls /var/spool/mailroom/deferred | grep -q .'
deferred=$(ls /var/spool/mailroom/deferred | head -1)
check "it is root:mailroom 0640" test "$(mode_of "/var/spool/mailroom/deferred/$deferred")" = "640 root:mailroom"
out=$(as_user mrtest /usr/bin/mailq 2>&1)
check "mrtest's mailq (set-gid) lists it" grep -q "^$deferred" <<<"$out"
check "without warnings" bash -c "! grep -q warning <<<\"\$1\"" _ "$out"
check "mrtest cannot read the queue file itself" bash -c "! setpriv --reuid=mrtest --regid=mrtest --init-groups cat /var/spool/mailroom/deferred/$deferred >/dev/null 2>&1"
check "mrtest cannot list the deferred queue" bash -c "! setpriv --reuid=mrtest --regid=mrtest --init-groups ls /var/spool/mailroom/deferred >/dev/null 2>&1"
postsuper -d ALL >/dev/null 2>&1
mailroom config unset relayhost >/dev/null

check "the daemon stops (mailroom stop)" mailroom stop

# --- remove, purge -----------------------------------------------------------------
check "dpkg -r removes" dpkg -r mailroom
check "binaries, link and overrides are gone" sh -c '! test -e /usr/sbin/sendmail && ! test -e /usr/bin/mailq && ! test -L /usr/lib/sendmail && ! dpkg-statoverride --list /usr/sbin/sendmail >/dev/null'
check "remove keeps the queue and the configuration" test -d /var/spool/mailroom -a -f /etc/mailroom/main.cf
check "dpkg -P purges" dpkg -P mailroom
check "purge removes the queue, the configuration and the group" sh -c '! test -e /var/spool/mailroom && ! test -e /etc/mailroom && ! getent group mailroom >/dev/null'

# --- install.sh ----------------------------------------------------------------------
snapshot() { find "$@" -printf '%p %m %u %g %s %T@\n' 2>/dev/null | sort; }
stage=$(mktemp -d)
check "install.sh --destdir" ./install.sh --destdir "$stage" --bin-dir target/release
snapshot "$stage" >/tmp/mr-s1
./install.sh --destdir "$stage" --bin-dir target/release >/dev/null
snapshot "$stage" >/tmp/mr-s2
check "install.sh --destdir twice changes nothing" cmp -s /tmp/mr-s1 /tmp/mr-s2
./install.sh uninstall --destdir "$stage" --purge >/dev/null
check "install.sh uninstall --destdir --purge leaves no file" test -z "$(find "$stage" -type f -o -type l)"
rm -rf "$stage"

check "install.sh (for real)" ./install.sh --bin-dir target/release --no-start
check "installed with the set-gid modes, groups, queue, link, config and unit" installed_right
paths="/usr/sbin /usr/bin /usr/lib/sendmail /usr/share/man /etc/mailroom /var/spool/mailroom /usr/lib/systemd/system/mailroom.service"
# shellcheck disable=SC2086
snapshot $paths >/tmp/mr-s1
./install.sh --bin-dir target/release --no-start >/dev/null
# shellcheck disable=SC2086
snapshot $paths >/tmp/mr-s2
check "install.sh twice changes nothing" cmp -s /tmp/mr-s1 /tmp/mr-s2
echo "myhostname = changed.example" >>/etc/mailroom/main.cf
check "install.sh uninstall" ./install.sh uninstall
check "uninstall keeps a changed main.cf and the queue" test -f /etc/mailroom/main.cf -a -d /var/spool/mailroom
check "uninstall removed the programs" sh -c '! test -e /usr/sbin/sendmail && ! test -e /usr/bin/mailq && ! test -e /usr/sbin/mailroom'
check "install.sh uninstall --purge" ./install.sh uninstall --purge
check "purge removed the queue, the configuration and the group" sh -c '! test -e /var/spool/mailroom && ! test -e /etc/mailroom && ! getent group mailroom >/dev/null'

for u in mrtest victim; do
  userdel --remove "$u" >/dev/null 2>&1
done
rm -f /var/mail/mrtest /var/mail/victim /tmp/mr-s1 /tmp/mr-s2 /var/log/mailroom.log
finish
