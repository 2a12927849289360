#!/bin/sh
# Builds the Debian package: target/debian/mailroom_VERSION_ARCH.deb.
# Needs cargo-deb (cargo install cargo-deb --locked).
set -eu
cd "$(dirname "$0")/.."
cargo build --release --locked
mkdir -p target/completions
target/release/mailroom completions bash >target/completions/mailroom.bash
target/release/mailroom completions zsh >target/completions/_mailroom
target/release/mailroom completions fish >target/completions/mailroom.fish
cargo deb --no-build --locked "$@"
