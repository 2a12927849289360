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
# the machine (installs the package, and Debian's bsd-mailx beside it and beside
# install.sh; adds users mrtest and victim; at the end, or when it is stopped, it removes
# them, the packages it installed and mailroom), so it refuses to run where another MTA
# is installed; .ci/run runs it on the throwaway CI machine. The last line is
# "N passed, N failed"; the exit status is 1 if anything failed.
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

# Whatever happens, leave the machine as it was: no mailroom, none of the packages this
# test installed (bsd-mailx, what it pulled in, the stand-in MTA below), no test users.
packages_before=$(dpkg-query -W -f='${Package}\n' | sort)
# root's mailbox is set aside for the test and put back after: one that is already over
# mailbox_size_limit (a benchmark's bounces, say) would refuse the test's message.
root_mbox_saved=""
if [ -e /var/mail/root ]; then
  root_mbox_saved=$(mktemp /var/mail/.root.saved-by-package-test.XXXXXX)
  mv -f /var/mail/root "$root_mbox_saved"
fi
cleanup() {
  [ -x /usr/sbin/mailroom ] && /usr/sbin/mailroom stop >/dev/null 2>&1
  if dpkg-query -W mailroom >/dev/null 2>&1; then
    dpkg --purge --force-depends mailroom >/dev/null 2>&1
  elif [ -e /usr/sbin/mailroom ]; then
    ./install.sh uninstall --purge >/dev/null 2>&1
  fi
  local extra
  extra=$(comm -13 <(echo "$packages_before") <(dpkg-query -W -f='${Package}\n' | sort))
  # shellcheck disable=SC2086
  [ -z "$extra" ] || dpkg --purge --force-depends $extra >/dev/null 2>&1
  for u in mrtest victim; do
    id "$u" >/dev/null 2>&1 && userdel --remove "$u" >/dev/null 2>&1
  done
  rm -f /var/mail/root
  [ -z "$root_mbox_saved" ] || mv -f "$root_mbox_saved" /var/mail/root
  rm -rf /var/mail/mrtest /var/mail/victim /tmp/mr-s1 /tmp/mr-s2 /tmp/mr-d1 /tmp/mr-d2 \
    /var/log/mailroom.log /tmp/mr-stand-in-mta.deb
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# apt_install PACKAGE...: quietly, updating the package lists if they are missing.
apt_install() {
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1 ||
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "$@" >/dev/null; }
}
# mail_alternatives: the mailx alternatives (Debian's mail readers make /usr/bin/mail a
# slave of mailx), one per line.
mail_alternatives() { update-alternatives --query mailx 2>/dev/null | sed -n 's/^Alternative: //p'; }
ours_is_a_mailx_alternative() { mail_alternatives | grep -qx /usr/bin/mail.mailroom; }
mail_is() { [ "$(readlink -f /usr/bin/mail)" = "$1" ]; }

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
    [ "$(id -gn mailroom)" = mailroom ] &&
    [ "$(getent passwd mailroom | cut -d: -f7)" = /usr/sbin/nologin ] &&
    [ "$(mode_of /var/spool/mailroom/maildrop)" = "1730 mailroom:mailroom" ] &&
    [ "$(mode_of /var/spool/mailroom/deferred)" = "750 mailroom:mailroom" ] &&
    [ "$(mode_of /var/spool/mailroom/hold)" = "750 mailroom:mailroom" ] &&
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
# mail_owner's and the group's (0640), so mrtest's set-gid mailq lists it but mrtest
# cannot read it.
mailroom config set 'relayhost=[127.0.0.1]:9' >/dev/null && mailroom reload >/dev/null
sleep 1
printf 'Subject: deferred\n\nx\n' | as_user mrtest /usr/sbin/sendmail someone@example.com
check "a remote message is deferred" wait_for 20 sh -c 'ls /var/spool/mailroom/deferred | grep -q .'
deferred=$(ls /var/spool/mailroom/deferred | head -1)
check "it is mailroom:mailroom 0640 (mail_owner's)" test "$(mode_of "/var/spool/mailroom/deferred/$deferred")" = "640 mailroom:mailroom"
out=$(as_user mrtest /usr/bin/mailq 2>&1)
check "mrtest's mailq (set-gid) lists it" grep -q "^$deferred" <<<"$out"
check "without warnings" bash -c "! grep -q warning <<<\"\$1\"" _ "$out"
check "mrtest cannot read the queue file itself" bash -c "! setpriv --reuid=mrtest --regid=mrtest --init-groups cat /var/spool/mailroom/deferred/$deferred >/dev/null 2>&1"
check "mrtest cannot list the deferred queue" bash -c "! setpriv --reuid=mrtest --regid=mrtest --init-groups ls /var/spool/mailroom/deferred >/dev/null 2>&1"
postsuper -d ALL >/dev/null 2>&1
mailroom config unset relayhost >/dev/null

