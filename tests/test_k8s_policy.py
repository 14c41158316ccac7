"""The Kubernetes overlays as an operator applies them, and a policy scan of every deployment artifact.

1. One namespace: every object of every overlay, and of every overlay with each combination of the components it
   does not use yet, is in the mesh's namespace (or cluster-scoped), and every address a service connects to names a
   Service of that namespace.
2. checkov (`make validate-deps` installs it into infra/validate/checkov-env, pinned by infra/validate/checkov.txt)
   over those renders, every Dockerfile and compose.yaml (with the project's Compose policies,
   infra/validate/checkov_checks): no failure. Each deliberate exception is a `checkov.io/skip*` annotation or a
   `checkov:skip=` comment beside what it excuses, with its reason (docs/operations.md, "Policy waivers").
3. The prod overlay is one an operator can apply: Pod Security `restricted` enforced and every pod meeting it, a quota
   and limit range that fit the mesh at its largest, topology spread for every workload that scales out, an Ingress
   with TLS for MESH_PUBLIC_URL, and `k8s/pin-images.sh` pins every image by digest, after which the render passes
   the scan without the waivers that unpinned images need.

checkov is installed by `make test` (validate-deps); a missing one fails, never skips.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "k8s"
VALIDATE = REPO / "infra" / "validate"
CHECKOV = VALIDATE / "checkov-env" / "bin" / "checkov"
CHECKOV_CHECKS = VALIDATE / "checkov_checks"
PIN_IMAGES = K8S / "pin-images.sh"
OPERATIONS_DOC = REPO / "docs" / "operations.md"
OVERLAYS = sorted(path.parent.name for path in (K8S / "overlays").glob("*/kustomization.yaml"))
COMPONENTS = sorted(path.parent.name for path in (K8S / "components").glob("*/kustomization.yaml"))
DOCKERFILES = sorted(REPO.glob("services/**/Dockerfile"))
NAMESPACE = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())["namespace"]

# kinds that live in no namespace; an overlay may add them (none of these is namespaced)
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "IngressClass", "PriorityClass", "StorageClass"}

# the settings that hold an address of another service (MESH_PUBLIC_URL is the clients' view, outside the cluster)
ADDRESS_SETTINGS = re.compile(r"MESH_(?:\w+_)?MQTT__HOST|MESH_\w+_URL")
OUTSIDE_ADDRESSES = {"MESH_PUBLIC_URL"}

# the volume types Pod Security's `restricted` profile allows
RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}

# a reason short enough to say nothing ("ok", "n/a", checkov's "No comment provided" when none is given)
MEANINGLESS_REASONS = {"no comment provided"}
MIN_REASON = 20


def run(argv: list[str], cwd: Path = REPO, timeout: float = 110, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)


def explain(result: subprocess.CompletedProcess[str]) -> str:
    return f"$ {' '.join(map(str, result.args))}\n(exit {result.returncode})\n{result.stdout[-4000:]}\n{result.stderr}"


# -- the renders -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Render:
    """An overlay, with components it does not use yet added on top (as an operator would combine them)."""

    overlay: str
    extra: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return "+".join((self.overlay, *self.extra))


def components_of(overlay: str) -> set[str]:
    """The components an overlay already uses."""
    folder = K8S / "overlays" / overlay
    listed = yaml.safe_load((folder / "kustomization.yaml").read_text()).get("components") or []
    return {(folder / path).resolve().name for path in listed if (folder / path).resolve().parent == K8S / "components"}


def renders() -> list[Render]:
    found = []
    for overlay in OVERLAYS:
        unused = [name for name in COMPONENTS if name not in components_of(overlay)]
        for size in range(len(unused) + 1):
            found += [Render(overlay, combination) for combination in itertools.combinations(unused, size)]
    return found


RENDERS = renders()


@cache
def kustomize(render: Render) -> str:
    """`kubectl kustomize` of the render: the overlay itself, or a copy of k8s/ whose overlay lists the components
    too (what `kustomize edit add component` does), so the overlay's own patches reach their objects as well."""
    if not render.extra:
        result = run(["kubectl", "kustomize", f"k8s/overlays/{render.overlay}"])
    else:
        folder = Path(tempfile.mkdtemp(prefix=f"a2a-mesh-{render.name}-"))
        try:
            overlay = copy_k8s(folder) / "overlays" / render.overlay
            kustomization = yaml.safe_load((overlay / "kustomization.yaml").read_text())
            kustomization.setdefault("components", []).extend(f"../../components/{name}" for name in render.extra)
            (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))
            result = run(["kubectl", "kustomize", str(overlay)])
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    assert result.returncode == 0, explain(result)
    return result.stdout


