#!/usr/bin/env bash
# The proxy bench: egress-dlp against Squid and against no proxy at all, on loopback.
#
#   benches/proxy_bench.sh
#
# In one run it starts
#   - a small fast origin (examples/bench_upstream.rs: 200 `ok N` to everything, reads
#     every request body to its end, keeps nothing);
#   - target/release/egress-dlp serve with a temporary config (free loopback ports, the
#     shipped rules/, a temporary data dir, tls.intercept false, every other key default:
#     16 MiB hold limit, oversize bodies streamed);
#   - Debian's squid with caching off (a minimal squid.conf in a temporary directory);
# and measures
#   1. small-request rate and latency: `wrk -t2 -c32 -d10s` GET requests direct to the
#      origin, through egress-dlp and through squid (a Lua script makes wrk send
#      absolute-form requests, since wrk has no proxy support); then the same with one
#      connection (`wrk -t1 -c1`), whose median is the latency a proxy adds to a request
#      rather than the queueing of 32 connections on a 2-core machine;
#   2. a 1 GiB upload (a benign generated corpus, `curl -T FILE -X POST`) direct, through
#      egress-dlp (every byte scanned) and through squid;
#   3. egress-dlp's peak RSS (VmHWM from /proc at the end: the whole run, upload included);
# then prints a table and the ratios against the targets of issue 3.
#
# `benches/proxy_bench.sh --audit` measures instead what the audit log and the metrics cost
# (issue 6: at most 5% of the request rate). Same origin and wrk runs, no squid, no upload;
# two egress-dlp processes of the same build side by side:
#   - "audit on": `audit.all_requests: true` (every request writes an audit event: the
#     most the audit log can cost per request) and /metrics scraped every second;
#   - "audit off": the default audit settings (only log/block verdicts write events, and
#     this benign traffic has none), never scraped;
#   - with BASELINE_BIN=path, a third: a build without the audit and metrics code at all
#     (e.g. the commit before them), run with the "audit off" config;
# measured in ROUNDS (default 3) alternating rounds, 32 connections then 1, reporting each
# one's median requests/s and the ratio on/off, and each process's CPU time per request
# (user + system over the measured run: less disturbed by other load than the rate). All
# three log at RUST_LOG=warn (default here): the per-request log line is not audit+metrics.
#
# Knobs (environment): DURATION (wrk seconds, default 10), CONNECTIONS (default 32),
# THREADS (wrk threads, default 2), UPLOAD_SIZE (default 1GiB), UPLOAD_FILE (reuse a
# file instead of generating one). Installs squid, wrk and GNU time with apt-get when
# missing (needs root). Everything listens on 127.0.0.1 and is stopped on exit.
set -euo pipefail

cd "$(dirname "$0")/.."
mode=proxy
if [[ "${1:-}" == "--audit" ]]; then
    mode=audit
    # The per-request info log line is not what this mode measures: every instance logs
    # at warn unless RUST_LOG says otherwise.
    export RUST_LOG="${RUST_LOG:-warn}"
fi
rounds="${ROUNDS:-3}"
duration="${DURATION:-10}"
connections="${CONNECTIONS:-32}"
threads="${THREADS:-2}"
upload_size="${UPLOAD_SIZE:-1GiB}"

