#!/usr/bin/env bash
# The whole test suite: formatting, lints, every Rust test, and the independent Python check of
# the golden admission cases (RFC 6902 patches applied with `jsonpatch`, the mutated pods
# validated with `kubernetes-validate --strict` against Kubernetes 1.33).
#
# Needs: a Rust toolchain and python3 with venv. Python packages go into ./.venv (inside the
# checkout), created on first run.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings

step "cargo test"
cargo test --locked

step "Python tools (.venv)"
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import jsonpatch, kubernetes_validate' 2>/dev/null; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements-ci.txt
fi

step "golden cases: jsonpatch + kubernetes-validate --strict (Kubernetes 1.33)"
.venv/bin/python scripts/check_golden.py