def copy_k8s(target: Path) -> Path:
    """k8s/ and what it reads from outside (services/broker's kustomization), at the same relative places."""
    shutil.copytree(K8S, target / "k8s")
    shutil.copytree(REPO / "services" / "broker", target / "services" / "broker")
    return target / "k8s"


def documents(render: Render) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(kustomize(render)) if doc]


def workloads(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] in ("Deployment", "StatefulSet")}


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def env_values(docs: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    """A container's env values that come from the render itself: literal, ConfigMap or Secret keys."""
    config_maps = {doc["metadata"]["name"]: doc.get("data") or {} for doc in of_kind(docs, "ConfigMap")}
    secrets = {
        doc["metadata"]["name"]: {
            **{key: base64.b64decode(value).decode() for key, value in (doc.get("data") or {}).items()},
            **(doc.get("stringData") or {}),
        }
        for doc in of_kind(docs, "Secret")
    }
    values: dict[str, str] = {}
    for entry in container.get("env", []):
        source = entry.get("valueFrom") or {}
        if "value" in entry:
            values[entry["name"]] = entry["value"]
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            values[entry["name"]] = config_maps[ref["name"]][ref["key"]]
        elif "secretKeyRef" in source and source["secretKeyRef"]["name"] in secrets:
            ref = source["secretKeyRef"]
            values[entry["name"]] = secrets[ref["name"]][ref["key"]]
    return values


# == 1. one namespace ============================================================================================
@pytest.mark.parametrize("render", RENDERS, ids=lambda render: render.name)
def test_every_object_is_in_the_mesh_namespace(render: Render) -> None:
    """A namespaced object without the mesh's namespace lands in whatever namespace kubectl's context has, where
    nothing of the mesh can reach it (the PostgreSQL component once did exactly that)."""
    docs = documents(render)
    assert docs, f"{render.name}: renders nothing"
    for doc in docs:
        where = f"{render.name}: {doc['kind']} {doc['metadata']['name']}"
        namespace = doc["metadata"].get("namespace")
        if doc["kind"] in CLUSTER_SCOPED:
            assert namespace is None, f"{where} is cluster-scoped: no namespace"
        else:
            assert namespace == NAMESPACE, f"{where} is in namespace {namespace!r}, not {NAMESPACE!r}"
    assert [doc["metadata"]["name"] for doc in of_kind(docs, "Namespace")] == [NAMESPACE], render.name


@pytest.mark.parametrize("render", RENDERS, ids=lambda render: render.name)
def test_every_service_address_resolves_in_the_namespace(render: Render) -> None:
    """Each host a pod is told to connect to (the broker, Redis, the registry, the task store, PostgreSQL) is a
    Service of the render in the pod's own namespace: a bare name, or <name>.<namespace>[.svc...]."""
    docs = documents(render)
    services = {(doc["metadata"]["namespace"], doc["metadata"]["name"]) for doc in of_kind(docs, "Service")}
    checked = set()
    for name, workload in workloads(docs).items():
        for container in pod_spec(workload)["containers"]:
            for key, value in env_values(docs, container).items():
                if not ADDRESS_SETTINGS.fullmatch(key) or key in OUTSIDE_ADDRESSES:
                    continue
                host = value if key.endswith("__HOST") else urlsplit(value).hostname
                if host is None:  # a file URL (SQLite): no address
                    continue
                service, _, rest = host.partition(".")
                where = f"{render.name}: {name} {key}={value}"
                assert rest in ("", NAMESPACE) or rest.startswith(f"{NAMESPACE}.svc"), f"{where}: another namespace"
                assert (workload["metadata"]["namespace"], service) in services, f"{where}: no Service {service}"
                checked.add(service)
    assert {"broker", "redis", "registry", "taskstore"} <= checked, f"{render.name}: found only {sorted(checked)}"
    if "postgres" in {*render.extra, *components_of(render.overlay)}:
        assert "postgres" in checked, f"{render.name}: the task store does not use PostgreSQL"


# == 2. the policy scan ==========================================================================================
@dataclass
class Scan:
    """What checkov reported (its policy run and its secret scan): every check passed, failed or skipped, each
    with the file it is in."""

    reports: list[dict[str, Any]]
    seconds: float
    files: set[str]  # the files of the policy run, as checkov names them (relative to the folder it scanned)
    pinned: str  # the prod render after k8s/pin-images.sh
    leak: str  # the secret scan's negative control

    def checks(self, outcome: str) -> list[dict[str, Any]]:
        return [check for report in self.reports for check in report["results"].get(outcome, [])]

    def of(self, file: str, outcome: str) -> list[dict[str, Any]]:
        return [check for check in self.checks(outcome) if check["file_path"].lstrip("/") == file]


def expand_base_images(dockerfile: str) -> str:
    """The Dockerfile with each `FROM ${ARG}` written as the ARG's default, the image a plain build uses: checkov
    does not expand build arguments, and would otherwise judge the variable's name instead of the image."""
    defaults = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", dockerfile, re.M))

    def expand(match: re.Match[str]) -> str:
        return re.sub(r"\$\{?(\w+)\}?", lambda ref: defaults.get(ref[1], ref[0]), match[0])

    return re.sub(r"^FROM\s+.*$", expand, dockerfile, flags=re.M)


# a manifest the scan must reject (its negative control): root, privileged, floating image, no limits or probes
BAD_MANIFEST = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: bad, namespace: a2a-mesh}
spec:
  selector: {matchLabels: {app: bad}}
  template:
    metadata: {labels: {app: bad}}
    spec:
      containers:
        - name: bad
          image: busybox:latest
          securityContext: {privileged: true, runAsUser: 0}
