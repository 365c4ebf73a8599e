#!/usr/bin/env bash
# Peak memory and throughput of `egress-dlp scan` on a large file.
#
#   benches/scan_rss.sh [FILE]
#
# Builds the release binary, and unless FILE is given generates a mixed corpus (1 MiB
# pieces alternating benign egress and dense customer exports, see benches/corpus/mod.rs)
# of $SIZE bytes (default 1GiB) in a temporary directory, then runs
#
#   /usr/bin/time -v target/release/egress-dlp scan --rules rules --format json FILE
#
# and prints the verdict, the throughput (wall clock and CPU time) and the peak resident
# set size. Exits non-zero if the scan failed (exit status 2) or if the peak RSS is
# 64 MiB or more. Pin it to one core for stable numbers: `taskset -c 0 benches/scan_rss.sh`.
#
#   SIZE=256MiB benches/scan_rss.sh      # a quicker run
set -euo pipefail

cd "$(dirname "$0")/.."
limit_kib=$((64 * 1024))
size="${SIZE:-1GiB}"

if [[ ! -x /usr/bin/time ]]; then
    echo "scan_rss: /usr/bin/time missing, installing the 'time' package" >&2
    if [[ $(id -u) -ne 0 ]]; then
        echo "scan_rss: not root; install GNU time (apt-get install time) and retry" >&2
        exit 2
    fi
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null
fi

cargo build --release --quiet --bin egress-dlp --example gen_corpus

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
if [[ $# -ge 1 ]]; then
    file="$1"
else
    file="$tmp/corpus-mixed.txt"
    target/release/examples/gen_corpus mixed "$size" "$file"
fi
bytes=$(stat -c %s "$file")

status=0
/usr/bin/time -v -o "$tmp/time.txt" \
    target/release/egress-dlp scan --rules rules --format json "$file" >"$tmp/out.json" || status=$?
if [[ $status -ge 2 ]]; then
    echo "scan_rss: scan failed with exit status $status" >&2
    cat "$tmp/out.json" "$tmp/time.txt" >&2
    exit 2
fi

rss_kib=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$tmp/time.txt")
wall=$(awk -F': ' '/Elapsed \(wall clock\) time/ {print $2}' "$tmp/time.txt")
user=$(awk -F': ' '/User time \(seconds\)/ {print $2}' "$tmp/time.txt")
sys=$(awk -F': ' '/System time \(seconds\)/ {print $2}' "$tmp/time.txt")
# Elapsed is h:mm:ss or m:ss.ss.
wall_s=$(awk -v t="$wall" 'BEGIN { n = split(t, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; print s }')
verdict=$(grep -o '"verdict":"[a-z]*"' "$tmp/out.json" | head -1 | cut -d'"' -f4)

awk -v b="$bytes" -v w="$wall_s" -v u="$user" -v s="$sys" -v r="$rss_kib" -v v="$verdict" -v f="$file" 'BEGIN {
    printf "file:        %s (%d bytes, %.1f MiB)\n", f, b, b / 1048576
    printf "verdict:     %s\n", v
    printf "wall:        %.2f s  -> %.1f MB/s\n", w, (w > 0 ? b / w / 1e6 : 0)
    printf "cpu:         %.2f s user + %.2f s sys -> %.1f MB/s\n", u, s, ((u + s) > 0 ? b / (u + s) / 1e6 : 0)
    printf "Maximum resident set size: %d KiB (%.1f MiB)\n", r, r / 1024
}'

if [[ $rss_kib -ge $limit_kib ]]; then
    echo "scan_rss: FAIL: peak RSS ${rss_kib} KiB >= ${limit_kib} KiB (64 MiB)" >&2
    exit 1
fi
echo "scan_rss: OK: peak RSS under 64 MiB"
