#!/bin/sh
# Install (or uninstall) mailroom as the machine's MTA.
#
#   ./install.sh [install] [--prefix DIR] [--destdir DIR] [--bin-dir DIR] [--no-start]
#   ./install.sh uninstall [--prefix DIR] [--destdir DIR] [--purge]
#
# install (the default) builds the release binaries (cargo build --release --locked)
# unless --bin-dir names a directory that already holds them, then installs:
#   $PREFIX/sbin/sendmail      2755 root:mailroom  (set-gid: writes maildrop/)
#   $PREFIX/bin/mailq          2755 root:mailroom  (set-gid: reads the queue's envelopes)
#   $PREFIX/sbin/postsuper, $PREFIX/sbin/mailroom, $PREFIX/bin/newaliases,
#   $PREFIX/bin/mail.mailroom  0755 root:root; $PREFIX/bin/mail is a link to it, or, with
#     update-alternatives (Debian), mail and mailx are alternatives, as with bsd-mailx
#     and mailutils, whose higher priority keeps them the default when installed
#   $PREFIX/lib/sendmail -> ../sbin/sendmail
#   man pages in $PREFIX/share/man/man{1,5,8}, bash/zsh/fish completions for
#   mailroom, mailq and newaliases,
#   /etc/mailroom/main.cf      the defaults, commented out (only when absent)
#   $PREFIX/lib/systemd/system/mailroom.service
#   the group mailroom (groupadd --system), the user mailroom (useradd --system; its
#   primary group mailroom, home /var/spool/mailroom, no login shell), as which the SMTP
#   sessions run (mail_owner), and the queue /var/spool/mailroom, made and checked by
#   `postsuper -s` (owner mailroom; modes: maildrop 1730, the rest 0750, group mailroom)
# and, when systemd runs, enables and starts mailroom.service (not with --no-start).
#
# Running it twice changes nothing the second time. uninstall stops the daemon and
# removes what install put there, and the directories install made once they are empty
# (install lists them in /var/lib/mailroom/install.sh.dirs), but keeps
# /etc/mailroom/main.cf if it was changed and the queue (mail may still be in it) unless
# --purge is given; --purge also removes the group, unless the user mailroom still has it.
# The user is never removed: files may still be its. DESTDIR and PREFIX may also be given
# in the environment. With a DESTDIR nothing outside it is touched (no user or group, no
# systemd, no update-alternatives), for packaging and tests.
set -eu

action=install
PREFIX=${PREFIX:-/usr}
DESTDIR=${DESTDIR:-}
bin_dir=
start=yes
purge=no
group=mailroom
user=mailroom

while [ $# -gt 0 ]; do
  case $1 in
    install|uninstall) action=$1 ;;
    --prefix) PREFIX=$2; shift ;;
    --prefix=*) PREFIX=${1#*=} ;;
    --destdir) DESTDIR=$2; shift ;;
    --destdir=*) DESTDIR=${1#*=} ;;
    --bin-dir) bin_dir=$2; shift ;;
    --bin-dir=*) bin_dir=${1#*=} ;;
    --no-start) start=no ;;
    --purge) purge=yes ;;
    -h|--help) sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown argument: $1 (try --help)" >&2; exit 64 ;;
  esac
  shift
done

here=$(cd "$(dirname "$0")" && pwd)
D=$DESTDIR
while [ "${#D}" -gt 1 ] && [ "${D%/}" != "$D" ]; do D=${D%/}; done
sbin=$PREFIX/sbin
bin=$PREFIX/bin
man=$PREFIX/share/man
unit=$PREFIX/lib/systemd/system/mailroom.service
etc=/etc/mailroom
spool=/var/spool/mailroom
completed="mailroom mailq newaliases"   # the clap-based programs
bash_completions=$PREFIX/share/bash-completion/completions
zsh_completions=$PREFIX/share/zsh/vendor-completions
fish_completions=$PREFIX/share/fish/vendor_completions.d
real=no
[ -z "$D" ] && real=yes
# The directories install made (real installs only: everything in a DESTDIR is ours).
made_list=/var/lib/mailroom/install.sh.dirs
alternatives=no
[ "$real" = yes ] && command -v update-alternatives >/dev/null && alternatives=yes

say() { echo "install.sh: $*"; }
die() { echo "install.sh: fatal: $*" >&2; exit 1; }

if [ "$real" = yes ] && [ "$(id -u)" != 0 ]; then
  die "run as root (or give --destdir to install into a staging directory)"
