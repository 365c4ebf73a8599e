#!/usr/bin/env bash
# Exact data match (issue 7): a 10-million-record customer table indexed, loaded, and
# what EDM costs the dense-corpus scan. Targets: load < 10 s and < 300 MB; with EDM on,
# the dense scan keeps >= 80% of its speed.
#
#   benches/edm_bench.sh                 # RECORDS=10000000 ROUNDS=10, work dir in /tmp
#
# Steps (examples/edm_bench.rs does the work):
#   1. build: write a CSV of RECORDS customers (id, email, phone; the first ones are the
#      dense corpus's own emails, every other one) and index its email column with
#      `egress-dlp edm build` semantics (key created 0600, no plaintext in the index);
#   2. load: three fresh processes each load the index: seconds and the RSS it adds;
#   3. scan: the 16 MiB dense corpus, pinned to one core, with the shipped pack and with
#      the same pack whose email rule has `edm: {field: email}`, in alternating rounds.
set -euo pipefail
cd "$(dirname "$0")/.."
RECORDS=${RECORDS:-10000000}
ROUNDS=${ROUNDS:-10}
WORK=${WORK:-$(mktemp -d /tmp/edm-bench.XXXXXX)}
trap 'rm -rf "$WORK"' EXIT

cargo build --release --quiet --example edm_bench
BIN=target/release/examples/edm_bench
echo "== build ($RECORDS records) in $WORK"
"$BIN" build "$RECORDS" "$WORK"
echo "== load (three processes)"
for _ in 1 2 3; do "$BIN" load "$WORK"; done
echo "== scan (dense corpus, one core, $ROUNDS rounds)"
taskset -c 0 "$BIN" scan "$WORK" "$ROUNDS"
