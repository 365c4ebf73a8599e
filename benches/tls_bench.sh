#!/usr/bin/env bash
# The TLS interception bench: egress-dlp against mitmproxy, intercepting HTTPS to the same
# local origin, in one run.
#
#   benches/tls_bench.sh
#
# It starts
#   - an HTTPS origin (examples/tls_bench.rs `upstream`: its own test CA, a certificate for
#     bench.test and 127.0.0.1, HTTP/1.1, `ok 0` to everything, one worker thread);
#   - target/release/egress-dlp serve with a temporary config: interception on, the origin's
#     CA in tls.upstream_roots, a fresh corporate CA in a temporary data dir, the shipped
#     rules/, every other key default;
#   - mitmdump (mitmproxy from PyPI, in a venv under the target dir) in regular proxy mode,
#     with the origin's CA as its trusted upstream CA and its own CA trusted by the client;
# and measures, with the load client of examples/tls_bench.rs (CONNECT + rustls, no session
# resumption, HTTP/1.1 GETs; wrk cannot speak HTTPS through a proxy):
#   1. new-connection rate: CONNECTIONS clients, each CONNECT + full handshake + one GET +
#      close, for DURATION seconds;
#   2. request rate on reused connections: CONNECTIONS clients, each one intercepted
#      connection with GETs back to back, for DURATION seconds;
#   3. added time to first byte for a warm host (its leaf already cached): N alternating
#      new connections straight to the origin and through egress-dlp, median of each;
#   4. leaf mint time: MINTS mints with a fresh CA, median and p99;
# and, for runs 1 and 2, the CPU time each proxy process used per request (/proc/PID/stat):
# on a small machine the load client and the origin share the cores with the proxy, so the
# rates are bounded by them too; CPU per request is what the proxy itself costs.
# Runs 1 and 2 are made ROUNDS times, egress-dlp and mitmproxy alternating, so both see the
# same load from whatever else runs on the machine; the figures are the medians, the ratio is
# the ratio of the medians, and each round's own ratio is printed too.
# then prints the figures and the ratios against the targets of issue 4.
#
# Knobs (environment): DURATION (default 10), CONNECTIONS (default 16), ROUNDS (default 3),
# TTFB_N (default 500), MINTS (default 2000), MITM_VENV (default $CARGO_TARGET_DIR or
# target, /mitm-venv).
# Everything listens on 127.0.0.1 and is stopped on exit.
set -euo pipefail

cd "$(dirname "$0")/.."
duration="${DURATION:-10}"
connections="${CONNECTIONS:-16}"
rounds="${ROUNDS:-3}"
ttfb_n="${TTFB_N:-500}"
mints="${MINTS:-2000}"
target_dir="${CARGO_TARGET_DIR:-target}"
venv="${MITM_VENV:-$target_dir/mitm-venv}"

say() { printf 'tls_bench: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

# --- tools ---------------------------------------------------------------------------
command -v python3 >/dev/null || die "python3 is needed for mitmproxy"
if [ ! -x "$venv/bin/mitmdump" ]; then
  say "installing mitmproxy into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q mitmproxy
fi
say "building (release)"
cargo build --release --locked --bin egress-dlp --example tls_bench >&2
bin="$target_dir/release/egress-dlp"
bench="$target_dir/release/examples/tls_bench"

tmp="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  die "nothing listens on port $1"
}

# --- the origin ----------------------------------------------------------------------
"$bench" upstream "$tmp" 1 > "$tmp/origin.port" &
pids+=($!)
for _ in $(seq 100); do [ -s "$tmp/origin.port" ] && break; sleep 0.1; done
origin_port="$(head -1 "$tmp/origin.port")"
origin="127.0.0.1:$origin_port"
wait_port "$origin_port"

# --- egress-dlp ----------------------------------------------------------------------
egress_port="$(free_port)"
cat > "$tmp/egress.yaml" <<EOF
listen: 127.0.0.1:$egress_port
admin_listen: 127.0.0.1:$(free_port)
data_dir: $tmp/data
tls:
  upstream_roots: ['$tmp/upstream-ca.pem']
access:
  connect_ports: [$origin_port]
EOF
RUST_LOG=warn "$bin" serve --config "$tmp/egress.yaml" 2> "$tmp/egress.log" &
pids+=($!)
egress_pid=$!
wait_port "$egress_port"

# --- mitmproxy -----------------------------------------------------------------------
mitm_port="$(free_port)"
"$venv/bin/mitmdump" -q --listen-host 127.0.0.1 --listen-port "$mitm_port" \
  --set confdir="$tmp/mitm" --set ssl_verify_upstream_trusted_ca="$tmp/upstream-ca.pem" \
  > "$tmp/mitm.log" 2>&1 &
pids+=($!)
mitm_pid=$!
wait_port "$mitm_port"
for _ in $(seq 100); do [ -s "$tmp/mitm/mitmproxy-ca-cert.pem" ] && break; sleep 0.1; done

egress=("127.0.0.1:$egress_port" "$tmp/data/ca.pem" "$egress_pid")
mitm=("127.0.0.1:$mitm_port" "$tmp/mitm/mitmproxy-ca-cert.pem" "$mitm_pid")
direct=(direct "$tmp/upstream-ca.pem" "")