"""


def pin_every_image(k8s: Path) -> str:
    """Run k8s/pin-images.sh on a copy of k8s/ with a digest for every image, as a release does; the prod render."""
    names = sorted(
        {
            re.sub(r"(@.*|:[^:/]*)$", "", image)
            for path in [*(k8s / "base").rglob("*.yaml"), *(k8s / "components").rglob("*.yaml")]
            for image in re.findall(r"^\s+image:\s*(\S+)", path.read_text(), re.M)
        }
    )
    pins = [f"{name}=registry.example.com/{name}@sha256:{hashlib.sha256(name.encode()).hexdigest()}" for name in names]
    result = run(["bash", str(PIN_IMAGES), *pins], env={**os.environ, "K8S_DIR": str(k8s)})
    assert result.returncode == 0, explain(result)
    rendered = run(["kubectl", "kustomize", str(k8s / "overlays" / "prod")])
    assert rendered.returncode == 0, explain(rendered)
    return rendered.stdout


# a file the secret scan must flag (its negative control): a private key, as a leaked identity would look
LEAKED_KEY = "-----BEGIN RSA PRIVATE KEY-----\n" + base64.b64encode(hashlib.sha512(b"not a key").digest() * 6).decode()


def secret_scan_sources() -> list[Path]:
    """What the deployment is made of and could leak a credential into: compose.yaml, .env, every file of k8s/,
    every Dockerfile and the broker's config (the PKI itself, infra/broker-certs, is git-ignored and never here)."""
    sources = [REPO / "compose.yaml", REPO / "compose.extend.yaml", REPO / "compose.postgres.yaml", REPO / ".env"]
    sources += DOCKERFILES
    sources += [path for path in (REPO / "services" / "broker").rglob("*") if path.is_file()]
    return sources + sorted(path for path in K8S.rglob("*") if path.is_file())


def checkov(argv: list[str], cwd: Path) -> subprocess.Popen[str]:
    """checkov, offline: no mapping of check ids to a vendor's, no download of policies or versions."""
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"}
    command = [str(CHECKOV), *argv, "--skip-download", "--compact", "--output", "json"]
    return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def reports_of(process: subprocess.Popen[str]) -> list[dict[str, Any]]:
    try:
        stdout, stderr = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    # exit 1: a negative control failed, as it must
    assert process.returncode in (0, 1), f"{process.args}\n(exit {process.returncode})\n{stdout[-4000:]}\n{stderr}"
    output = json.loads(stdout)
    return output if isinstance(output, list) else [output]


