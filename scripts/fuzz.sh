#!/usr/bin/env bash
# Fuzzes the webhook's AdmissionReview handling and the IDaaS token response checks with
# cargo-fuzz (libFuzzer). Run by hand, not in CI: it needs a nightly toolchain, takes minutes
# per target and is CPU-bound.
#
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#   SECONDS_PER_TARGET  default 60
#   TARGET              admission_review, token_response (default: both, one after the other)
#
# The committed seeds in fuzz/corpus/<target>/ are only read; what the fuzzer discovers goes to
# fuzz/target/corpus/<target>/ (ignored by git), so later runs resume from it. A crash leaves its
# input in fuzz/artifacts/<target>/ and makes this script exit non-zero.
set -euo pipefail

cd "$(dirname "$0")/.."

ALL_TARGETS=(admission_review token_response)
seconds="${1:-60}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -eq 0 ]; then
    echo "usage: $0 [SECONDS_PER_TARGET] [TARGET...]  (targets: ${ALL_TARGETS[*]})" >&2
    exit 2
fi
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=("${ALL_TARGETS[@]}")
fi

max_len() {
    case "$1" in
        admission_review) echo 16384 ;;
        token_response) echo 8192 ;;
        *)
            echo "unknown target $1 (targets: ${ALL_TARGETS[*]})" >&2
            return 1
            ;;
    esac
}
for t in "${targets[@]}"; do
    max_len "$t" >/dev/null
done

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "a nightly toolchain is needed: rustup toolchain install nightly" >&2
    exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

failed=()
for t in "${targets[@]}"; do
    work="fuzz/target/corpus/$t"
    artifacts="fuzz/artifacts/$t"
    mkdir -p "$work" "$artifacts"
    marker="$(mktemp)"
    echo "== $t: ${seconds}s, seeds fuzz/corpus/$t, working corpus $work" >&2
    if ! cargo +nightly fuzz run "$t" "$work" "fuzz/corpus/$t" -- \
        -max_total_time="$seconds" -max_len="$(max_len "$t")" -timeout=10 \
        -print_final_stats=1; then
        failed+=("$t")
        echo "== $t FAILED. New artifacts:" >&2
        find "$artifacts" -type f -newer "$marker" -print >&2 || true
        cat >&2 <<HELP
To investigate and keep it as a regression fixture:
  cargo +nightly fuzz fmt $t <artifact>          # show the input
  cargo +nightly fuzz tmin $t <artifact>         # minimise it (optional)
  cp <artifact> tests/data/fuzz/$t/<short-descriptive-name>
  cargo test --test fuzz_regressions             # replays it on stable; fix until it passes
HELP
    fi
    rm -f "$marker"
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzzing found failures in: ${failed[*]}" >&2
    exit 1
fi
echo "no crash in: ${targets[*]}" >&2