check "the daemon stops (mailroom stop)" mailroom stop

# --- beside Debian's mailx -----------------------------------------------------------
# bsd-mailx makes /usr/bin/mail a slave of its mailx alternative; it depends on an MTA,
# which the package provides.
check "bsd-mailx installs beside the package" apt_install bsd-mailx
check "mail.mailroom is one of the mailx alternatives" ours_is_a_mailx_alternative
check "bsd-mailx (the higher priority) stays /usr/bin/mail" mail_is /usr/bin/bsd-mailx
check "dpkg -i again beside bsd-mailx" dpkg -i "$deb"
check "bsd-mailx removes" sh -c 'apt-get purge -y -qq bsd-mailx >/dev/null'
check "then /usr/bin/mail is mailroom's" mail_is /usr/bin/mail.mailroom

# --- remove, purge -----------------------------------------------------------------
check "dpkg -r removes" dpkg -r mailroom
check "binaries, link and overrides are gone" sh -c '! test -e /usr/sbin/sendmail && ! test -e /usr/bin/mailq && ! test -L /usr/lib/sendmail && ! dpkg-statoverride --list /usr/sbin/sendmail >/dev/null'
check "remove keeps the queue and the configuration" test -d /var/spool/mailroom -a -f /etc/mailroom/main.cf
check "remove takes mail.mailroom out of the alternatives" sh -c '! test -e /usr/bin/mail && ! update-alternatives --query mailx >/dev/null 2>&1'
check "dpkg -P purges" dpkg -P mailroom
check "purge removes the queue and the configuration, keeps the user" sh -c '! test -e /var/spool/mailroom && ! test -e /etc/mailroom && id mailroom >/dev/null'

# --- install.sh ----------------------------------------------------------------------
snapshot() { find "$@" -printf '%p %m %u %g %s %T@\n' 2>/dev/null | sort; }
stage=$(mktemp -d)
check "install.sh --destdir" ./install.sh --destdir "$stage" --bin-dir target/release
snapshot "$stage" >/tmp/mr-s1
./install.sh --destdir "$stage" --bin-dir target/release >/dev/null
snapshot "$stage" >/tmp/mr-s2
check "install.sh --destdir twice changes nothing" cmp -s /tmp/mr-s1 /tmp/mr-s2
./install.sh uninstall --destdir "$stage" --purge >/dev/null
check "install.sh uninstall --destdir --purge leaves no file and no directory" test -z "$(find "$stage" -mindepth 1)"
rm -rf "$stage"

# install.sh beside bsd-mailx, which depends on an MTA: install.sh registers none with
# dpkg, so a package that only Provides mail-transport-agent stands in.
stand_in=$(mktemp -d)
mkdir "$stand_in/DEBIAN"
printf '%s\n' "Package: mailroom-test-stand-in-mta" "Version: 1" "Architecture: all" \
  "Maintainer: mailroom tests <root@localhost>" "Provides: mail-transport-agent" \
  "Description: stands in for an MTA while tests/package.sh runs" >"$stand_in/DEBIAN/control"
dpkg-deb --build "$stand_in" /tmp/mr-stand-in-mta.deb >/dev/null
rm -rf "$stand_in"
check "a stand-in MTA installs" sh -c 'dpkg -i /tmp/mr-stand-in-mta.deb >/dev/null'
check "bsd-mailx installs beside it" apt_install bsd-mailx
# Every directory, to check that uninstall --purge removes the ones install.sh made.
dirs() { find /usr /etc /var/lib /var/spool /var/mail -xdev -type d 2>/dev/null | sort; }
dirs >/tmp/mr-d1

check "install.sh (for real)" ./install.sh --bin-dir target/release --no-start
check "installed with the set-gid modes, groups, queue, link, config and unit" installed_right
check "mail.mailroom is one of the mailx alternatives" ours_is_a_mailx_alternative
check "bsd-mailx stays /usr/bin/mail" mail_is /usr/bin/bsd-mailx
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
check "uninstall took mail.mailroom out of the alternatives" sh -c '! update-alternatives --query mailx | grep -q mailroom'
check "and left bsd-mailx's mail" mail_is /usr/bin/bsd-mailx
check "install.sh uninstall --purge" ./install.sh uninstall --purge
check "purge removed the queue and the configuration, kept the user" sh -c '! test -e /var/spool/mailroom && ! test -e /etc/mailroom && id mailroom >/dev/null'
dirs >/tmp/mr-d2
check "and every directory install.sh made" diff /tmp/mr-d1 /tmp/mr-d2
check "bsd-mailx and the stand-in MTA remove" sh -c 'dpkg --purge bsd-mailx mailroom-test-stand-in-mta >/dev/null'

finish
