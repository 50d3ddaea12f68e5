"""Runs every fenced block of README.md marked runnable against `idaas-projector dev`, exactly as
written, so that an example that no longer works fails CI.

A block is runnable when the line before its opening fence is `<!-- ci: run -->`. Languages:
`sh` (bash, `set -euo pipefail`), `python` (this interpreter: the .venv with the Python SDK) and
`js` (node, with the Node.js SDK of tests/node/node_modules). Every block runs in one working
directory in which `dev` runs with its defaults (so `.idaas-projector/...` and the default ports
are the README's), with `docs/` linked in, `idaas-projector` on PATH, and the environment a
reader has after running the `export` lines `dev` prints (plus NODE_EXTRA_CA_CERTS for node).

Usage: check_readme.py BINARY [README]
"""

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARKER = "<!-- ci: run -->"
BLOCK_TIMEOUT = 90
DEV_START_TIMEOUT = 120


def runnable_blocks(readme: str):
    """(line number, language, code) of each marked block; a marker without a fence is an error."""
    lines = readme.splitlines()
    blocks = []
    for i, line in enumerate(lines):
        if line.strip() != MARKER:
            continue
        fence = re.fullmatch(r"```(\w+)\s*", lines[i + 1]) if i + 1 < len(lines) else None
        if not fence:
            sys.exit(f"README line {i + 1}: {MARKER} must be followed at once by a fenced block")
        end = next((j for j in range(i + 2, len(lines)) if lines[j].startswith("```")), None)
        if end is None:
            sys.exit(f"README line {i + 2}: the fenced block never closes")
        blocks.append((i + 2, fence.group(1), "\n".join(lines[i + 2 : end]) + "\n"))
    return blocks


def command(lang: str, path: Path):
    if lang in ("sh", "bash"):
        return ["bash", "-euo", "pipefail", str(path)]
    if lang == "python":
        return [sys.executable, str(path)]
    if lang == "js":
        return ["node", str(path)]
    sys.exit(f"a runnable block in {lang!r}: only sh, python and js can be run")


def start_dev(binary: Path, work: Path):
    """`dev` with its defaults in `work`; returns (process, the env its export lines set)."""
    out = open(work / "dev.out", "w")
    err = open(work / "dev.err", "w")
    proc = subprocess.Popen([str(binary), "dev"], cwd=work, stdout=out, stderr=err)
    token = work / ".idaas-projector" / "token"
    deadline = time.monotonic() + DEV_START_TIMEOUT

    def ready():
        banner = (work / "dev.out").read_text()
        return token.exists() and token.stat().st_size > 0 and "export ALIBABA_CLOUD_" in banner

    while not ready():
        if proc.poll() is not None:
            sys.exit(
                "idaas-projector dev exited before its token appeared (is another dev, or "
                "anything else, on ports 9443, 8080, 18080-18082?):\n"
                + (work / "dev.err").read_text()
            )
        if time.monotonic() > deadline:
            proc.kill()
            sys.exit(f"no token from dev within {DEV_START_TIMEOUT} s:\n" + (work / "dev.err").read_text())
        time.sleep(0.2)
    exports = {}
    for line in (work / "dev.out").read_text().splitlines():
        m = re.fullmatch(r"export (ALIBABA_CLOUD_\w+)=(\S+)", line.strip())
        if m:
            exports[m.group(1)] = m.group(2)
    if "ALIBABA_CLOUD_OIDC_TOKEN_FILE" not in exports:
        proc.kill()
        sys.exit("dev printed no `export ALIBABA_CLOUD_...` lines:\n" + (work / "dev.out").read_text())
    return proc, exports


def run_block(work: Path, env: dict, index: int, line: int, lang: str, code: str) -> bool:
    ext = {"sh": "sh", "bash": "sh", "python": "py", "js": "mjs"}.get(lang, lang)
    path = work / f"readme-block-{index}.{ext}"
    path.write_text(code)
    proc = subprocess.Popen(
        command(lang, path), cwd=work, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=BLOCK_TIMEOUT)
        ok, why = proc.returncode == 0, f"exit status {proc.returncode}"
    except subprocess.TimeoutExpired:
        ok, why = False, f"still running after {BLOCK_TIMEOUT} s"
        output = ""
    finally:
        # Whatever the block started in the background goes with it.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if proc.returncode is None:
            output = proc.communicate()[0]
    print(f"{'PASS' if ok else 'FAIL'} README.md:{line} ({lang})")
    if not ok:
        print(f"  {why}; the block:\n{code}  its output:\n{output}")
    return ok


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    binary = Path(sys.argv[1]).resolve()
    readme = Path(sys.argv[2]) if len(sys.argv) == 3 else ROOT / "README.md"
    blocks = runnable_blocks(readme.read_text())
    if not blocks:
        sys.exit(f"no block of {readme} is marked {MARKER}")
    with tempfile.TemporaryDirectory(prefix="readme-") as tmp:
        work = Path(tmp)
        (work / "docs").symlink_to(ROOT / "docs")
        (work / "node_modules").symlink_to(ROOT / "tests" / "node" / "node_modules")
        proc, exports = start_dev(binary, work)
        env = dict(os.environ, **exports)
        env["PATH"] = f"{binary.parent}{os.pathsep}{env.get('PATH', '')}"
        env["NODE_EXTRA_CA_CERTS"] = str(work / ".idaas-projector" / "ca.pem")
        try:
            results = [run_block(work, env, i, *b) for i, b in enumerate(blocks)]
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
    failed = results.count(False)
    print(f"{len(results) - failed} of {len(results)} runnable README blocks passed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