say() { printf 'proxy_bench: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

# --- tools ---------------------------------------------------------------------------
need=()
command -v squid >/dev/null 2>&1 || [[ -x /usr/sbin/squid ]] || need+=(squid)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v curl >/dev/null 2>&1 || need+=(curl)
if [[ ${#need[@]} -gt 0 ]]; then
    [[ $(id -u) -eq 0 ]] || die "missing ${need[*]}; install them (apt-get install ${need[*]}) or run as root"
    say "installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
squid_bin="$(command -v squid || echo /usr/sbin/squid)"

say "building release binaries"
cargo build --release --quiet --bin egress-dlp --example bench_upstream --example gen_corpus

# --- processes and cleanup -----------------------------------------------------------
tmp="$(mktemp -d /tmp/proxy-bench.XXXXXX)"
pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        # Bounded wait: squid may take a moment to shut down.
        timeout 10 tail --pid="$pid" -f /dev/null 2>/dev/null || kill -9 "$pid" 2>/dev/null || true
    done
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A free loopback port (not listening now; a race is possible but harmless here).
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

# Waits (up to 15 s) until 127.0.0.1:$1 accepts connections.
wait_port() {
    local i
    for i in $(seq 1 150); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    die "nothing listens on 127.0.0.1:$1 after 15 s ($2)"
}

# Origin.
target/release/examples/bench_upstream 0 1 >"$tmp/upstream.port" 2>"$tmp/upstream.log" &
pids+=($!)
for _ in $(seq 1 100); do [[ -s "$tmp/upstream.port" ]] && break; sleep 0.1; done
upstream_port="$(head -n1 "$tmp/upstream.port")"
[[ -n "$upstream_port" ]] || die "the origin did not start: $(cat "$tmp/upstream.log")"
origin="http://127.0.0.1:$upstream_port"

# egress-dlp.
proxy_port="$(free_port)"
admin_port="$(free_port)"
mkdir -p "$tmp/data"
cat >"$tmp/egress-dlp.yaml" <<EOF
listen: 127.0.0.1:$proxy_port
admin_listen: 127.0.0.1:$admin_port
rules: rules
data_dir: $tmp/data
tls:
  intercept: false
EOF
target/release/egress-dlp serve --config "$tmp/egress-dlp.yaml" 2>"$tmp/egress-dlp.log" &
egress_pid=$!
pids+=("$egress_pid")
wait_port "$proxy_port" "egress-dlp: $(tail -n5 "$tmp/egress-dlp.log")"

if [[ $mode == audit ]]; then
    # "audit off" is the instance above. "audit on": every request audited, scraped.
    on_port="$(free_port)"
    on_admin="$(free_port)"
    mkdir -p "$tmp/data-on"
    cat >"$tmp/egress-dlp-on.yaml" <<EOF
listen: 127.0.0.1:$on_port
admin_listen: 127.0.0.1:$on_admin
rules: rules
data_dir: $tmp/data-on
tls:
  intercept: false
audit:
  all_requests: true
EOF
    target/release/egress-dlp serve --config "$tmp/egress-dlp-on.yaml" 2>"$tmp/egress-dlp-on.log" &
    on_pid=$!
    pids+=("$on_pid")
    wait_port "$on_port" "egress-dlp (audit on): $(tail -n5 "$tmp/egress-dlp-on.log")"
    base_port=
    if [[ -n "${BASELINE_BIN:-}" ]]; then
        base_port="$(free_port)"
        mkdir -p "$tmp/data-base"
        sed -e "s/^listen: .*/listen: 127.0.0.1:$base_port/" \
            -e "s/^admin_listen: .*/admin_listen: 127.0.0.1:$(free_port)/" \
            -e "s|^data_dir: .*|data_dir: $tmp/data-base|" \
            "$tmp/egress-dlp.yaml" >"$tmp/egress-dlp-base.yaml"
        "$BASELINE_BIN" serve --config "$tmp/egress-dlp-base.yaml" 2>"$tmp/egress-dlp-base.log" &
        base_pid=$!
        pids+=("$base_pid")
        wait_port "$base_port" "baseline: $(tail -n5 "$tmp/egress-dlp-base.log")"
    fi
fi

# Squid, caching off. It drops root to its own user: that user must write its logs.
if [[ $mode == proxy ]]; then
squid_port="$(free_port)"
mkdir -p "$tmp/squid"
chmod 0777 "$tmp/squid"
cat >"$tmp/squid/squid.conf" <<EOF
http_port 127.0.0.1:$squid_port
acl bench_clients src 127.0.0.1/32
http_access allow bench_clients
http_access deny all
cache deny all
cache_mem 0 MB
access_log none
cache_store_log none
cache_log $tmp/squid/cache.log
pid_filename $tmp/squid/squid.pid
coredump_dir $tmp/squid
visible_hostname proxy-bench
shutdown_lifetime 0 seconds
EOF
"$squid_bin" -N -f "$tmp/squid/squid.conf" >"$tmp/squid/stdout.log" 2>&1 &
pids+=($!)
wait_port "$squid_port" "squid: $(tail -n5 "$tmp/squid/cache.log" 2>/dev/null)"
fi

# --- 1. small requests ---------------------------------------------------------------
cat >"$tmp/absolute.lua" <<'EOF'
-- Sends absolute-form requests (the proxy form) to whatever wrk connects to.
local target = os.getenv("TARGET")
local host = os.getenv("TARGET_HOST")
request = function()
  return wrk.format("GET", target, { ["Host"] = host })
end
EOF
cat >"$tmp/report.lua" <<'EOF'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d %d\n", summary.requests, summary.duration,
    e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
EOF
cat "$tmp/absolute.lua" "$tmp/report.lua" >"$tmp/proxied.lua"

# CPU time (user + system, clock ticks) a process has used so far.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# run_wrk NAME CONNECT_PORT SCRIPT THREADS CONNECTIONS [PID]
#   -> "rps p50_us p99_us" [+ " cpu_us_per_request" of PID during the measured run]
run_wrk() {
    local name="$1" port="$2" script="$3" t="$4" c="$5" pid="${6:-}"
    local line requests duration_us errors status p50 p99 cpu0=0 cpu1=0
    # A short warm-up (connections, pools, caches), then the measured run.
    TARGET="$origin/" TARGET_HOST="127.0.0.1:$upstream_port" \
        timeout 30 wrk -t"$t" -c"$c" -d2s -s "$script" "http://127.0.0.1:$port/" >/dev/null
    [[ -n $pid ]] && cpu0="$(cpu_ticks "$pid")"
    line="$(TARGET="$origin/" TARGET_HOST="127.0.0.1:$upstream_port" \
        timeout $((duration + 30)) wrk -t"$t" -c"$c" -d"${duration}s" \
        -s "$script" "http://127.0.0.1:$port/" | grep '^RESULT')"
    [[ -n $pid ]] && cpu1="$(cpu_ticks "$pid")"
    read -r _ requests duration_us errors status p50 p99 <<<"$line"
    if [[ $errors -ne 0 || $status -ne 0 ]]; then
        die "$name: $errors socket errors, $status non-2xx answers out of $requests requests"
    fi
    awk -v r="$requests" -v d="$duration_us" -v a="$p50" -v b="$p99" \
        -v cpu="$((cpu1 - cpu0))" -v hz="$(getconf CLK_TCK)" -v pid="$pid" \
        'BEGIN { printf "%.0f %d %d", r / (d / 1e6), a, b
                 if (pid != "") printf " %.2f", cpu / hz * 1e6 / r
                 printf "\n" }'
}

if [[ $mode == audit ]]; then
    # Scrapes the "audit on" instance every second while the bench runs.
    (while :; do
        curl -s -o /dev/null "http://127.0.0.1:$on_admin/metrics" || true
        sleep 1
    done) &
    pids+=($!)
    median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
    report=()
    cpu_report=()
    for shape in "$threads $connections" "1 1"; do
        read -r t c <<<"$shape"
        for f in off on base; do : >"$tmp/$f.rps"; : >"$tmp/$f.cpu"; done
        for round in $(seq 1 "$rounds"); do
            say "audit bench: wrk -t$t -c$c -d${duration}s, round $round of $rounds"
            read -r rps _ _ cpu <<<"$(run_wrk "audit off" "$proxy_port" "$tmp/proxied.lua" "$t" "$c" "$egress_pid")"
            echo "$rps" >>"$tmp/off.rps"; echo "$cpu" >>"$tmp/off.cpu"
            read -r rps _ _ cpu <<<"$(run_wrk "audit on" "$on_port" "$tmp/proxied.lua" "$t" "$c" "$on_pid")"
            echo "$rps" >>"$tmp/on.rps"; echo "$cpu" >>"$tmp/on.cpu"
            if [[ -n $base_port ]]; then
                read -r rps _ _ cpu <<<"$(run_wrk baseline "$base_port" "$tmp/proxied.lua" "$t" "$c" "$base_pid")"
                echo "$rps" >>"$tmp/base.rps"; echo "$cpu" >>"$tmp/base.cpu"
            fi
        done
        off="$(median <"$tmp/off.rps")"; on="$(median <"$tmp/on.rps")"
        offc="$(median <"$tmp/off.cpu")"; onc="$(median <"$tmp/on.cpu")"
        base=-; basec=-
        [[ -s "$tmp/base.rps" ]] && base="$(median <"$tmp/base.rps")" && basec="$(median <"$tmp/base.cpu")"
        report+=("$c $off $on $base $(tr '\n' ' ' <"$tmp/off.rps")| $(tr '\n' ' ' <"$tmp/on.rps")| $(tr '\n' ' ' <"$tmp/base.rps")")
        cpu_report+=("$c $offc $onc $basec")
    done
    events="$(cat "$tmp"/data-on/audit.jsonl* 2>/dev/null | wc -l)"
    printf '\naudit and metrics bench: %d cores, wrk GET, %ds runs, %d alternating rounds\n\n' "$(nproc)" "$duration" "$rounds"
    printf 'connections   audit off req/s   audit on req/s   on/off    baseline req/s   on/baseline\n'
    for line in "${report[@]}"; do
        read -r c off on base _ <<<"$line"
        awk -v c="$c" -v off="$off" -v on="$on" -v base="$base" 'BEGIN {
            rb = (base == "-") ? "-" : sprintf("%.3f", on / base)
            printf "%11d   %15.0f   %14.0f   %6.3f    %14s   %11s\n", c, off, on, on / off, base, rb }'
    done
    printf '\nper-round requests/s (off | on | baseline):\n'
    for line in "${report[@]}"; do
        read -r c _ _ _ rest <<<"$line"
        printf '  %3d connections: %s\n' "$c" "$rest"
    done
    printf '\nproxy CPU per request (user+system, median over rounds; robust to other load)\n'
    printf 'connections   audit off us   audit on us   on/off    baseline us   on/baseline   off/baseline\n'
    for line in "${cpu_report[@]}"; do
        read -r c off on base <<<"$line"
        awk -v c="$c" -v off="$off" -v on="$on" -v base="$base" 'BEGIN {
            rb = (base == "-") ? "-" : sprintf("%.3f", on / base)
            ob = (base == "-") ? "-" : sprintf("%.3f", off / base)
            printf "%11d   %12.2f   %11.2f   %6.3f    %11s   %11s   %12s\n", c, off, on, on / off, base, rb, ob }'
    done
    printf '\naudit events written by "audit on": %s\n' "$events"
    awk -v line="${report[0]}" 'BEGIN { split(line, f, " "); r = f[3] / f[2];
        printf "target: audit+metrics cost <= 5%% of request rate (%s connections): on/off = %.3f -> %s\n",
            f[1], r, (r >= 0.95 ? "met" : "NOT met") }'
    exit 0