@pytest.fixture(scope="module")
def scan(tmp_path_factory: pytest.TempPathFactory) -> Scan:
    """checkov over every render, the pinned prod render, every Dockerfile, compose.yaml and a negative control,
    laid out in one folder (checkov reports paths relative to it); and, at the same time, its secret scan over the
    deployment's sources (a rendered Secret is base64 of one of them)."""
    assert CHECKOV.exists(), f"checkov is not installed at {CHECKOV}: run `make validate-deps`"
    root = tmp_path_factory.mktemp("policy-scan")
    files: set[str] = set()

    def place(relative: str, content: str) -> None:
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(content)
        files.add(relative)

    for render in RENDERS:
        place(f"k8s/{render.name}.yaml", kustomize(render))
    pinned = pin_every_image(copy_k8s(tmp_path_factory.mktemp("release")))
    place("k8s/prod-pinned.yaml", pinned)
    place("control/bad.yaml", BAD_MANIFEST)
    for dockerfile in DOCKERFILES:
        relative = str(dockerfile.relative_to(REPO))
        place(relative, expand_base_images(dockerfile.read_text()))
    place("compose.yaml", (REPO / "compose.yaml").read_text())
    leak = tmp_path_factory.mktemp("secret-control") / "leak.env"
    leak.write_text(f"IDENTITY_KEY={LEAKED_KEY}\n")

    started = time.monotonic()
    policies = checkov(
        [
            "--directory",
            ".",
            "--framework",
            "kubernetes",
            "dockerfile",
            "yaml",
            "--external-checks-dir",
            str(CHECKOV_CHECKS),
        ],
        root,
    )
    sources = [arg for path in [*secret_scan_sources(), leak] for arg in ("--file", str(path))]
    secrets = checkov(["--framework", "secrets", *sources], REPO)
    reports = reports_of(policies) + reports_of(secrets)
    seconds = time.monotonic() - started
    print(f"checkov scanned {len(files)} files and {len(sources) // 2} sources in {seconds:.1f} s")
    return Scan(reports, seconds, files, pinned, str(leak))


def describe(checks: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"  {check['check_id']} {check['check_name']}: {check['resource']} in {check['file_path']}" for check in checks
    )


def test_the_scan_covers_every_render_dockerfile_and_compose(scan: Scan) -> None:
    """Each file placed for the scan was read by its framework (a file checkov could not parse passes silently)."""
    types = {report["check_type"] for report in scan.reports}
    assert {"kubernetes", "dockerfile", "yaml"} <= types, f"checkov ran only {sorted(types)}"
    assert not [error for report in scan.reports for error in report["results"].get("parsing_errors", [])]
    scanned = {
        check["file_path"].lstrip("/")
        for outcome in ("passed_checks", "failed_checks", "skipped_checks")
        for check in scan.checks(outcome)
    }
    assert set(scan.files) <= scanned, f"checkov did not scan {sorted(set(scan.files) - scanned)}"
    composed = {check["check_id"] for check in scan.of("compose.yaml", "passed_checks")}
    assert {f"CKV_A2A_COMPOSE_{n}" for n in range(1, 9)} <= composed, "the Compose policies did not run"


def test_the_scan_finds_no_failure(scan: Scan) -> None:
    failed = [
        check
        for report in scan.reports
        if report["check_type"] != "secrets"  # the secret scan's own test, below
        for check in report["results"].get("failed_checks", [])
        if not check["file_path"].startswith("/control/")
    ]
    assert not failed, f"checkov failed {len(failed)} checks (fix them, or waive one with its reason):\n" + describe(
        failed
    )


def test_the_scan_rejects_a_bad_manifest(scan: Scan) -> None:
    """Negative control: the same run fails a privileged, root, unpinned, unbounded Deployment."""
    failed = {check["check_id"] for check in scan.of("control/bad.yaml", "failed_checks")}
    assert {"CKV_K8S_16", "CKV_K8S_43", "CKV_K8S_11", "CKV_K8S_8"} <= failed, sorted(failed)


def test_the_secret_scan_finds_nothing_but_its_control(scan: Scan) -> None:
    """No credential in the deployment's sources but those waived beside them (postgres.env's placeholder); the
    private key of the control file is found, so the scan did look."""
    found = [
        check
        for report in scan.reports
        if report["check_type"] == "secrets"
        for check in report["results"].get("failed_checks", [])
    ]
    control = [check for check in found if check["file_path"].endswith(Path(scan.leak).name)]
    assert control, "the secret scan missed the private key of its negative control"
    leaks = [check for check in found if check not in control]
    assert not leaks, "credentials in the deployment's sources:\n" + describe(leaks)