# Warm both (first leaf minted, caches filled) with a short run each.
"$bench" load "${egress[0]}" "$origin" "${egress[1]}" new 2 1 >/dev/null
"$bench" load "${mitm[0]}" "$origin" "${mitm[1]}" new 2 1 >/dev/null

field() { sed -E "s/.*$1 ([0-9.]+).*/\\1/"; }
# CPU time (user + system, clock ticks) the process has used so far.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
# Runs the load client; prints the rate, and (for a proxy) the proxy's CPU milliseconds
# per request, which is what the proxy itself costs whoever else shares the cores.
run() { # name proxy ca pid mode
  local out before after rate cpu_ms
  [ -n "$4" ] && before="$(cpu_ticks "$4")"
  out="$("$bench" load "$2" "$origin" "$3" "$5" "$connections" "$duration")"
  rate="$(printf '%s' "$out" | field rate)"
  cpu_ms="-"
  if [ -n "$4" ]; then
    after="$(cpu_ticks "$4")"
    cpu_ms="$(python3 -c "r=$(printf '%s' "$out" | field requests); print(f'{($after-$before)*1000/$(getconf CLK_TCK)/max(r,1):.3f}')")"
  fi
  say "$1 $5: $out proxy_cpu_ms_per_request $cpu_ms"
  printf '%s %s' "$rate" "$cpu_ms"
}

median() { python3 -c "import statistics, sys; print(statistics.median(float(x) for x in sys.argv[1:]))" "$@"; }
say "origin $origin, $connections connections, ${duration}s per run, $rounds rounds"
declare -A series
round_ratios=()
for mode in new reuse; do
  for r in $(seq "$rounds"); do
    read -r e_rate e_cpu <<< "$(run egress-dlp "${egress[@]}" "$mode")"
    read -r m_rate m_cpu <<< "$(run mitmproxy "${mitm[@]}" "$mode")"
    series[e_${mode}]+=" $e_rate"; series[e_${mode}_cpu]+=" $e_cpu"
    series[m_${mode}]+=" $m_rate"; series[m_${mode}_cpu]+=" $m_cpu"
    round_ratios+=("$mode round $r: $(python3 -c "print(f'{$e_rate/$m_rate:.1f}')")x")
  done
done
for key in "${!series[@]}"; do
  # shellcheck disable=SC2086 # word splitting wanted: one value per round
  printf -v "$key" '%s' "$(median ${series[$key]})"
done
# shellcheck disable=SC2154 # set by the printf -v above
e_new_cpu="$(printf '%.3f' "$e_new_cpu")"; m_new_cpu="$(printf '%.3f' "$m_new_cpu")"
e_reuse_cpu="$(printf '%.3f' "$e_reuse_cpu")"; m_reuse_cpu="$(printf '%.3f' "$m_reuse_cpu")"
read -r d_new _ <<< "$(run direct "${direct[@]}" new)"
read -r d_reuse _ <<< "$(run direct "${direct[@]}" reuse)"

ttfb="$("$bench" ttfb "${egress[0]}" "$origin" "$tmp/upstream-ca.pem" "${egress[1]}" "$ttfb_n")"
say "ttfb egress-dlp: $ttfb"
m_ttfb="$("$bench" ttfb "${mitm[0]}" "$origin" "$tmp/upstream-ca.pem" "${mitm[1]}" "$ttfb_n")"
say "ttfb mitmproxy: $m_ttfb"
mint="$("$bench" mint "$mints")"
say "mint: $mint"

ratio() { python3 -c "print(f'{$1/$2:.1f}')"; }
cat <<EOF

TLS interception bench ($connections connections, ${duration}s per run, medians of $rounds rounds, $(nproc) cores, commit $(git rev-parse --short HEAD))
                                  direct     egress-dlp    mitmproxy    egress/mitm  target
new connections / s           $(printf '%10.0f %13.0f %12.0f' "$d_new" "$e_new" "$m_new")    $(ratio "$e_new" "$m_new")x       >= 10x
requests / s, reused conns    $(printf '%10.0f %13.0f %12.0f' "$d_reuse" "$e_reuse" "$m_reuse")    $(ratio "$e_reuse" "$m_reuse")x       >= 10x
proxy CPU ms / new connection $(printf '%24s %12s' "$e_new_cpu" "$m_new_cpu")    $(ratio "$m_new_cpu" "$e_new_cpu")x less
proxy CPU ms / reused request $(printf '%24s %12s' "$e_reuse_cpu" "$m_reuse_cpu")    $(ratio "$m_reuse_cpu" "$e_reuse_cpu")x less
TTFB, new conn to a warm host: egress-dlp $(printf '%s' "$ttfb" | field direct_ms) ms direct, $(printf '%s' "$ttfb" | field proxied_ms) ms proxied, added $(printf '%s' "$ttfb" | field added_ms) ms (target <= 2 ms)
                               mitmproxy  added $(printf '%s' "$m_ttfb" | field added_ms) ms
leaf mint: median $(printf '%s' "$mint" | field median_ms) ms, p99 $(printf '%s' "$mint" | field p99_ms) ms over $mints mints (target <= 5 ms)
each round, egress-dlp / mitmproxy: ${round_ratios[*]}
EOF
