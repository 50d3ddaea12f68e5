#!/usr/bin/env python3
"""Writes an AdmissionReview (CREATE of an annotated v1 Pod) of about SIZE bytes to OUT.

The pod is a typical Deployment pod: an app container and a proxy sidecar with env, probes,
resources and mounts, the ServiceAccount token volume, owner references and managed fields.
Larger sizes add what makes real pods large: env vars and a kubectl last-applied-configuration
annotation.

    benches/make_review.py 4096 /tmp/review-4k.json
"""
import json
import sys


def container(name, image, port):
    return {
        "name": name,
        "image": image,
        "ports": [{"containerPort": port, "protocol": "TCP"}],
        "env": [
            {"name": "LOG_LEVEL", "value": "info"},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        ],
        "resources": {"limits": {"cpu": "500m", "memory": "256Mi"},
                      "requests": {"cpu": "100m", "memory": "128Mi"}},
        "readinessProbe": {"httpGet": {"path": "/ready", "port": port}, "periodSeconds": 5},
        "volumeMounts": [{"name": "kube-api-access-x7k2p", "readOnly": True,
                          "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}],
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "imagePullPolicy": "IfNotPresent",
    }


def review(pad_env, last_applied):
    annotations = {
        "idaas-projector.io/m2m-token": "payments",
        "idaas-projector.io/role-arn": "acs:ram::1234567890123456:role/payments",
    }
    if last_applied:
        annotations["kubectl.kubernetes.io/last-applied-configuration"] = last_applied
    app = container("app", "registry.example.com/shop/payments:1.42.0", 8080)
    app["env"] += [{"name": f"FEATURE_FLAG_{i:04d}", "value": f"value-{i:04d}-" + "x" * 24}
                   for i in range(pad_env)]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "payments-7d9c6b5f4-",
            "namespace": "shop",
            "labels": {"app": "payments", "pod-template-hash": "7d9c6b5f4"},
            "annotations": annotations,
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                 "name": "payments-7d9c6b5f4", "controller": True,
                                 "blockOwnerDeletion": True,
                                 "uid": "3f0c2a1e-5b7d-4c2e-9f1a-8e6d4c2b0a19"}],
        },
        "spec": {
            "serviceAccountName": "payments",
            "containers": [app, container("proxy", "registry.example.com/mesh/proxy:2.3.1", 15001)],
            "volumes": [{"name": "kube-api-access-x7k2p", "projected": {"defaultMode": 420, "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace",
                                            "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}]}}],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "schedulerName": "default-scheduler",
            "enableServiceLinks": True,
            "preemptionPolicy": "PreemptLowerPriority",
            "priority": 0,
            "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists",
                             "effect": "NoExecute", "tolerationSeconds": 300}],
        },
    }
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "shop",
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller",
                         "uid": "a4f6e0b2-1c3d-4e5f-8a9b-0c1d2e3f4a5b",
                         "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system",
                                    "system:authenticated"]},
            "object": pod,
            "oldObject": None,
            "dryRun": False,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
        },
    }


def main():
    size, out = int(sys.argv[1]), sys.argv[2]
    # Half of what is above the base goes to a last-applied annotation, half to env vars.
    base = len(json.dumps(review(0, None)))
    extra = max(0, size - base)
    last_applied = None
    if extra > 8192:
        last_applied = json.dumps({"apiVersion": "apps/v1", "kind": "Deployment",
                                   "metadata": {"name": "payments"}, "spec": {"note": ""}})
        last_applied = last_applied.replace('"note": ""', '"note": "' + "d" * (extra // 2) + '"')
    body = review(0, last_applied)
    n = 0
    while len(json.dumps(body)) < size:
        n += 1
        body = review(n, last_applied)
    with open(out, "w") as f:
        json.dump(body, f)
    print(f"{out}: {len(json.dumps(body))} bytes ({n} extra env vars)")


if __name__ == "__main__":
    main()
