#!/usr/bin/env bash
# Cumulative windows in the proxy bench (issue 7: window bookkeeping costs <= 5% of request
# rate). Two egress-dlp instances side by side, the same origin, alternating rounds:
#   - "windows off": the shipped rules, no policy.windows;
#   - "windows on":  the same, with a window on email (10 s span, up to a million values per
#     sender: what a run sends within a span stays under the thresholds, so nothing is
#     blocked and every request's values are recorded; one sender's table holds ~500 000).
# wrk POSTs, through each, bodies of 9 emails that are new on every request (so each request
# adds 9 values to its sender's window: the most bookkeeping a request of this size causes);
# 9 distinct emails log (the pack logs at 3), so both instances also write audit events.
# Reported: request rate and the proxy's CPU time per request (from /proc), medians.
#
#   benches/window_bench.sh        # DURATION=5 ROUNDS=5 THREADS=2 CONNECTIONS=16
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${DURATION:-5}"
rounds="${ROUNDS:-5}"
threads="${THREADS:-2}"
conns="${CONNECTIONS:-16}"
say() { printf 'window_bench: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

if ! command -v wrk >/dev/null 2>&1; then
    [[ $(id -u) -eq 0 ]] || die "wrk is missing; apt-get install wrk"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
fi
cargo build --release --quiet --bin egress-dlp --example bench_upstream

tmp="$(mktemp -d /tmp/window-bench.XXXXXX)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do timeout 10 tail --pid="$pid" -f /dev/null 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT
free_port() {
    local port
    while :; do
        port=$((20000 + RANDOM % 40000))
        ss -Hltn "sport = :$port" 2>/dev/null | grep -q . || { echo "$port"; return; }
    done
}
wait_port() {
    for _ in $(seq 1 150); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    die "nothing listens on 127.0.0.1:$1 ($2)"
}

target/release/examples/bench_upstream 0 1 >"$tmp/upstream.port" 2>"$tmp/upstream.log" &
pids+=($!)
for _ in $(seq 1 100); do [[ -s "$tmp/upstream.port" ]] && break; sleep 0.1; done
upstream_port="$(head -n1 "$tmp/upstream.port")"
[[ -n "$upstream_port" ]] || die "the origin did not start"

# Not in a command substitution: a subshell would run the EXIT trap and stop everything.
start() { # NAME EXTRA_YAML -> sets started_port, started_pid
    local name="$1" extra="$2" port admin
    port="$(free_port)"; admin="$(free_port)"
    mkdir -p "$tmp/data-$name"
    printf 'listen: 127.0.0.1:%s\nadmin_listen: 127.0.0.1:%s\nrules: rules\ndata_dir: %s\ntls: { intercept: false }\n%s' \
        "$port" "$admin" "$tmp/data-$name" "$extra" >"$tmp/$name.yaml"
    RUST_LOG=warn target/release/egress-dlp serve --config "$tmp/$name.yaml" 2>"$tmp/$name.log" &
    pids+=($!)
    started_pid=$!
    started_port="$port"
    wait_port "$port" "$name: $(tail -n3 "$tmp/$name.log")"
}
start off ''
off_port="$started_port"; off_pid="$started_pid"
start on 'policy: { windows: { span: 10s, thresholds: { email: { log: 900000, block: 1000000 } }, max_values: 1000000 } }
'
on_port="$started_port"; on_pid="$started_pid"

cat >"$tmp/post.lua" <<EOF
-- 9 emails never sent before, per request, from a per-thread counter.
local n = 0
local prefix = tostring(math.random(1, 1000000000))
request = function()
  local body = {}
  for i = 1, 9 do
    n = n + 1
    body[#body + 1] = string.format("row %d: person%s.%d@acme-corp.io", i, prefix, n)
  end
  return wrk.format("POST", "http://127.0.0.1:$upstream_port/upload",
    { ["Host"] = "127.0.0.1:$upstream_port", ["Content-Type"] = "text/plain" },
    table.concat(body, "\n"))
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d\n", summary.requests, summary.duration,
    e.connect + e.read + e.write + e.timeout, e.status))
end
EOF
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
run() { # PORT PID -> "rps cpu_us_per_request"
    local cpu0 cpu1 line requests dur errors status
    cpu0="$(cpu_ticks "$2")"
    line="$(timeout $((duration + 30)) wrk -t"$threads" -c"$conns" -d"${duration}s" -s "$tmp/post.lua" "http://127.0.0.1:$1/" | grep '^RESULT')"
    cpu1="$(cpu_ticks "$2")"
    read -r _ requests dur errors status <<<"$line"
    [[ $errors -eq 0 && $status -eq 0 ]] || die "port $1: $errors socket errors, $status non-2xx of $requests"
    awk -v r="$requests" -v d="$dur" -v c="$((cpu1 - cpu0))" -v hz="$(getconf CLK_TCK)" \
        'BEGIN { printf "%.0f %.2f\n", r / (d / 1e6), c / hz * 1e6 / r }'
}
# Warm-up, then alternating rounds.
run "$off_port" "$off_pid" >/dev/null; run "$on_port" "$on_pid" >/dev/null
off_rps=(); on_rps=(); off_cpu=(); on_cpu=()
for round in $(seq 1 "$rounds"); do
    say "round $round of $rounds"
    if (( round % 2 )); then
        read -r r c <<<"$(run "$off_port" "$off_pid")"; off_rps+=("$r"); off_cpu+=("$c")
        read -r r c <<<"$(run "$on_port" "$on_pid")"; on_rps+=("$r"); on_cpu+=("$c")
    else
        read -r r c <<<"$(run "$on_port" "$on_pid")"; on_rps+=("$r"); on_cpu+=("$c")
        read -r r c <<<"$(run "$off_port" "$off_pid")"; off_rps+=("$r"); off_cpu+=("$c")
    fi
done
median() { printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
m_off_rps="$(median "${off_rps[@]}")"; m_on_rps="$(median "${on_rps[@]}")"
m_off_cpu="$(median "${off_cpu[@]}")"; m_on_cpu="$(median "${on_cpu[@]}")"
printf '\nwindow bench: %d cores, wrk -t%d -c%d, POST of 9 new emails, %ds runs, %d alternating rounds\n' \
    "$(nproc)" "$threads" "$conns" "$duration" "$rounds"
printf 'windows off: %s req/s, %s us CPU/request   (rounds: %s)\n' "$m_off_rps" "$m_off_cpu" "${off_rps[*]}"
printf 'windows on:  %s req/s, %s us CPU/request   (rounds: %s)\n' "$m_on_rps" "$m_on_cpu" "${on_rps[*]}"
awk -v a="$m_on_rps" -v b="$m_off_rps" -v c="$m_on_cpu" -v d="$m_off_cpu" 'BEGIN {
    printf "rate on/off = %.3f, CPU per request on/off = %.3f (target: cost <= 5%%)\n", a / b, c / d }'
