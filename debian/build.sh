#!/bin/sh
# Builds the Debian package: target/debian/mailroom_VERSION_ARCH.deb.
# Needs cargo-deb (cargo install cargo-deb --locked).
set -eu
cd "$(dirname "$0")/.."
cargo build --release --locked
mkdir -p target/completions
for p in mailroom mailq newaliases; do
  target/release/mailroom completions bash --program $p >target/completions/$p.bash
  target/release/mailroom completions zsh --program $p >target/completions/_$p
  target/release/mailroom completions fish --program $p >target/completions/$p.fish
done
cargo deb --no-build --locked "$@"