fi

say "small requests: wrk -t$threads -c$connections -d${duration}s (GET, 2 s warm-up each)"
loaded=("$threads" "$connections")
read -r direct_rps direct_p50 direct_p99 <<<"$(run_wrk direct "$upstream_port" "$tmp/report.lua" "${loaded[@]}")"
read -r egress_rps egress_p50 egress_p99 <<<"$(run_wrk egress-dlp "$proxy_port" "$tmp/proxied.lua" "${loaded[@]}")"
read -r squid_rps squid_p50 squid_p99 <<<"$(run_wrk squid "$squid_port" "$tmp/proxied.lua" "${loaded[@]}")"
say "one connection: wrk -t1 -c1 -d${duration}s"
read -r direct1_rps direct1_p50 direct1_p99 <<<"$(run_wrk direct "$upstream_port" "$tmp/report.lua" 1 1)"
read -r egress1_rps egress1_p50 egress1_p99 <<<"$(run_wrk egress-dlp "$proxy_port" "$tmp/proxied.lua" 1 1)"
read -r squid1_rps squid1_p50 squid1_p99 <<<"$(run_wrk squid "$squid_port" "$tmp/proxied.lua" 1 1)"
rss_after_requests_kib="$(awk '/^VmHWM/ { print $2 }' "/proc/$egress_pid/status")"

