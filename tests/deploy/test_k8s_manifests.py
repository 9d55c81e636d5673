"""deploy/k8s builds with ``kubectl kustomize``, validates against the Kubernetes and KEDA schemas, and holds together.

No cluster here: what a cluster would refuse or get wrong is checked offline. Every YAML file parses. The manifests,
as written and as kustomize builds them, validate against the Kubernetes OpenAPI schemas that the
``kubernetes-validate`` package ships (strict: an unknown field is an error), for the oldest and the newest version it
has. The ScaledObject and TriggerAuthentication validate against the ``cloudcoil-models-keda`` pydantic models
(generated from KEDA's CRDs); those models ignore unknown fields, so each resource must also come back unchanged from
the model (a misspelt field would be dropped). The build is made as an operator makes it (README.md): deploy/k8s and
deploy/redis copied to tmp, the shipped model files in model/, generated passwords and an openssl test CA in secrets/.

Then what schemas cannot see: every file of deploy/k8s is used by kustomization.yaml; every Secret, ConfigMap, key and
``$(VAR)`` a pod names exists; capture is the host-network sensor with its capabilities; every container has probes on
/livez and /readyz, requests and limits and no root (capture excepted, as its manifest says why); the ScaledObject
scales the workers Deployment on the lag of group ``workers`` on ``tapwatch:windows``; Redis is reached over TLS with
one ACL user per stage, and the NetworkPolicies let exactly the right pods in.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.env import REPO, need
from tests.support.tls import make_test_ca

try:  # the test extra's kubernetes-validate (it brings PyYAML) and cloudcoil-models-keda
    import kubernetes_validate
    import yaml
    from cloudcoil.models.keda import v1alpha1 as keda_models
except ImportError as err:  # need() skips, or fails under CI=true
    MISSING: str | None = f"{err.name} is not installed (pip install kubernetes-validate cloudcoil-models-keda)"
else:
    MISSING = None


@pytest.fixture(autouse=True, scope="module")
def _packages() -> None:
    need(MISSING is None, str(MISSING))


K8S = REPO / "deploy" / "k8s"
REDIS = REPO / "deploy" / "redis"
K8S_VERSIONS = ("1.30.0", "1.37.0")  # the oldest and the newest schemas kubernetes-validate 1.37 ships
KEDA_KINDS = {"ScaledObject", "TriggerAuthentication"}
MODEL_FILES = ("hybrid-lab.onnx", "hybrid-lab.card.json", "hybrid-lab.profile.json")
PASSWORDS = ("capture", "worker", "alerter", "console", "probe", "keda", "console-admin")
PORTS = {"capture": 9640, "worker": 9641, "alerter": 9642, "console": 9643}
ROOT_ALLOWED = {"capture"}  # live capture needs root with NET_RAW/NET_ADMIN: capture-daemonset.yaml says why
CONFIGMAP_LIMIT = 1024 * 1024


def _yaml_files() -> list[Path]:
    return sorted([*K8S.rglob("*.yaml"), *REDIS.rglob("*.yaml")])


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _operator_files(k8s: Path) -> None:
    """What README.md has the operator put in model/ and secrets/: the shipped model, passwords, a CA and a cert."""
    for name in MODEL_FILES:
        shutil.copy(REPO / "models" / name, k8s / "model" / name)
    secrets_dir = k8s / "secrets"
    for user in PASSWORDS:
        (secrets_dir / f"{user}.env").write_text(f"password=test-{user}-0123456789abcdef\n")
    make_test_ca(secrets_dir, "DNS:tapwatch-redis.tapwatch.svc.cluster.local")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """``kubectl kustomize deploy/k8s`` on an operator's copy of deploy/."""
    kubectl = shutil.which("kubectl")
    need(kubectl is not None, "kubectl is not on PATH")
    assert kubectl is not None
    deploy = tmp_path_factory.mktemp("deploy") / "deploy"
    shutil.copytree(K8S, deploy / "k8s")
    shutil.copytree(REDIS, deploy / "redis")
    _operator_files(deploy / "k8s")
    out = subprocess.run([kubectl, "kustomize", str(deploy / "k8s")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d is not None]


def _by(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _unhashed(name: str) -> str:
    """A generated ConfigMap's or Secret's name without kustomize's content hash."""
    return re.sub(r"-[a-z0-9]{10}$", "", name)


def _workloads(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(component, pod spec) of every Deployment, DaemonSet and StatefulSet."""
    for d in docs:
        if d["kind"] in ("Deployment", "DaemonSet", "StatefulSet"):
            yield d["metadata"]["labels"]["app.kubernetes.io/component"], d["spec"]["template"]["spec"]


def test_every_yaml_file_parses() -> None:
    files = _yaml_files()
    assert len(files) >= 10
    for path in files:
        for doc in _docs(path):
            assert isinstance(doc, dict) and ("kind" in doc or path.name == "keda-secret-names.yaml"), path


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_kubernetes_schemas(built: list[dict[str, Any]], version: str) -> None:
    """Every manifest, as written and as built, against the Kubernetes schemas (strict)."""
    written = [d for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml" for d in _docs(p)]
    checked = 0
    for doc in [*written, *built]:
        if doc["kind"] in KEDA_KINDS:
            continue
        kubernetes_validate.validate(doc, version, strict=True)
        checked += 1
    assert checked >= 2 * 20


def test_keda_schemas(built: list[dict[str, Any]]) -> None:
    """The ScaledObject and TriggerAuthentication against KEDA's models, unknown fields included."""
    found = [d for d in built if d["kind"] in KEDA_KINDS]
    assert sorted(d["kind"] for d in found) == sorted(KEDA_KINDS)
    for doc in found:
        model = getattr(keda_models, doc["kind"]).model_validate(doc)
        assert model.model_dump(by_alias=True, exclude_none=True) == doc, f"{doc['kind']}: a field KEDA does not know"


def test_kustomization_uses_every_file() -> None:
    """Every file of deploy/k8s is listed in its kustomization.yaml (README.md and the .gitignore files of the
    operator's folders model/ and secrets/ aside), and deploy/redis's too."""
    for folder, extra in ((K8S, {"README.md"}), (REDIS, {"README.md"})):
        text = (folder / "kustomization.yaml").read_text()
        listed = set(re.findall(r"[\w./-]+\.(?:yaml|env|config|txt|conf|acl|sh)", text))
        for path in folder.rglob("*"):
            rel = path.relative_to(folder).as_posix()
            if path.is_dir() or rel in extra or rel == "kustomization.yaml" or path.name == ".gitignore":
                continue
            assert rel in listed, f"{folder.name}/{rel} is not in kustomization.yaml"
    for folder in ("model", "secrets"):  # only the operator's files go there, and git ignores them all
        assert (K8S / folder / ".gitignore").read_text().split("\n")[-3:] == ["*", "!.gitignore", ""]


def _keys(doc: dict[str, Any]) -> set[str]:
    return {*doc.get("data", {}), *doc.get("binaryData", {})}


def _check_env(where: str, c: dict[str, Any], configmaps: dict[str, Any], secrets: dict[str, Any]) -> None:
    """Every key an env entry reads exists; every $(VAR) of a value or argument is set before it."""
    defined: set[str] = set()
    for env in c.get("env", []):
        ref = env.get("valueFrom", {})
        if "configMapKeyRef" in ref:
            r = ref["configMapKeyRef"]
            assert r["key"] in _keys(configmaps[_unhashed(r["name"])]), (where, r)
        if "secretKeyRef" in ref:
            r = ref["secretKeyRef"]
            assert r["key"] in _keys(secrets[_unhashed(r["name"])]), (where, r)
        for var in re.findall(r"\$\((\w+)\)", env.get("value", "")):
            assert var in defined, f"{where}: {env['name']} uses $({var}) before it is set"
        defined.add(env["name"])
    for arg in c.get("args", []):
        for var in re.findall(r"\$\((\w+)\)", arg):
            assert var in defined, f"{where}: argument {arg} names an unset variable"


def test_references_resolve(built: list[dict[str, Any]]) -> None:
    """Every ConfigMap, Secret, key, PVC and $(VAR) a pod names exists in the build (Kubernetes would leave a pod
    waiting, or pass "$(VAR)" on literally)."""
    configmaps = {_unhashed(n): d for n, d in _by(built, "ConfigMap").items()}
    secrets = {_unhashed(n): d for n, d in _by(built, "Secret").items()}
    pvcs = set(_by(built, "PersistentVolumeClaim"))

    for component, pod in _workloads(built):
        for vol in pod.get("volumes", []):
            if "configMap" in vol:
                assert _unhashed(vol["configMap"]["name"]) in configmaps, (component, vol)
            if "secret" in vol:
                secret = secrets[_unhashed(vol["secret"]["secretName"])]
                assert {i["key"] for i in vol["secret"].get("items", [])} <= _keys(secret)
            for source in vol.get("projected", {}).get("sources", []):
                secret = secrets[_unhashed(source["secret"]["name"])]
                assert {i["key"] for i in source["secret"]["items"]} <= _keys(secret)
            if "persistentVolumeClaim" in vol:
                assert vol["persistentVolumeClaim"]["claimName"] in pvcs
        for c in [*pod.get("initContainers", []), *pod["containers"]]:
            _check_env(f"{component}/{c['name']}", c, configmaps, secrets)
    auth = _by(built, "TriggerAuthentication")["tapwatch-redis-keda"]
    for ref in auth["spec"]["secretTargetRef"]:
        assert ref["key"] in _keys(_by(built, "Secret")[ref["name"]]), ref  # kustomize rewrote the hashed name


def test_model_configmap_fits(built: list[dict[str, Any]]) -> None:
    """The model, card and profile ConfigMap stays under the 1 MiB a ConfigMap may hold."""
    model = next(d for n, d in _by(built, "ConfigMap").items() if n.startswith("tapwatch-model-"))
    assert set(model["binaryData"]) == {"hybrid-lab.onnx"}
    assert set(model["data"]) == {"hybrid-lab.card.json", "hybrid-lab.profile.json"}
    assert len(json.dumps(model)) < CONFIGMAP_LIMIT


def test_capture_is_the_sensor_daemonset(built: list[dict[str, Any]]) -> None:
    capture = _by(built, "DaemonSet")["tapwatch-capture"]["spec"]["template"]["spec"]
    assert capture["hostNetwork"] is True and capture["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert capture["nodeSelector"] == {"tapwatch.io/sensor": "true"}
    assert any(t["key"] == "tapwatch.io/sensor" for t in capture["tolerations"])
    (container,) = capture["containers"]
    caps = container["securityContext"]["capabilities"]
    assert caps == {"drop": ["ALL"], "add": ["NET_RAW", "NET_ADMIN"]}
    assert container["args"][:3] == ["capture", "--interface", "$(CAPTURE_INTERFACE)"]
    env = {e["name"]: e for e in container["env"]}
    assert env["CAPTURE_INTERFACE"]["valueFrom"]["configMapKeyRef"]["key"] == "CAPTURE_INTERFACE"
    assert env["TAPWATCH_METRICS_HOST"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"


def _check_probes(component: str, c: dict[str, Any]) -> None:
    """Liveness on /livez and readiness on /readyz of the stage's port; Redis's: its probe user's PING over TLS."""
    probes = {kind: c[f"{kind}Probe"] for kind in ("liveness", "readiness")}
    if component not in PORTS:
        assert all("--user probe" in " ".join(p["exec"]["command"]) for p in probes.values())
        return
    port = PORTS[component]
    for kind, probe in probes.items():
        path = "/livez" if kind == "liveness" else "/readyz"
        assert probe["httpGet"]["path"] == path
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports[probe["httpGet"]["port"]] == port
        variable = "TAPWATCH_CONSOLE_METRICS_HOST" if component == "console" else "TAPWATCH_METRICS_HOST"
        host = {e["name"]: e for e in c["env"]}[variable]
        assert host.get("value") == "0.0.0.0" or "fieldRef" in host.get("valueFrom", {}), component


def test_every_container_is_probed_limited_and_not_root(built: list[dict[str, Any]]) -> None:
    """Probes on /livez and /readyz of the stage's port (the metrics host moved off 127.0.0.1 where the kubelet
    probes over the network), requests and limits everywhere, no root but capture, no privilege escalation."""
    seen = set()
    for component, pod in _workloads(built):
        seen.add(component)
        pod_ctx = pod.get("securityContext", {})
        assert pod_ctx.get("seccompProfile", {}).get("type") == "RuntimeDefault", component
        assert pod.get("automountServiceAccountToken") is False, component
        for c in [*pod.get("initContainers", []), *pod["containers"]]:
            ctx = {**pod_ctx, **c.get("securityContext", {})}
            assert {"cpu", "memory"} <= set(c["resources"]["limits"]), (component, c["name"])
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]), (component, c["name"])
            assert ctx["allowPrivilegeEscalation"] is False and ctx["readOnlyRootFilesystem"] is True
            assert "ALL" in ctx["capabilities"]["drop"], (component, c["name"])
            if component in ROOT_ALLOWED:
                assert ctx["runAsUser"] == 0
            else:
                assert ctx["runAsNonRoot"] is True and ctx["runAsUser"] != 0, (component, c["name"])
        for c in pod["containers"]:
            _check_probes(component, c)
    assert seen == {"capture", "worker", "alerter", "console", "redis"}


def test_workers_scale_on_the_lag_of_their_group(built: list[dict[str, Any]]) -> None:
    scaled = _by(built, "ScaledObject")["tapwatch-worker"]["spec"]
    target = scaled["scaleTargetRef"]
    assert (target.get("kind", "Deployment"), target["name"]) == ("Deployment", "tapwatch-worker")
    assert "tapwatch-worker" in _by(built, "Deployment")
    assert "replicas" not in _by(built, "Deployment")["tapwatch-worker"]["spec"]  # KEDA owns the count
    (trigger,) = scaled["triggers"]
    meta = trigger["metadata"]
    assert trigger["type"] == "redis-streams"
    assert (meta["stream"], meta["consumerGroup"]) == ("tapwatch:windows", "workers")
    assert int(meta["lagCount"]) > 0 and "pendingEntriesCount" not in meta
    assert meta["address"] == "tapwatch-redis.tapwatch.svc.cluster.local:6380"
    auth = _by(built, "TriggerAuthentication")[trigger["authenticationRef"]["name"]]
    params = {r["parameter"] for r in auth["spec"]["secretTargetRef"]}
    assert params == {"username", "password", "tls", "ca"}


def test_redis_over_tls_with_a_user_per_stage(built: list[dict[str, Any]]) -> None:
    """Each stage's URL is rediss:// with the CA and its own user from its own Secret; the Redis pod gets every
    password of deploy/redis/users.acl's users; redis.conf listens on TLS only, AOF on."""
    acl_users = {ln.split()[1] for ln in (REDIS / "users.acl").read_text().splitlines()} - {"default"}
    secrets = {_unhashed(n): d for n, d in _by(built, "Secret").items()}
    urls = {}
    for component, pod in _workloads(built):
        for c in pod["containers"]:
            env = {e["name"]: e for e in c.get("env", [])}
            url = env.get("TAPWATCH_REDIS_URL") or env.get("TAPWATCH_CONSOLE_REDIS_URL")
            if url:
                urls[component] = url["value"]
                user_secret = env["REDIS_USER"]["valueFrom"]["secretKeyRef"]["name"]
                assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == user_secret
                assert _unhashed(user_secret) == f"tapwatch-redis-{component}"
                assert secrets[f"tapwatch-redis-{component}"]["data"]["username"]  # base64 of the ACL user name
    assert set(urls) == {"capture", "worker", "alerter", "console"}
    for url in urls.values():
        assert url.startswith("rediss://$(REDIS_USER):$(REDIS_PASSWORD)@") and "?ssl_ca_certs=$(REDIS_CA_FILE)" in url
    redis_pod = _by(built, "StatefulSet")["tapwatch-redis"]["spec"]["template"]["spec"]
    passwords = next(v for v in redis_pod["volumes"] if v["name"] == "passwords")
    paths = {i["path"] for s in passwords["projected"]["sources"] for i in s["secret"]["items"]}
    assert paths == acl_users
    conf = (K8S / "config" / "redis.conf").read_text()
    for line in ("port 0", "tls-port 6380", "appendonly yes", "aclfile /run/redis/users.acl"):
        assert re.search(rf"^{re.escape(line)}$", conf, re.M), line
    claims = _by(built, "StatefulSet")["tapwatch-redis"]["spec"]["volumeClaimTemplates"]
    assert [c["metadata"]["name"] for c in claims] == ["data"]


def test_network_policies_let_in_only_the_right_pods(built: list[dict[str, Any]]) -> None:
    policies = _by(built, "NetworkPolicy")
    assert policies["tapwatch-default-deny-ingress"]["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    clients = {
        d["metadata"]["labels"]["app.kubernetes.io/component"]
        for d in built
        if d["kind"] in ("Deployment", "DaemonSet", "StatefulSet")
        and d["spec"]["template"]["metadata"]["labels"].get("tapwatch.io/redis-client") == "true"
    }
    assert clients == {"worker", "alerter", "console"}  # capture is on the host network: the ipBlock rule
    (rule,) = policies["tapwatch-redis-clients"]["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 6380}]
    sources = rule["from"]
    assert {"podSelector": {"matchLabels": {"tapwatch.io/redis-client": "true"}}} in sources
    assert any("ipBlock" in s for s in sources)
    assert any(s.get("namespaceSelector", {}).get("matchLabels") == {"kubernetes.io/metadata.name": "keda"}
               for s in sources)  # fmt: skip
    metrics = policies["tapwatch-metrics-from-prometheus"]["spec"]
    (rule,) = metrics["ingress"]
    assert {p["port"] for p in rule["ports"]} == {PORTS["worker"], PORTS["alerter"], PORTS["console"]}
    ((prometheus,),) = [rule["from"]]
    assert set(prometheus) == {"namespaceSelector", "podSelector"}  # both: Prometheus pods in that namespace only


def test_console_first_admin_init_container(built: list[dict[str, Any]], tmp_path: Path) -> None:
    """The console's init container, run here as written: the first start adds the admin from the Secret's values,
    a restart changes nothing and succeeds; the data folder is left to the console's mode 0700 (no recursive fsGroup
    change, which would add group bits the console refuses)."""
    pod = _by(built, "Deployment")["tapwatch-console"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"
    (init,) = pod["initContainers"]
    data_dir = {e["name"]: e for e in init["env"]}["TAPWATCH_CONSOLE_DATA"]["value"]
    env = {
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",  # the venv's tapwatch command
        "HOME": str(tmp_path),
        "TAPWATCH_CONSOLE_DATA": str(tmp_path / Path(data_dir).name),
        "ADMIN_USER": "admin",
        "ADMIN_PASSWORD": "test-admin-0123456789",
    }
    for _ in range(2):
        out = subprocess.run(init["command"], env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
    users = subprocess.run(["tapwatch", "console", "user", "list"], env=env, capture_output=True, text=True, check=True)
    assert users.stdout.split() == ["admin", "admin", "active"]
    assert (tmp_path / Path(data_dir).name).stat().st_mode & 0o077 == 0
