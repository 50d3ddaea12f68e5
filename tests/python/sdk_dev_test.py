#!/usr/bin/env python3
"""The official Alibaba Cloud credentials SDK for Python against `idaas-projector dev`.

Starts `idaas-projector dev` on free ports with short-lived tokens, then:
1. the SDK's OIDC provider reads the token file kept by dev and obtains credentials from the
   STS emulator (sts_endpoint="http://127.0.0.1:PORT");
2. after the projector has refreshed the file, a new provider obtains credentials again with
   the new token;
3. the webhook answers the sample AdmissionReview from the repository over HTTPS, trusting the
   CA dev wrote;
4. Ctrl-C (SIGINT) stops dev with exit status 0.

Usage: tests/python/sdk_dev_test.py PATH_TO_idaas-projector
Prints one line per check and `N passed, M failed`.
"""

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request

from alibabacloud_credentials.provider import OIDCRoleArnCredentialsProvider

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
results = []


def check(name, ok, detail=""):
    results.append(ok)
    print(f"{'ok  ' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, predicate, timeout=60.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise TimeoutError(f"timed out waiting for {what}")


def credentials(info, session):
    provider = OIDCRoleArnCredentialsProvider(
        role_arn=info["role_arn"],
        oidc_provider_arn=info["oidc_provider_arn"],
        oidc_token_file_path=info["token_file"],
        role_session_name=session,
        sts_endpoint=info["sts_endpoint"],
    )
    return provider.get_credentials()


def main():
    binary = sys.argv[1]
    extra = sys.argv[2:]  # more `dev` flags, e.g. --auth federated_oidc
    work = tempfile.mkdtemp(prefix="idaas-projector-dev-")
    ports = [free_port() for _ in range(5)]
    log = open(os.path.join(work, "dev.log"), "w")
    proc = subprocess.Popen(
        [binary, "dev", "--dir", work, "--token-lifetime", "15s",
         "--listen", f"127.0.0.1:{ports[0]}", "--admin-listen", f"127.0.0.1:{ports[1]}",
         "--idaas-listen", f"127.0.0.1:{ports[2]}", "--sts-listen", f"127.0.0.1:{ports[3]}",
         "--sts-https-listen", f"127.0.0.1:{ports[4]}", *extra],
        stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        info_path = os.path.join(work, "dev.json")
        wait_for("dev.json", lambda: os.path.exists(info_path))
        info = json.load(open(info_path))
        token_path = info["token_file"]
        if "federated_oidc" in extra:
            assertion = info.get("client_assertion_file", "")
            check("dev authenticates with a federated credential, no secret",
                  info.get("auth") == "federated_oidc" and os.path.exists(assertion)
                  and open(assertion).read().count(".") == 2, info.get("auth"))
        first = wait_for("the token file", lambda: os.path.exists(token_path) and open(token_path).read())
        check("dev writes the token file", first.count(".") == 2)

        cred = credentials(info, "sdk-test-1")
        check("the SDK obtains credentials with the token file",
              cred.get_access_key_id().startswith("STS.") and bool(cred.get_security_token()),
              cred.get_access_key_id()[:6] + "***")

        second = wait_for("a refreshed token", lambda: (t := open(token_path).read()) != first and t, timeout=40)
        check("the projector refreshed the token file", second.count(".") == 2 and second != first)
        cred2 = credentials(info, "sdk-test-2")
        check("the SDK obtains credentials again after the refresh",
              cred2.get_access_key_id().startswith("STS."))

        ctx = ssl.create_default_context(cafile=info["ca_file"])
        body = open(os.path.join(REPO, "docs/examples/admission-review.json"), "rb").read()
        req = urllib.request.Request(info["webhook"], data=body, headers={"Content-Type": "application/json"})
        answer = json.load(urllib.request.urlopen(req, context=ctx, timeout=10))
        check("the webhook answers the sample AdmissionReview over TLS with dev's CA",
              answer["response"]["allowed"] is True and answer["response"].get("patchType") == "JSONPatch")
    except Exception as e:  # noqa: BLE001 - report any failure as a failed check
        check("dev end to end", False, f"{type(e).__name__}: {e}")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = None
        check("Ctrl-C stops dev cleanly", code == 0, f"exit status {code}")
        log.close()
        if not all(results):
            print(open(os.path.join(work, "dev.log")).read())
    passed = sum(results)
    print(f"{passed} passed, {len(results) - passed} failed")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
