#!/usr/bin/env bash
# Admission load benchmark, run by hand (not in CI): `webhook --standalone` against a bare
# hyper + rustls baseline (benches/tls_baseline.rs) that answers every POST with a fixed
# AdmissionReview response of the same size without parsing, both with the same certificate.
#
#   benches/admission.sh            # everything: throughput, fixed rate, memory
#   DURATION=30 benches/admission.sh
#   PARTS=memory benches/admission.sh
#
# Throughput: h2load with 16 connections, HTTP/2 (as kube-apiserver talks to webhooks) and
# HTTP/1.1 keep-alive (`h2load --h1`), for a 4 KiB and a 64 KiB pod; requests per second, p50
# and p99 from h2load's per-request log, and the ratio webhook / baseline.
# Fixed rate: benches/rate_load.rs, open loop at 1,000 requests per second over 16 connections,
# for the 4 KiB pod; p50 and p99 measured from when each request was due.
# Memory: VmRSS (and its heap part) of a fresh webhook: cold, warm idle after 1,000 admissions,
# then after 100,000 more over HTTP/2 and 100,000 more over HTTP/1.1.
#
# Environment: DURATION (seconds per throughput run, default 10), CONNS (16), STREAMS (HTTP/2
# requests in flight per connection, default 1; an API server under load multiplexes, e.g. 8),
# RATE_SECONDS (10), ADMISSIONS (100000), PARTS ("throughput rate memory"), PORT_BASE (18440),
# BIN (the webhook binary, default the release build of this checkout: another build to compare),
# BASELINE_WEBHOOK_HTTP2=1 (the baseline with the webhook's HTTP/2 settings: 64 KiB windows,
# 64 streams, keep-alive pings).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
CONNS=${CONNS:-16}
STREAMS=${STREAMS:-1}
RATE_SECONDS=${RATE_SECONDS:-10}
ADMISSIONS=${ADMISSIONS:-100000}
PARTS=${PARTS:-throughput rate memory}
PORT_BASE=${PORT_BASE:-18440}
WEBHOOK_PORT=$PORT_BASE
ADMIN_PORT=$((PORT_BASE + 1))
BASELINE_PORT=$((PORT_BASE + 2))

