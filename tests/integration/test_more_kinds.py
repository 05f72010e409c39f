"""The kinds stored and served but not enforced (RBAC, CronJob, PDB, Ingress, NetworkPolicy, HPA,
PriorityClass, StorageClass, PV) through real kubectl: apply, `get` columns, typed `create` (protobuf bodies),
and the update rules kube-apiserver enforces (roleRef is immutable)."""

from __future__ import annotations

import json

from tests.apiserver_proc import ApiServerProc

# No controller may act on these objects while the test reads them back (the cronjob controller would).
APISERVER_CONTROLLERS = "none"

MANIFEST = """
apiVersion: v1
kind: ServiceAccount
metadata: {name: builder, namespace: default}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: node-viewer}
rules:
- {apiGroups: [""], resources: [nodes], verbs: [get, list, watch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: builder-nodes}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: node-viewer}
subjects:
- {kind: ServiceAccount, name: builder, namespace: default}
- {kind: User, name: alice}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: pod-reader, namespace: default}
rules:
- {apiGroups: [""], resources: [pods], verbs: [get, list]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: builder-pods, namespace: default}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: pod-reader}
subjects:
- {kind: ServiceAccount, name: builder}
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: backup, namespace: default}
spec:
  schedule: "0 3 * * MON-FRI"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          containers: [{name: backup, image: busybox:1.36}]
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: web, namespace: default}
spec:
  minAvailable: 2
  selector: {matchLabels: {app: web}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web, namespace: default}
spec:
  ingressClassName: nginx
  rules:
  - host: web.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-egress, namespace: default}
spec:
  podSelector: {matchLabels: {app: web}}
  egress: [{to: [{ipBlock: {cidr: 10.0.0.0/8}}]}]
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: web, namespace: default}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  maxReplicas: 5
  metrics:
  - type: Resource
    resource: {name: cpu, target: {type: Utilization, averageUtilization: 70}}
---
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: batch-low}
value: 100
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: local-disk}
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: WaitForFirstConsumer
---
apiVersion: v1
kind: PersistentVolume
metadata: {name: disk-1}
spec:
  capacity: {storage: 5Gi}
  accessModes: [ReadWriteOnce]
  storageClassName: local-disk
  hostPath: {path: /var/data/disk-1}
"""


def get_json(srv: ApiServerProc, *args: str) -> dict:
    return json.loads(srv.kubectl("get", *args, "-o", "json").stdout)


def rows(srv: ApiServerProc, *args: str) -> list[list[str]]:
    """`kubectl get` output split into columns (multi-word cells are not used in these checks)."""
    lines = srv.kubectl("get", *args).stdout.strip().splitlines()
    return [line.split() for line in lines]


def test_apply_manifest_defaults_and_columns(apiserver: ApiServerProc) -> None:
    out = apiserver.kubectl("apply", "-f", "-", input=MANIFEST).stdout
    assert out.count("created") == 13, out

    cj = get_json(apiserver, "cronjob", "backup")
    assert cj["spec"]["concurrencyPolicy"] == "Allow" and cj["spec"]["successfulJobsHistoryLimit"] == 3
    assert cj["spec"]["jobTemplate"]["spec"]["backoffLimit"] == 6
    netpol = get_json(apiserver, "networkpolicy", "web-egress")
    assert netpol["spec"]["policyTypes"] == ["Ingress", "Egress"]
    crb = get_json(apiserver, "clusterrolebinding", "builder-nodes")
    assert [s.get("apiGroup") for s in crb["subjects"]] == ["", "rbac.authorization.k8s.io"]
    assert get_json(apiserver, "pv", "disk-1")["spec"]["persistentVolumeReclaimPolicy"] == "Retain"

    header, cron = rows(apiserver, "cronjobs")
    assert header == ["NAME", "SCHEDULE", "TIMEZONE", "SUSPEND", "ACTIVE", "LAST", "SCHEDULE", "AGE"]
    # The schedule cell holds spaces, so it spans five split columns.
    assert cron[:10] == ["backup", "0", "3", "*", "*", "MON-FRI", "<none>", "False", "0", "<none>"]
    header, pdb = rows(apiserver, "pdb")
    assert header[:4] == ["NAME", "MIN", "AVAILABLE", "MAX"] and pdb[:4] == ["web", "2", "N/A", "0"]
    header, ing = rows(apiserver, "ingress")
    assert header[:5] == ["NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS"]
    assert ing[:4] == ["web", "nginx", "web.example.com", "80"]
    _, hpa = rows(apiserver, "hpa")
    assert hpa[:6] == ["web", "Deployment/web", "cpu:", "<unknown>/70%", "1", "5"]
    _, pc = rows(apiserver, "priorityclass", "batch-low")
    assert pc[:4] == ["batch-low", "100", "false", "PreemptLowerPriority"]
    _, sc = rows(apiserver, "storageclass")
    assert sc[:5] == ["local-disk", "kubernetes.io/no-provisioner", "Delete", "WaitForFirstConsumer", "false"]
    _, pv = rows(apiserver, "pv")
    assert pv[:7] == ["disk-1", "5Gi", "RWO", "Retain", "Pending", "local-disk", "<unset>"]
    _, rb = rows(apiserver, "rolebinding", "builder-pods", "-o", "wide")
    assert rb[:2] == ["builder-pods", "Role/pod-reader"] and rb[-1] == "builder"
    _, np_ = rows(apiserver, "netpol")
    assert np_[:2] == ["web-egress", "app=web"]