def test_every_waiver_says_why(scan: Scan) -> None:
    """A skipped check is a deliberate exception: its annotation or comment gives a reason of its own, and
    docs/operations.md's table of waivers explains what it means to an operator."""
    skipped = scan.checks("skipped_checks")
    assert skipped, "no waiver found, yet the repository has some: checkov no longer reads them"
    documented = OPERATIONS_DOC.read_text().split("### Policy scan and waivers", 1)[-1].split("\n## ", 1)[0]
    for check in skipped:
        reason = (check.get("check_result") or {}).get("suppress_comment", "").strip()
        where = f"{check['check_id']} on {check['resource']} in {check['file_path']}"
        assert reason.lower() not in MEANINGLESS_REASONS and len(reason) >= MIN_REASON, f"{where}: say why"
        assert check["check_id"] in documented, f"{where}: explain it in docs/operations.md, Policy scan and waivers"


def test_pinned_release_needs_no_image_waiver(scan: Scan) -> None:
    """After k8s/pin-images.sh every image of prod runs by digest, from the registry given, and the waivers for
    unpinned images are gone: the render passes the digest and pull-policy checks on its own."""
    docs = [doc for doc in yaml.safe_load_all(scan.pinned) if doc]
    for name, workload in workloads(docs).items():
        for container in pod_spec(workload)["containers"]:
            image = container["image"]
            assert re.fullmatch(r"registry\.example\.com/[\w./-]+@sha256:[0-9a-f]{64}", image), f"{name}: {image}"
    for check_id in ("CKV_K8S_43", "CKV_K8S_15"):
        passing = {
            check["resource"]
            for check in scan.of("k8s/prod-pinned.yaml", "passed_checks")
            if check["check_id"] == check_id
        }
        assert len(passing) == len(workloads(docs)), f"{check_id} passes only for {sorted(passing)}"
    waived = {check["check_id"] for check in scan.of("k8s/prod-pinned.yaml", "skipped_checks")}
    assert not waived & {"CKV_K8S_43", "CKV_K8S_15"}, f"the pinned render still waives {sorted(waived)}"


def test_pin_images_refuses_a_partial_or_malformed_pin(tmp_path: Path) -> None:
    """A release never mixes pinned and floating images, nor takes a tag for a digest; the file stays as it was."""
    k8s = copy_k8s(tmp_path)
    release = k8s / "overlays" / "prod" / "release" / "kustomization.yaml"
    before = release.read_text()
    digest = "sha256:" + "0" * 64
    for attempt in (
        [f"redis=registry.example.com/redis@{digest}"],
        ["a2a-mesh/coordinator=registry.example.com/a2a-mesh/coordinator:0.1.0"],
        [f"nginx=registry.example.com/nginx@{digest}"],
    ):
        result = run(["bash", str(PIN_IMAGES), *attempt], env={**os.environ, "K8S_DIR": str(k8s)})
        assert result.returncode != 0 and "pin-images:" in result.stderr, explain(result)
        assert release.read_text() == before, f"{attempt}: the release file changed"


# == 3. the prod overlay as an operator applies it ===============================================================
UNITS = {"m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def quantity(value: str | int | float) -> float:
    """A Kubernetes quantity (100m, 2, 256Mi, 10Gi) as a number."""
    number, unit = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(value)).groups()  # type: ignore[union-attr]
    return float(number) * UNITS[unit]


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(workload)
    return [*spec.get("initContainers", []), *spec["containers"]]


def most_replicas(docs: list[dict[str, Any]], workload: dict[str, Any]) -> int:
    """The most pods a workload runs: its HPA's maximum, else its replicas; one more while a Deployment rolls."""
    scalers = {
        doc["spec"]["scaleTargetRef"]["name"]: doc["spec"]["maxReplicas"]
        for doc in of_kind(docs, "HorizontalPodAutoscaler")
    }
    replicas = scalers.get(workload["metadata"]["name"], workload["spec"].get("replicas", 1))
    rolling = workload["kind"] == "Deployment" and workload["spec"].get("strategy", {}).get("type") != "Recreate"
    return replicas + (1 if rolling else 0)


