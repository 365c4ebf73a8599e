#!/usr/bin/env bash
# The identity bench: small-request rate through egress-dlp with proxy authentication off,
# on (credentials verified once, then from the cache), and on with the cache defeated
# (`cache_ttl: 1ms`: argon2 for every request), side by side in one run on loopback.
#
#   benches/auth_bench.sh
#
# Starts examples/bench_upstream (the origin of benches/proxy_bench.sh) and three
# egress-dlp processes (the shipped rules/, tls.intercept false; two with a credentials
# file made by `egress-dlp passwd`), then runs `wrk -t2 -c32` GETs in absolute form through
# each, ROUNDS times in turn (off, cached, off, cached, ...), and prints each run and the
# medians. The uncached case runs once: it is bounded by argon2, not by the proxy.
#
# Knobs (environment): DURATION (wrk seconds, default 10), ROUNDS (default 3),
# CONNECTIONS (default 32), THREADS (default 2). Needs wrk (installed with apt-get when
# missing and root). Everything listens on 127.0.0.1 and is stopped on exit.
set -euo pipefail

cd "$(dirname "$0")/.."
duration="${DURATION:-10}"
rounds="${ROUNDS:-3}"
connections="${CONNECTIONS:-32}"
threads="${THREADS:-2}"
bin="${CARGO_TARGET_DIR:-target}/release"

say() { printf 'auth_bench: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

if ! command -v wrk >/dev/null 2>&1; then
    [[ $(id -u) -eq 0 ]] || die "missing wrk; install it (apt-get install wrk) or run as root"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
fi

say "building release binaries"
cargo build --release --quiet --bin egress-dlp --example bench_upstream

tmp="$(mktemp -d /tmp/auth-bench.XXXXXX)"
pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do
        timeout 10 tail --pid="$pid" -f /dev/null 2>/dev/null || kill -9 "$pid" 2>/dev/null || true
    done
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    local port
    while :; do
        port=$((20000 + RANDOM % 40000))
        if ! ss -Hltn "sport = :$port" 2>/dev/null | grep -q .; then
            echo "$port"
            return
        fi
    done
}

wait_port() {
    local i
    for i in $(seq 1 150); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    die "nothing listens on 127.0.0.1:$1 after 15 s ($2)"
}

$bin/examples/bench_upstream 0 1 >"$tmp/upstream.port" 2>"$tmp/upstream.log" &
pids+=($!)
for _ in $(seq 1 100); do [[ -s "$tmp/upstream.port" ]] && break; sleep 0.1; done
upstream_port="$(head -n1 "$tmp/upstream.port")"
[[ -n "$upstream_port" ]] || die "the origin did not start: $(cat "$tmp/upstream.log")"
origin="http://127.0.0.1:$upstream_port"

printf 'bench-password\n' | $bin/egress-dlp passwd bench >"$tmp/users.txt"
auth_header="Basic $(printf 'bench:bench-password' | base64)"

# start_proxy NAME EXTRA_YAML: starts egress-dlp, sets $port (not a subshell: $pids must
# keep the process for the cleanup).
start_proxy() {
    local name="$1" extra="$2" admin
    port="$(free_port)"
    admin="$(free_port)"
    mkdir -p "$tmp/$name"
    cat >"$tmp/$name/config.yaml" <<EOF
listen: 127.0.0.1:$port
admin_listen: 127.0.0.1:$admin
rules: rules
data_dir: $tmp/$name
tls:
  intercept: false
$extra
EOF
    RUST_LOG=warn $bin/egress-dlp serve --config "$tmp/$name/config.yaml" \
        >/dev/null 2>"$tmp/$name/log" &
    pids+=($!)
    wait_port "$port" "$name: $(tail -n5 "$tmp/$name/log")"
}

start_proxy off ""
off_port="$port"
start_proxy cached "policy:
  auth:
    credentials: $tmp/users.txt"
cached_port="$port"
start_proxy uncached "policy:
  auth:
    credentials: $tmp/users.txt
    cache_ttl: 1ms"
uncached_port="$port"

cat >"$tmp/script.lua" <<'EOF'
local target = os.getenv("TARGET")
local host = os.getenv("TARGET_HOST")
local auth = os.getenv("AUTH")
local headers = { ["Host"] = host }
if auth ~= nil and auth ~= "" then headers["Proxy-Authorization"] = auth end
request = function() return wrk.format("GET", target, headers) end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d %d\n", summary.requests, summary.duration,
    e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
EOF

# run_wrk NAME PORT AUTH SECONDS -> "rps p50_ms p99_ms"
run_wrk() {
    local name="$1" port="$2" auth="$3" secs="$4" line requests duration_us errors status p50 p99
    TARGET="$origin/" TARGET_HOST="127.0.0.1:$upstream_port" AUTH="$auth" \
        timeout 30 wrk -t"$threads" -c"$connections" -d2s -s "$tmp/script.lua" \
        "http://127.0.0.1:$port/" >/dev/null
    line="$(TARGET="$origin/" TARGET_HOST="127.0.0.1:$upstream_port" AUTH="$auth" \
        timeout $((secs + 30)) wrk -t"$threads" -c"$connections" -d"${secs}s" \
        -s "$tmp/script.lua" "http://127.0.0.1:$port/" | grep '^RESULT')"
    read -r _ requests duration_us errors status p50 p99 <<<"$line"
    if [[ $errors -ne 0 || $status -ne 0 ]]; then
        die "$name: $errors socket errors, $status non-2xx answers out of $requests requests"
    fi
    awk -v r="$requests" -v d="$duration_us" -v a="$p50" -v b="$p99" \
        'BEGIN { printf "%.0f %.3f %.3f\n", r / (d / 1e6), a / 1000, b / 1000 }'
}

say "wrk -t$threads -c$connections -d${duration}s, $rounds rounds: auth off, auth on (cached)"
off=()
cached=()
for round in $(seq 1 "$rounds"); do
    read -r rps p50 p99 <<<"$(run_wrk off "$off_port" "" "$duration")"
    off+=("$rps")
    printf 'round %d  auth off            %8.0f req/s  p50 %6.3f ms  p99 %6.3f ms\n' \
        "$round" "$rps" "$p50" "$p99"
    read -r rps p50 p99 <<<"$(run_wrk cached "$cached_port" "$auth_header" "$duration")"
    cached+=("$rps")
    printf 'round %d  auth on, cached     %8.0f req/s  p50 %6.3f ms  p99 %6.3f ms\n' \
        "$round" "$rps" "$p50" "$p99"
done
read -r rps p50 p99 <<<"$(run_wrk uncached "$uncached_port" "$auth_header" "$duration")"
printf 'once     auth on, no cache   %8.0f req/s  p50 %6.3f ms  p99 %6.3f ms\n' \
    "$rps" "$p50" "$p99"

median() { printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
m_off="$(median "${off[@]}")"
m_cached="$(median "${cached[@]}")"
awk -v o="$m_off" -v c="$m_cached" -v u="$rps" 'BEGIN {
    printf "\nmedian req/s: auth off %.0f, auth on (cached) %.0f = %.1f%% of off; no cache %.0f = %.1f%% of off\n",
        o, c, 100 * c / o, u, 100 * u / o
}'