def test_typed_kubectl_create_commands(apiserver: ApiServerProc) -> None:
    ns = ["-n", "default"]
    for args in (
        ["role", "cm-reader", "--verb=get,list", "--resource=configmaps"],
        ["rolebinding", "cm-readers", "--role=cm-reader", "--user=bob", "--serviceaccount=default:builder"],
        ["clusterrole", "healthz", "--verb=get", "--non-resource-url=/healthz"],
        ["clusterrolebinding", "healthz-all", "--clusterrole=healthz", "--group=system:authenticated"],
        ["pdb", "api", "--selector=app=api", "--max-unavailable=25%"],
        ["priorityclass", "urgent", "--value=100000", "--preemption-policy=Never"],
        ["ingress", "api", "--rule=api.example.com/v1*=api:8080", "--class=nginx"],
        ["quota", "small", "--hard=pods=4,cpu=2"],
        ["cronjob", "tick", "--image=busybox", "--schedule=@hourly"],
    ):
        res = apiserver.kubectl("create", *args, *ns)
        assert "created" in res.stdout, (args, res.stdout, res.stderr)

    rb = get_json(apiserver, "rolebinding", "cm-readers")
    assert rb["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "cm-reader"}
    assert rb["subjects"][1] == {
        "kind": "ServiceAccount",
        "name": "builder",
        "namespace": "default",
        "apiGroup": "",
    }
    assert get_json(apiserver, "pdb", "api")["spec"]["maxUnavailable"] == "25%"
    pc = get_json(apiserver, "priorityclass", "urgent")
    assert (pc["value"], pc["preemptionPolicy"]) == (100000, "Never")
    path = get_json(apiserver, "ingress", "api")["spec"]["rules"][0]["http"]["paths"][0]
    assert (path["path"], path["pathType"]) == ("/v1", "Prefix")
    assert get_json(apiserver, "cronjob", "tick")["spec"]["schedule"] == "@hourly"
    header, quota = rows(apiserver, "quota", "small")
    assert header == ["NAME", "AGE", "REQUEST", "LIMIT"] and quota[2:] == ["cpu:", "0/0,", "pods:", "0/0"]


def test_invalid_objects_and_immutable_fields_are_refused(apiserver: ApiServerProc) -> None:
    apiserver.kubectl("create", "clusterrole", "viewer-a", "--verb=get", "--resource=pods")
    apiserver.kubectl("create", "clusterrole", "viewer-b", "--verb=list", "--resource=pods")
    apiserver.kubectl("create", "clusterrolebinding", "viewers", "--clusterrole=viewer-a", "--user=carol")
    changed = get_json(apiserver, "clusterrolebinding", "viewers")
    changed["roleRef"]["name"] = "viewer-b"
    res = apiserver.kubectl("replace", "-f", "-", input=json.dumps(changed), check=False)
    assert res.returncode != 0
    assert "is invalid: roleRef: Invalid value" in res.stderr and "cannot change roleRef" in res.stderr
    # Subjects may change freely.
    apiserver.kubectl(
        "patch",
        "clusterrolebinding",
        "viewers",
        "--type=json",
        "-p",
        '[{"op": "add", "path": "/subjects/-", "value": {"kind": "User", "name": "dave"}}]',
    )

    bad_cron = apiserver.kubectl(
        "create", "cronjob", "bad", "--image=busybox", "--schedule=61 * * * *", check=False
    )
    assert bad_cron.returncode != 0 and "spec.schedule: Invalid value" in bad_cron.stderr
    bad_ingress = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": "bad", "namespace": "default"},
        "spec": {
            "rules": [
                {
                    "http": {
                        "paths": [
                            {"path": "/", "backend": {"service": {"name": "web", "port": {"number": 80}}}}
                        ]
                    }
                }
            ]
        },
    }
    res = apiserver.kubectl("apply", "-f", "-", input=json.dumps(bad_ingress), check=False)
    assert res.returncode != 0 and "spec.rules[0].http.paths[0].pathType: Required value" in res.stderr
    res = apiserver.kubectl("patch", "priorityclass", "batch-low", "-p", '{"value": 5}', check=False)
    assert res.returncode != 0 and "value: Forbidden: may not be changed in an update" in res.stderr