missing=()
command -v h2load >/dev/null || missing+=(nghttp2-client)
command -v openssl >/dev/null || missing+=(openssl)
command -v curl >/dev/null || missing+=(curl)
if ((${#missing[@]})); then
  echo "installing ${missing[*]}" >&2
  apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
fi

cargo build --release --locked --bin idaas-projector --example tls-baseline --example rate-load >&2
BIN=${BIN:-target/release/idaas-projector}
BASELINE=target/release/examples/tls-baseline
RATE_LOAD=target/release/examples/rate-load

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# One certificate for both servers: ECDSA P-256, as the webhook's own self-managed ones.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
  -keyout "$work/tls.key" -out "$work/tls.crt" 2>/dev/null
python3 benches/make_review.py 4096 "$work/review-4k.json" >&2
python3 benches/make_review.py 65536 "$work/review-64k.json" >&2

start_webhook() {
  "$BIN" webhook --standalone \
    --listen "127.0.0.1:$WEBHOOK_PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" \
    --tls-cert-file "$work/tls.crt" --tls-key-file "$work/tls.key" \
    --default-oidc-provider-arn acs:ram::1234567890123456:oidc-provider/idaas \
    2>>"$work/webhook.log" &
  webhook_pid=$!
  pids+=("$webhook_pid")
  for _ in $(seq 200); do
    curl -sf "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "the webhook never became ready; its log:" >&2
  cat "$work/webhook.log" >&2
  exit 1
}

stop_pid() {
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

start_baseline() { # response file
  "$BASELINE" "127.0.0.1:$BASELINE_PORT" "$work/tls.crt" "$work/tls.key" "$1" 2>>"$work/baseline.log" &
  baseline_pid=$!
  pids+=("$baseline_pid")
  for _ in $(seq 200); do
    curl -skf -o /dev/null -X POST --data-binary x "https://127.0.0.1:$BASELINE_PORT/mutate" && return 0
    sleep 0.05
  done
  echo "the baseline never answered" >&2
  exit 1
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
# CPU time (user + system) a process has used, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# h2load run -> "rps p50_ms p99_ms cpu_us_per_request" on stdout; fails on any non-2xx or error.
h2load_run() { # port pid body proto(h2|h1)
  local port=$1 pid=$2 body=$3 proto=$4 flags=() out log before after
  # HTTP/1.1 has one request in flight per connection; HTTP/2 multiplexes STREAMS.
  if [[ $proto == h1 ]]; then flags+=(--h1 -m 1); else flags+=(-m "$STREAMS"); fi
  log=$(mktemp -p "$work")
  # Warm up (connections, TLS sessions, allocator), then measure.
  h2load "${flags[@]}" -c "$CONNS" -t 1 -n $((CONNS * 200)) -d "$body" \
    -H 'content-type: application/json' "https://127.0.0.1:$port/mutate" >/dev/null
  before=$(cpu_ticks "$pid")
  out=$(h2load "${flags[@]}" -c "$CONNS" -t 1 -D "$DURATION" -d "$body" \
    -H 'content-type: application/json' --log-file="$log" "https://127.0.0.1:$port/mutate")
  after=$(cpu_ticks "$pid")
  if ! grep -qE 'requests: .* 0 failed, 0 errored, 0 timeout' <<<"$out"; then
    echo "$out" >&2
    echo "h2load saw failures" >&2
    exit 1
  fi
  python3 - "$log" "$out" $((after - before)) "$(getconf CLK_TCK)" <<'EOF'
import re, sys
durations = sorted(int(l.split("\t")[2]) for l in open(sys.argv[1]) if l.strip())
statuses = {l.split("\t")[1] for l in open(sys.argv[1]) if l.strip()}
assert statuses <= {"200"}, statuses
rps = float(re.search(r"finished in [^,]+, ([0-9.]+) req/s", sys.argv[2]).group(1))
pct = lambda p: durations[min(len(durations) - 1, int(p / 100 * len(durations)))] / 1000
cpu_us = int(sys.argv[3]) / int(sys.argv[4]) * 1e6 / len(durations)
print(f"{rps:.0f} {pct(50):.3f} {pct(99):.3f} {cpu_us:.0f}")
EOF
}

# benches/rate_load.rs at a fixed total rate -> "rps p50_ms p99_ms"; fails on any failure.
rate_run() { # port body proto(h2|h1) rate
  local port=$1 body=$2 proto=$3 rate=$4 flags=() out
  [[ $proto == h1 ]] && flags+=(--http1)
  out=$("$RATE_LOAD" "${flags[@]}" --rate "$rate" --seconds "$RATE_SECONDS" \
    --connections "$CONNS" "127.0.0.1:$port" "$body")
  if ! grep -q " failed=0$" <<<"$out"; then
    echo "$out" >&2
    echo "rate-load saw failures" >&2
    exit 1
  fi
  sed -E 's/rps=([0-9.]+) p50_ms=([0-9.]+) p99_ms=([0-9.]+).*/\1 \2 \3/' <<<"$out"
}

echo "# Admission benchmark, $(date -u +%Y-%m-%dT%H:%MZ)"
echo
echo "machine: $(nproc) x $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr); $(rustc --version)"
echo "load: h2load $(h2load --version | awk '{print $2}'), $CONNS connections ($STREAMS HTTP/2 streams each), 1 client thread, ${DURATION} s per run after a warm-up; benches/rate_load.rs at a fixed rate for ${RATE_SECONDS} s"
echo

if [[ " $PARTS " == *" throughput "* || " $PARTS " == *" rate "* ]]; then
  start_webhook
  for size in 4k 64k; do
    body="$work/review-$size.json"
    curl -skf -H 'content-type: application/json' --data-binary "@$body" \
      "https://127.0.0.1:$WEBHOOK_PORT/mutate" -o "$work/response-$size.json"
    grep -q '"patch"' "$work/response-$size.json" || {
      echo "the webhook did not inject into the $size pod" >&2
      cat "$work/response-$size.json" >&2
      exit 1
    }
    echo "$size pod: request $(stat -c %s "$body") bytes, response $(stat -c %s "$work/response-$size.json") bytes (both servers)"
  done
  echo
fi

if [[ " $PARTS " == *" throughput "* ]]; then
  echo "| pod | protocol | webhook rps | p50 / p99 ms | CPU µs / req | baseline rps | p50 / p99 ms | CPU µs / req | ratio (rps) |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
  for size in 4k 64k; do
    body="$work/review-$size.json"
    start_baseline "$work/response-$size.json"
    for proto in h2 h1; do
      read -r w_rps w_p50 w_p99 w_cpu < <(h2load_run "$WEBHOOK_PORT" "$webhook_pid" "$body" "$proto")
      read -r b_rps b_p50 b_p99 b_cpu < <(h2load_run "$BASELINE_PORT" "$baseline_pid" "$body" "$proto")
      ratio=$(python3 -c "print(f'{$w_rps / $b_rps:.2f}')")
      label=$([[ $proto == h2 ]] && echo "HTTP/2" || echo "HTTP/1.1")
      echo "| $size | $label | $w_rps | $w_p50 / $w_p99 | $w_cpu | $b_rps | $b_p50 / $b_p99 | $b_cpu | **$ratio** |"
    done
    stop_pid "$baseline_pid"
  done
  echo
fi

if [[ " $PARTS " == *" rate "* ]]; then
  echo "| at 1,000 rps, 4k pod | protocol | achieved rps | p50 ms | p99 ms |"
  echo "| --- | --- | --- | --- | --- |"
  start_baseline "$work/response-4k.json"
  for proto in h2 h1; do
    label=$([[ $proto == h2 ]] && echo "HTTP/2" || echo "HTTP/1.1")
    read -r rps p50 p99 < <(rate_run "$WEBHOOK_PORT" "$work/review-4k.json" "$proto" 1000)
    echo "| webhook | $label | $rps | $p50 | **$p99** |"
    read -r rps p50 p99 < <(rate_run "$BASELINE_PORT" "$work/review-4k.json" "$proto" 1000)
    echo "| baseline | $label | $rps | $p50 | $p99 |"
  done
  stop_pid "$baseline_pid"
  echo
fi

if [[ -n ${webhook_pid:-} ]]; then stop_pid "$webhook_pid"; fi

if [[ " $PARTS " == *" memory "* ]]; then
  # VmRSS and its anonymous part (the heap; the rest is the binary's pages mapped from disk).
  mem() { awk '/^VmRSS:/ {r = $2} /^RssAnon:/ {a = $2} END {print r, a}' "/proc/$webhook_pid/status"; }
  load() { # admissions [extra h2load flags]
    local n=$1
    shift
    h2load "$@" -c "$CONNS" -t 1 -m 1 -n "$n" -d "$work/review-4k.json" \
      -H 'content-type: application/json' "https://127.0.0.1:$WEBHOOK_PORT/mutate" >/dev/null
    sleep 1
  }
  start_webhook
  sleep 1
  read -r cold cold_anon < <(mem)
  load 1000
  read -r warm warm_anon < <(mem)
  load "$ADMISSIONS"
  read -r full full_anon < <(mem)
  load "$ADMISSIONS" --h1
  read -r double double_anon < <(mem)
  served=$(curl -sf "http://127.0.0.1:$ADMIN_PORT/metrics" |
    awk '/^idaas_projector_admission_requests_total\{result="injected"\}/ {print $2}')
  pct() { python3 -c "print(f'{($1 - $2) / $2 * 100:+.1f}%')"; }
  echo "| webhook memory (4k pod, $CONNS connections per run) | VmRSS KiB | vs warm | RssAnon KiB | vs warm |"
  echo "| --- | --- | --- | --- | --- |"
  echo "| cold: just started, nothing served | $cold | $(pct "$cold" "$warm") | $cold_anon | $(pct "$cold_anon" "$warm_anon") |"
  echo "| warm idle: after 1,000 admissions | $warm | | $warm_anon | |"
  echo "| after $ADMISSIONS more (HTTP/2) | $full | **$(pct "$full" "$warm")** | $full_anon | $(pct "$full_anon" "$warm_anon") |"
  echo "| after $ADMISSIONS more (HTTP/1.1) | $double | $(pct "$double" "$warm") | $double_anon | $(pct "$double_anon" "$warm_anon") |"
  echo
  echo "admissions counted by the webhook: $served; idle means no connection open, 1 s after the last"
  stop_pid "$webhook_pid"
fi
