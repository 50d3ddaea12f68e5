#!/usr/bin/env bash
# The whole test suite: formatting, lints, every Rust test, and the independent Python check of
# the golden admission cases (RFC 6902 patches applied with `jsonpatch`, the mutated pods
# validated with `kubernetes-validate --strict` against Kubernetes 1.33), and the Helm chart,
# manifest and Dockerfile checks of scripts/check-chart.sh. The official Python and Node.js
# credentials SDKs obtain credentials from `idaas-projector dev`, and so does every README block
# marked runnable (scripts/check_readme.py).
#
# Needs: a Rust toolchain, python3 with venv, node with npm, and unzip. Python packages go into
# ./.venv, the Node.js SDK into tests/node/node_modules (from its package-lock.json), and helm
# and kubectl into ./.tools (inside the checkout), installed on first run.
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

step "the official Python credentials SDK against \`idaas-projector dev\`"
if ! .venv/bin/python -c 'import alibabacloud_credentials' 2>/dev/null; then
  .venv/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements-sdk.txt
fi
cargo build --locked --quiet
.venv/bin/python tests/python/sdk_dev_test.py target/debug/idaas-projector

step "the official Python credentials SDK against \`idaas-projector dev --auth federated_oidc\` (no client secret)"
.venv/bin/python tests/python/sdk_dev_test.py target/debug/idaas-projector --auth federated_oidc

step "the official Node.js credentials SDK against \`idaas-projector dev\` (its STS emulator over HTTPS)"
# npm ci again only when package-lock.json differs from the one installed last (npm ci empties
# node_modules first, so the copy goes with it).
if ! cmp -s tests/node/package-lock.json tests/node/node_modules/.installed-package-lock.json; then
  (cd tests/node && npm ci --no-audit --no-fund --loglevel=error)
  cp tests/node/package-lock.json tests/node/node_modules/.installed-package-lock.json
fi
cargo build --locked --quiet
node tests/node/sdk_dev_test.mjs target/debug/idaas-projector

step "README: every block marked <!-- ci: run --> runs as written against \`idaas-projector dev\`"
.venv/bin/python scripts/check_readme.py target/debug/idaas-projector

step "Helm chart, manifests and Dockerfile: lint, renderings, kubernetes-validate, checkov"
./scripts/check-chart.sh