@pytest.mark.parametrize("render", RENDERS, ids=lambda render: render.name)
def test_every_pod_meets_pod_security_restricted(render: Render) -> None:
    """The namespace enforces Pod Security's `restricted` profile, and every pod template meets each of its rules
    (kubernetes.io/docs/concepts/security/pod-security-standards), so no pod is refused at admission."""
    docs = documents(render)
    [namespace] = of_kind(docs, "Namespace")
    labels = namespace["metadata"].get("labels", {})
    for mode in ("enforce", "warn", "audit"):
        assert labels.get(f"pod-security.kubernetes.io/{mode}") == "restricted", f"{render.name}: {mode} restricted"
    for name, workload in workloads(docs).items():
        spec, where = pod_spec(workload), f"{render.name}: {name}"
        assert not any(spec.get(key) for key in ("hostNetwork", "hostPID", "hostIPC", "hostUsers")), where
        for volume in spec.get("volumes", []):
            kinds = set(volume) - {"name"}
            assert kinds <= RESTRICTED_VOLUMES, f"{where}: volume {volume['name']} is {kinds}"
        pod = spec.get("securityContext", {})
        assert pod.get("runAsUser") != 0 and not pod.get("sysctls"), where
        for container in containers(workload):
            context, at = container.get("securityContext", {}), f"{where} container {container['name']}"
            assert not context.get("privileged") and context.get("allowPrivilegeEscalation") is False, at
            assert context.get("capabilities", {}).get("drop") == ["ALL"], f"{at}: drop ALL"
            assert set(context.get("capabilities", {}).get("add", [])) <= {"NET_BIND_SERVICE"}, at
            assert (context.get("runAsNonRoot", pod.get("runAsNonRoot"))) is True, f"{at}: runAsNonRoot"
            assert context.get("runAsUser", pod.get("runAsUser")) != 0, f"{at}: root"
            seccomp = context.get("seccompProfile", pod.get("seccompProfile", {})).get("type")
            assert seccomp in ("RuntimeDefault", "Localhost"), f"{at}: seccomp {seccomp}"
            assert not any(port.get("hostPort") for port in container.get("ports", [])), f"{at}: hostPort"
            assert context.get("procMount", "Default") == "Default", at


@pytest.mark.parametrize("render", RENDERS, ids=lambda render: render.name)
def test_every_workload_that_scales_out_spreads_its_pods(render: Render) -> None:
    """A workload that may run more than one pod spreads them over nodes and zones, selecting its own pods."""
    docs = documents(render)
    for name, workload in workloads(docs).items():
        if most_replicas(docs, workload) - (workload["kind"] == "Deployment") <= 1:
            continue
        constraints = pod_spec(workload).get("topologySpreadConstraints", [])
        keys = {constraint["topologyKey"] for constraint in constraints}
        assert {"kubernetes.io/hostname", "topology.kubernetes.io/zone"} <= keys, f"{render.name}: {name} {keys}"
        pod_labels = workload["spec"]["template"]["metadata"]["labels"]
        for constraint in constraints:
            selector = constraint["labelSelector"]["matchLabels"]
            assert selector.items() <= pod_labels.items(), f"{render.name}: {name} spreads other pods {selector}"


def test_prod_quota_and_limit_range_hold_the_mesh_at_its_largest() -> None:
    """The prod namespace has a ResourceQuota that admits every workload at its most replicas (the HPAs'
    maximum, a rolling Deployment's surge pod) with all their claims, and a LimitRange every container and claim
    fits: a quota that is too tight leaves an agent unscaled or a rollout stuck, silently."""
    docs = documents(Render("prod"))
    [quota] = of_kind(docs, "ResourceQuota")
    [limit_range] = of_kind(docs, "LimitRange")
    hard = {key: quantity(value) for key, value in quota["spec"]["hard"].items()}
    bounds = {item["type"]: item for item in limit_range["spec"]["limits"]}
    needed: dict[str, float] = {"pods": 0, "persistentvolumeclaims": 0, "requests.storage": 0}
    for name, workload in workloads(docs).items():
        pods = most_replicas(docs, workload)
        needed["pods"] += pods
        for container in containers(workload):
            for bound in ("requests", "limits"):
                for resource, value in container["resources"][bound].items():
                    needed[f"{bound}.{resource}"] = needed.get(f"{bound}.{resource}", 0) + pods * quantity(value)
                    limit = bounds["Container"]
                    assert quantity(limit["min"][resource]) <= quantity(value) <= quantity(limit["max"][resource]), (
                        f"prod: {name} {bound}.{resource}={value} is outside the LimitRange"
                    )
        for claim in workload["spec"].get("volumeClaimTemplates", []):
            storage = claim["spec"]["resources"]["requests"]["storage"]
            claims = most_replicas(docs, workload)
            needed["persistentvolumeclaims"] += claims
            needed["requests.storage"] += claims * quantity(storage)
            pvc = bounds["PersistentVolumeClaim"]
            assert quantity(pvc["min"]["storage"]) <= quantity(storage) <= quantity(pvc["max"]["storage"]), name
    for claim in of_kind(docs, "PersistentVolumeClaim"):
        needed["persistentvolumeclaims"] += 1
        needed["requests.storage"] += quantity(claim["spec"]["resources"]["requests"]["storage"])
    for key, amount in needed.items():
        assert key in hard, f"prod: the ResourceQuota does not bound {key}"
        assert amount <= hard[key], f"prod: the mesh needs {key}={amount:g}, the ResourceQuota allows {hard[key]:g}"


