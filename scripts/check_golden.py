#!/usr/bin/env python3
"""Independent check of the golden admission cases in tests/data/admission/.

The Rust golden test (tests/golden.rs) compares the webhook's answers with the `expect` recorded in
each case file. This script checks those recorded answers with tools that share no code with the
webhook:

- every allowed case's input object (request.object) must be a valid Kubernetes object;
- every allowed case with a patch: the patch is applied to request.object with the `jsonpatch`
  package (RFC 6902), and the mutated pod must be a valid Pod;
- validity is checked with `kubernetes_validate` in strict mode (no unknown fields) against the
  Kubernetes API schema of KUBERNETES_VERSION.

Denied cases have nothing to apply and are reported as skipped (they count as passed).

Fields named `future*` (for example `spec.futureField`, `metadata.futureMeta`,
`spec.containers[0].futureContainerField` in unknown-fields-survive.json) stand for fields a newer
Kubernetes knows and this webhook build does not. The Rust test shows they survive the patch; here
they would fail strict validation by design, so they are first checked to be unchanged by the patch
and then stripped (recursively, any key whose name starts with "future") before validation.

Usage: scripts/check_golden.py [CASE_DIR]
Setup: python3 -m venv .venv && .venv/bin/pip install -r scripts/requirements-ci.txt
Prints one line per case and a final line `N passed, M failed`; exits 1 on any failure.
"""

import copy
import json
import sys
from pathlib import Path

import jsonpatch
import kubernetes_validate

KUBERNETES_VERSION = "1.33.0"
UNKNOWN_FIELD_PREFIX = "future"

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DIR = REPO / "tests" / "data" / "admission"


def strip_future(value):
    """A copy of `value` without any object key starting with UNKNOWN_FIELD_PREFIX."""
    if isinstance(value, dict):
        return {
            k: strip_future(v)
            for k, v in value.items()
            if not k.startswith(UNKNOWN_FIELD_PREFIX)
        }
    if isinstance(value, list):
        return [strip_future(v) for v in value]
    return value


def future_fields(value, path=""):
    """Every (path, value) of a key starting with UNKNOWN_FIELD_PREFIX, for the survival check."""
    found = {}
    if isinstance(value, dict):
        for k, v in value.items():
            p = f"{path}/{k}"
            if k.startswith(UNKNOWN_FIELD_PREFIX):
                found[p] = v
            else:
                found.update(future_fields(v, p))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found.update(future_fields(v, f"{path}/{i}"))
    return found


def validate(obj, what):
    """Raises ValueError with a one-line reason when `obj` is not a valid object."""
    try:
        kubernetes_validate.validate(strip_future(obj), KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        where = ".".join(str(p) for p in e.path) or "<root>"
        raise ValueError(f"{what} is invalid at {where}: {e.message}") from None
    except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.InvalidSchemaError) as e:
        raise ValueError(f"{what}: {e.message}") from None


def check_case(path):
    """Returns a one-line status for a passing case; raises ValueError for a failing one."""
    case = json.loads(path.read_text())
    expect = case.get("expect")
    if not isinstance(expect, dict):
        raise ValueError("expect is missing: run UPDATE_GOLDEN=1 cargo test --test golden")
    if expect.get("allowed") is not True:
        if not expect.get("message"):
            raise ValueError("denied without a message")
        return "denied, nothing to apply"

    obj = case["review"]["request"].get("object")
    if obj is None:
        return "allowed, no object"
    if obj.get("apiVersion") is None or obj.get("kind") is None:
        raise ValueError("request.object has no apiVersion or kind")
    validate(obj, f"input {obj['kind']}")

    patch = expect.get("patch")
    if patch is None:
        return f"allowed, no patch; input {obj['kind']} valid"
    if obj["kind"] != "Pod":
        raise ValueError(f"a patch for a {obj['kind']}: only Pods are mutated")
    try:
        mutated = jsonpatch.JsonPatch(patch).apply(copy.deepcopy(obj))
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as e:
        raise ValueError(f"the patch does not apply: {e}") from None

    before, after = future_fields(obj), future_fields(mutated)
    if before != after:
        raise ValueError(f"the patch changed unknown fields: {before} -> {after}")
    validate(mutated, "patched Pod")
    note = f", {len(before)} unknown field(s) stripped" if before else ""
    return f"allowed, {len(patch)} op(s) applied; input and patched Pod valid{note}"


def main(argv):
    directory = Path(argv[1]) if len(argv) > 1 else DEFAULT_DIR
    files = sorted(directory.glob("*.json"))
    if not files:
        print(f"no case files in {directory}", file=sys.stderr)
        return 1
    passed = failed = 0
    for path in files:
        try:
            status = check_case(path)
        except Exception as e:  # one bad case must not hide the others
            failed += 1
            print(f"FAIL {path.stem}: {e}")
        else:
            passed += 1
            print(f"ok   {path.stem}: {status}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