fi

systemd_running() { [ "$real" = yes ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null; }

# make_dir DIR: mkdir -p, noting each directory it makes in $tmp/made (for uninstall).
make_dir() {
  [ -d "$1" ] && return 0
  make_dir "$(dirname "$1")"
  mkdir "$1"
  echo "$1" >>"$tmp/made"
}

# put SRC DEST MODE: copy only when the content differs, then set the mode, so that a
# second run leaves every file as it was.
put() {
  make_dir "$(dirname "$2")"
  if ! cmp -s "$1" "$2" 2>/dev/null; then
    cp "$1" "$2.mailroom-new" && mv -f "$2.mailroom-new" "$2"
    say "installed $2"
  fi
  chmod "$3" "$2"
}

# setgid_file FILE: root:mailroom 2755. chgrp clears the set-gid bit, so it comes first,
# and only when the group is wrong (a no-op chown would still clear the bit).
setgid_file() {
  if [ "$real" = yes ] || getent group "$group" >/dev/null 2>&1; then
    if [ "$(stat -c %G "$1")" != "$group" ] || [ "$(stat -c %U "$1")" != root ]; then
      chown "root:$group" "$1"
    fi
    chmod 2755 "$1"
  else
    # A staging directory on a machine without the group: the packager sets it.
    chmod 0755 "$1"
  fi
}

default_main_cf() {
  echo "# /etc/mailroom/main.cf: mailroom's configuration (Postfix's main.cf syntax)."
  echo "# Every parameter is shown with its default, commented out. Uncomment and change"
  echo "# what you need, or use: mailroom config set name=value. See mailroom.cf(5)."
  echo "#"
  "$1" config -d | sed 's/^/#/'
}

binaries="sendmail mailq postsuper newaliases mail mailroom"

find_binaries() {
  if [ -z "$bin_dir" ]; then
    command -v cargo >/dev/null || die "cargo not found: build first, or give --bin-dir"
    (cd "$here" && cargo build --release --locked --quiet) || die "cargo build failed"
    bin_dir=$here/target/release
  fi
  for b in $binaries; do
    [ -x "$bin_dir/$b" ] || die "$bin_dir/$b is missing"
  done
}

# record_made_dirs: adds the directories this run made to $made_list (also when the
# install stops half way, so that uninstall still finds them).
record_made_dirs() {
  if [ "$real" = yes ] && [ -s "$tmp/made" ]; then
    make_dir "$(dirname "$made_list")"
    cat "$tmp/made" >>"$made_list"
  fi
  rm -rf "$tmp"
}

# mail_alternative: Debian's mail readers (bsd-mailx, mailutils) make $bin/mail a slave
# of the mailx alternative (update-alternatives refuses mail as a group of its own then);
# ours joins that group, with a lower priority than theirs. Never fatal: mail.mailroom
# is installed either way.
mail_alternative() {
  # An older install.sh made mail a group of its own: leave it first.
  if update-alternatives --query mail >/dev/null 2>&1; then
    update-alternatives --remove mail "$bin/mail.mailroom" >/dev/null 2>&1 || true
  fi
  if update-alternatives --query mailx 2>/dev/null | grep -qx "Alternative: $bin/mail.mailroom"; then
    return 0
  fi
  if update-alternatives --install "$bin/mailx" mailx "$bin/mail.mailroom" 20 \
    --slave "$bin/mail" mail "$bin/mail.mailroom" \
    --slave "$man/man1/mail.1" mail.1 "$man/man1/mail.mailroom.1" \
    --slave "$man/man1/mailx.1" mailx.1 "$man/man1/mail.mailroom.1" >/dev/null; then
    say "registered $bin/mail.mailroom as an alternative for mailx and mail"
  else
    say "warning: could not register $bin/mail.mailroom as an alternative for mail (see update-alternatives --display mailx); skipped"
  fi
}

do_install() {
  find_binaries
  tmp=$(mktemp -d)
  trap record_made_dirs EXIT
  if [ "$real" = yes ] && ! getent group "$group" >/dev/null; then
    groupadd --system "$group"
    say "created group $group"
  fi
  if [ "$real" = yes ] && ! getent passwd "$user" >/dev/null; then
    useradd --system --gid "$group" --home-dir "$spool" --no-create-home \
      --shell /usr/sbin/nologin "$user"
    say "created user $user"
  fi
  put "$bin_dir/sendmail" "$D$sbin/sendmail" 0755
  setgid_file "$D$sbin/sendmail"
  put "$bin_dir/mailq" "$D$bin/mailq" 0755
  setgid_file "$D$bin/mailq"
  put "$bin_dir/postsuper" "$D$sbin/postsuper" 0755
  put "$bin_dir/mailroom" "$D$sbin/mailroom" 0755
  put "$bin_dir/newaliases" "$D$bin/newaliases" 0755
  # mail: an alternative where update-alternatives runs (its page too), else a link
  # where nothing else provides one.
  put "$bin_dir/mail" "$D$bin/mail.mailroom" 0755
  if [ "$alternatives" = yes ]; then
    put "$here/man/mail.1" "$man/man1/mail.mailroom.1" 0644
    # An older install.sh's mail.1: the alternative's link goes there now.
    if [ -f "$man/man1/mail.1" ] && [ ! -L "$man/man1/mail.1" ] && cmp -s "$here/man/mail.1" "$man/man1/mail.1"; then
      rm -f "$man/man1/mail.1"
    fi
    mail_alternative
  elif [ ! -e "$D$bin/mail" ] && [ ! -L "$D$bin/mail" ]; then
    ln -s mail.mailroom "$D$bin/mail"
  fi
  make_dir "$D$PREFIX/lib"
  if [ "$(readlink "$D$PREFIX/lib/sendmail" 2>/dev/null)" != ../sbin/sendmail ]; then
    ln -sfn ../sbin/sendmail "$D$PREFIX/lib/sendmail"
    say "linked $PREFIX/lib/sendmail"
  fi
  for page in "$here"/man/*.[158]; do
    section=${page##*.}
    # With alternatives, mail.1 is the alternative's link to mail.mailroom.1.
    [ "$alternatives" = yes ] && [ "$(basename "$page")" = mail.1 ] && continue
    put "$page" "$D$man/man$section/$(basename "$page")" 0644
  done
  for p in $completed; do
    "$bin_dir/mailroom" completions bash --program "$p" >"$tmp/$p.bash"
    "$bin_dir/mailroom" completions zsh --program "$p" >"$tmp/_$p"
    "$bin_dir/mailroom" completions fish --program "$p" >"$tmp/$p.fish"
    put "$tmp/$p.bash" "$D$bash_completions/$p" 0644
    put "$tmp/_$p" "$D$zsh_completions/_$p" 0644
    put "$tmp/$p.fish" "$D$fish_completions/$p.fish" 0644
  done
  put "$here/debian/mailroom.service" "$D$unit" 0644
  make_dir "$D$etc"
  if [ ! -e "$D$etc/main.cf" ]; then
    default_main_cf "$bin_dir/mailroom" >"$tmp/main.cf"
    put "$tmp/main.cf" "$D$etc/main.cf" 0644
  fi
  # The queue, made and checked by the same code as `postsuper -s`.
  make_dir "$D$(dirname "$spool")"
  if [ "$real" = yes ]; then
    [ -d "$spool" ] || echo "$spool" >>"$tmp/made"
    "$D$sbin/postsuper" -s
  else
    mkdir -p "$tmp/cf"
    sg=
    getent group "$group" >/dev/null 2>&1 && sg=$group
    printf 'queue_directory = %s\nsetgid_group = %s\n' "$D$spool" "$sg" >"$tmp/cf/main.cf"
    "$bin_dir/postsuper" -c "$tmp/cf" -s
  fi
  if systemd_running; then
    systemctl daemon-reload
    if [ "$start" = yes ]; then
      systemctl enable --now mailroom.service >/dev/null 2>&1 || say "could not start mailroom.service: see systemctl status mailroom"
    fi
  fi
  say "done"
}

# remove_made_dirs: removes the directories install made, deepest first, when empty.
# Those still in use (a kept queue or main.cf) stay listed for a later uninstall.
remove_made_dirs() {
  list_dir=$(dirname "$made_list")
  if [ "$real" = yes ]; then
    [ -f "$made_list" ] || return 0
    made=$(sort -ru "$made_list")
  else
    # A staging directory: every directory below DESTDIR that install may have made.
    made=$(
      for d in "$D$sbin" "$D$bin" "$D$PREFIX/lib" "$D$man/man1" "$D$man/man5" "$D$man/man8" \
        "$D$bash_completions" "$D$zsh_completions" "$D$fish_completions" \
        "$D$(dirname "$unit")" "$D$etc" "$D$spool"; do
        while [ "$d" != "$D" ] && [ "$d" != / ] && [ "$d" != . ]; do
          echo "$d"
          d=$(dirname "$d")
        done
      done | sort -ru
    )
  fi
  printf '%s\n' "$made" | while IFS= read -r d; do
    if [ -n "$d" ] && [ "$d" != "$list_dir" ] && [ -d "$d" ] && rmdir "$d" 2>/dev/null; then
      say "removed $d"
    fi
  done
  [ "$real" = yes ] || return 0
  kept=$(printf '%s\n' "$made" | while IFS= read -r d; do
    if [ -n "$d" ] && [ "$d" != "$list_dir" ] && [ -d "$d" ]; then echo "$d"; fi
  done)
  if [ -n "$kept" ]; then
    printf '%s\n' "$made" | while IFS= read -r d; do
      if [ -n "$d" ] && [ -d "$d" ]; then echo "$d"; fi
    done >"$made_list"
  else
    rm -f "$made_list"
    if printf '%s\n' "$made" | grep -qxF "$list_dir" && rmdir "$list_dir" 2>/dev/null; then
      say "removed $list_dir"
    fi
  fi
}

remove() {
  for f in "$@"; do
    if [ -e "$f" ] || [ -L "$f" ]; then
      rm -f "$f"
      say "removed $f"
    fi
  done
}

do_uninstall() {
  if systemd_running && [ -e "$unit" ]; then
    systemctl disable --now mailroom.service >/dev/null 2>&1 || true
  elif [ "$real" = yes ] && [ -x "$sbin/mailroom" ]; then
    "$sbin/mailroom" stop >/dev/null 2>&1 || true
  fi
  # main.cf goes only if it is still what install wrote (or --purge).
  if [ -e "$D$etc/main.cf" ] && [ "$purge" = yes ]; then
    remove "$D$etc/main.cf"
  elif [ -e "$D$etc/main.cf" ] && [ -x "$D$sbin/mailroom" ]; then
    tmp=$(mktemp)
    default_main_cf "$D$sbin/mailroom" >"$tmp"
    if cmp -s "$tmp" "$D$etc/main.cf"; then
      remove "$D$etc/main.cf"
    else
      say "kept $etc/main.cf (changed since install)"
    fi
    rm -f "$tmp"
  fi
  if [ "$(readlink "$D$PREFIX/lib/sendmail" 2>/dev/null)" = ../sbin/sendmail ]; then
    remove "$D$PREFIX/lib/sendmail"
  fi
  if [ "$alternatives" = yes ]; then
    update-alternatives --remove mailx "$bin/mail.mailroom" >/dev/null 2>&1 || true
    update-alternatives --remove mail "$bin/mail.mailroom" >/dev/null 2>&1 || true
  fi
  if [ "$(readlink "$D$bin/mail" 2>/dev/null)" = mail.mailroom ]; then
    remove "$D$bin/mail"
  fi
  remove "$D$sbin/sendmail" "$D$bin/mailq" "$D$sbin/postsuper" "$D$sbin/mailroom" \
    "$D$bin/newaliases" "$D$bin/mail.mailroom" "$D$unit" "$D$man/man1/mail.mailroom.1"
  for p in $completed; do
    remove "$D$bash_completions/$p" "$D$zsh_completions/_$p" "$D$fish_completions/$p.fish"
  done
  for page in "$here"/man/*.[158]; do
    f=$D$man/man${page##*.}/$(basename "$page")
    # A link is not ours: mail.1 may be another mailx's, kept by update-alternatives.
    [ -L "$f" ] || remove "$f"
  done
  systemd_running && systemctl daemon-reload
  if [ "$purge" = yes ]; then
    if [ -d "$D$spool" ]; then
      rm -rf "$D$spool"
      say "removed $spool"
    fi
    [ -d "$D$etc" ] && rmdir "$D$etc" 2>/dev/null || true
    if [ "$real" = yes ] && getent passwd "$user" >/dev/null; then
      say "kept the user $user and its group $group"
    elif [ "$real" = yes ] && getent group "$group" >/dev/null; then
      groupdel "$group" && say "removed group $group"
    fi
  else
    [ -d "$D$spool" ] && say "kept the queue $spool (remove it with --purge)"
  fi
  rmdir "$D$etc" 2>/dev/null || true
  remove_made_dirs
  say "done"
}

case $action in
  install) do_install ;;
  uninstall) do_uninstall ;;
esac