# --- 2. the 1 GiB upload -------------------------------------------------------------
if [[ -n "${UPLOAD_FILE:-}" ]]; then
    file="$UPLOAD_FILE"
else
    file="$tmp/upload-benign.bin"
    say "generating a benign $upload_size upload"
    target/release/examples/gen_corpus benign "$upload_size" "$file" >/dev/null
fi
size="$(stat -c %s "$file")"
cat "$file" >/dev/null # into the page cache, so every run reads it from memory

# upload NAME [PROXY_PORT] -> "bytes_per_second seconds"
upload() {
    local name="$1" proxy=() out code speed time answer
    [[ $# -ge 2 ]] && proxy=(-x "http://127.0.0.1:$2")
    out="$(timeout 300 curl -sS "${proxy[@]}" -T "$file" -X POST -H 'Expect:' \
        -o "$tmp/answer" -w '%{http_code} %{speed_upload} %{time_total}' "$origin/upload")"
    read -r code speed time <<<"$out"
    answer="$(cat "$tmp/answer")"
    [[ $code == 200 && $answer == "ok $size" ]] ||
        die "$name upload: HTTP $code, origin said '$answer' (expected 'ok $size')"
    echo "$speed $time"
}

say "uploading $size bytes: direct, through egress-dlp, through squid"
read -r up_direct up_direct_s <<<"$(upload direct)"
read -r up_egress up_egress_s <<<"$(upload egress-dlp "$proxy_port")"
read -r up_squid up_squid_s <<<"$(upload squid "$squid_port")"
rss_peak_kib="$(awk '/^VmHWM/ { print $2 }' "/proc/$egress_pid/status")"

# --- report --------------------------------------------------------------------------
awk -v dr="$direct_rps" -v d50="$direct_p50" -v d99="$direct_p99" \
    -v er="$egress_rps" -v e50="$egress_p50" -v e99="$egress_p99" \
    -v sr="$squid_rps" -v s50="$squid_p50" -v s99="$squid_p99" \
    -v dr1="$direct1_rps" -v d150="$direct1_p50" -v d199="$direct1_p99" \
    -v er1="$egress1_rps" -v e150="$egress1_p50" -v e199="$egress1_p99" \
    -v sr1="$squid1_rps" -v s150="$squid1_p50" -v s199="$squid1_p99" \
    -v ud="$up_direct" -v uds="$up_direct_s" -v ue="$up_egress" -v ues="$up_egress_s" \
    -v us="$up_squid" -v uss="$up_squid_s" -v size="$size" \
    -v rss1="$rss_after_requests_kib" -v rss="$rss_peak_kib" \
    -v c="$connections" -v t="$threads" -v dur="$duration" -v cores="$(nproc)" '
function ms(us) { return sprintf("%.3f", us / 1000) }
function mbs(b) { return sprintf("%.0f", b / 1048576) }
function check(ok) { return ok ? "met" : "NOT met" }
BEGIN {
    printf "\nproxy bench: %d cores, wrk -t%d -c%d -d%ds, upload %d bytes\n\n", cores, t, c, dur, size
    printf "small requests, %2d connections   requests/s   median ms   p99 ms\n", c
    printf "direct                           %10.0f   %9s   %6s\n", dr, ms(d50), ms(d99)
    printf "egress-dlp                       %10.0f   %9s   %6s\n", er, ms(e50), ms(e99)
    printf "squid                            %10.0f   %9s   %6s\n", sr, ms(s50), ms(s99)
    printf "\nsmall requests, 1 connection     requests/s   median ms   p99 ms\n"
    printf "direct                           %10.0f   %9s   %6s\n", dr1, ms(d150), ms(d199)
    printf "egress-dlp                       %10.0f   %9s   %6s\n", er1, ms(e150), ms(e199)
    printf "squid                            %10.0f   %9s   %6s\n", sr1, ms(s150), ms(s199)
    printf "\nupload              MiB/s        seconds\n"
    printf "direct              %10s   %7.2f\n", mbs(ud), uds
    printf "egress-dlp          %10s   %7.2f\n", mbs(ue), ues
    printf "squid               %10s   %7.2f\n", mbs(us), uss
    printf "\negress-dlp peak RSS: %.1f MiB after the small requests, %.1f MiB at the end\n", rss1 / 1024, rss / 1024
    rate = er / sr; added = (e150 - d150) / 1000; added_loaded = (e50 - d50) / 1000
    share = ue / ud; peak = rss / 1024
    printf "\ntarget                                   measured     verdict\n"
    printf "rate >= 1.5x squid (%2d connections)      %6.2fx      %s\n", c, rate, check(rate >= 1.5)
    printf "added median latency <= 0.3 ms (1 conn)  %6.3f ms    %s\n", added, check(added <= 0.3)
    printf "  (same, %2d connections: queueing)       %6.3f ms    %s\n", c, added_loaded, check(added_loaded <= 0.3)
    printf "upload >= 50%% of direct throughput       %6.1f%%      %s\n", share * 100, check(share >= 0.5)
    printf "peak RSS <= 64 MiB                       %6.1f MiB   %s\n", peak, check(peak <= 64)
}'