def test_prod_serves_the_coordinator_at_its_public_url_with_tls() -> None:
    """The example Ingress routes MESH_PUBLIC_URL's host, over TLS, to the coordinator's Service port; nothing
    else of the mesh is exposed (no LoadBalancer or NodePort Service)."""
    docs = documents(Render("prod"))
    [config] = [doc for doc in of_kind(docs, "ConfigMap") if doc["metadata"]["name"].startswith("mesh-config")]
    public = urlsplit(config["data"]["MESH_PUBLIC_URL"])
    assert public.scheme == "https", f"prod: MESH_PUBLIC_URL {public.geturl()} is not https"
    services = {doc["metadata"]["name"]: doc for doc in of_kind(docs, "Service")}
    assert all(doc["spec"].get("type", "ClusterIP") == "ClusterIP" for doc in services.values())
    coordinator_ports = {port["name"] for port in services["coordinator"]["spec"]["ports"]}
    coordinator_ports |= {port["port"] for port in services["coordinator"]["spec"]["ports"]}
    routed = False
    for ingress in of_kind(docs, "Ingress"):
        tls_hosts = {host for entry in ingress["spec"].get("tls", []) for host in entry["hosts"]}
        assert all(entry.get("secretName") for entry in ingress["spec"].get("tls", [])), "a TLS Secret per entry"
        for rule in ingress["spec"]["rules"]:
            assert rule["host"] in tls_hosts, f"Ingress {ingress['metadata']['name']}: {rule['host']} without TLS"
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                port = backend["port"].get("name") or backend["port"].get("number")
                assert backend["name"] in services and port is not None, f"Ingress: no Service {backend['name']}"
                if backend["name"] == "coordinator" and rule["host"] == public.hostname and path["path"] == "/":
                    assert port in coordinator_ports, f"Ingress: the coordinator serves no port {port}"
                    routed = True
    assert routed, f"prod: no Ingress routes https://{public.hostname}/ to the coordinator"


def test_prod_postgres_runs_as_a_high_uid_and_reads_its_credentials_from_files() -> None:
    """PostgreSQL as a high uid no node account has, its user, password and database as files of the
    postgres-credentials Secret (the image's *_FILE variables), none of them in its environment."""
    docs = documents(Render("prod"))
    postgres = workloads(docs)["postgres"]
    assert pod_spec(postgres)["securityContext"]["runAsUser"] >= 10000
    [container] = pod_spec(postgres)["containers"]
    env = {entry["name"]: entry for entry in container["env"]}
    assert not {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"} & set(env), "credentials as variables"
    assert not any("secretKeyRef" in (entry.get("valueFrom") or {}) for entry in env.values())
    volumes = {volume["name"]: volume for volume in pod_spec(postgres)["volumes"]}
    mounted: dict[str, str] = {}
    for mount in container["volumeMounts"]:
        secret = volumes.get(mount["name"], {}).get("secret")
        if secret and secret["secretName"] == "postgres-credentials":
            assert mount.get("readOnly") is True and secret["defaultMode"] & 0o007 == 0, "read-only, not the world's"
            mounted |= {f"{mount['mountPath']}/{item['path']}": item["key"] for item in secret["items"]}
    for key in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"):
        path = env[f"{key}_FILE"]["value"]
        assert mounted.get(path) == key, f"{key}_FILE={path} is not the Secret's {key}"
