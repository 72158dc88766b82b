"""The rendered Kubernetes manifests of each overlay (deploy/k8s), checked offline.

Built-in kinds: kubernetes-validate --strict against bundled Kubernetes schemas. Custom resources
(KEDA, prometheus-operator): the JSON Schemas in schemas/, written from the CRDs' own schemas.
Then what matters for this worker: the grace period outlasts the drain, the monitoring objects are
the repository's alerts and dashboard unchanged, every SIGNOUT_* name is a real setting, KEDA
watches the group the worker consumes, and the pod meets the "restricted" Pod Security Standard.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic import BaseModel
from referencing import Registry, Resource

from tests.deploy.conftest import K8S, OVERLAYS, REPO, Rendered, find_tool, load_generator, run
from worker.settings import Settings

# The oldest and newest Kubernetes versions EKS supports at the time of writing, and the newest
# kubernetes-validate bundles, to see removals coming.
K8S_VERSIONS = ("1.33.0", "1.34.0", "1.37.0")
SCHEMAS = Path(__file__).parent / "schemas"
CUSTOM_KINDS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "triggerauthentication.json",
    ("monitoring.coreos.com/v1", "PodMonitor"): "podmonitor.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule.json",
}
# Seconds the worker needs after its drain budget: final commit, leave the group, close clients.
SHUTDOWN_MARGIN_SECONDS = 5
PARTITIONS_ANNOTATION = "signout-worker/topic-partitions"
# The worker's SIGNOUT_KAFKA__SASL_MECHANISM -> KEDA's Kafka scaler `sasl`.
KEDA_SASL = {"PLAIN": "plaintext", "SCRAM-SHA-256": "scram_sha256", "SCRAM-SHA-512": "scram_sha512"}


def schema_validator(filename: str) -> jsonschema.protocols.Validator:
    resources = [
        (
            f"https://signout-worker.local/schemas/{p.name}",
            Resource.from_contents(json.loads(p.read_text())),
        )
        for p in SCHEMAS.glob("*.json")
    ]
    registry: Registry[Any] = Registry().with_resources(resources)
    schema = json.loads((SCHEMAS / filename).read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, registry=registry, format_checker=cls.FORMAT_CHECKER)


def errors_of(filename: str, document: dict[str, Any]) -> list[str]:
    validator = schema_validator(filename)
    return [
        f"{'.'.join(str(p) for p in e.absolute_path)}: {e.message}"
        for e in validator.iter_errors(document)
    ]


# --- one source of truth for the monitoring objects ------------------------------------------


def test_generated_files_are_current() -> None:
    stale = load_generator().stale(REPO)
    assert not stale, f"stale generated files {stale}: run `python deploy/k8s/generate.py`"


def test_prometheus_rule_is_alerts_yaml(rendered: Rendered) -> None:
    alerts = yaml.safe_load((REPO / "deploy/prometheus/alerts.yaml").read_text())
    rule = rendered.one("PrometheusRule")
    assert rule["spec"] == alerts, "the PrometheusRule differs from deploy/prometheus/alerts.yaml"


def test_dashboard_configmap_is_the_dashboard(rendered: Rendered) -> None:
    source = (REPO / "deploy/grafana/signout-worker.json").read_text()
    configmap = rendered.one("ConfigMap", "signout-worker-dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["data"] == {"signout-worker.json": source}
    assert json.loads(configmap["data"]["signout-worker.json"])["uid"]


# --- validation: built-in kinds and custom resources -----------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_kubernetes_validate_strict(rendered: Rendered, version: str) -> None:
    tool = find_tool("kubernetes-validate")
    result = run([tool, "--strict", "--kubernetes-version", version, rendered.path])
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    unvalidated = set(
        re.findall(r"Couldn't find schema for kind (\w+) with api version (\S+)", output)
    )
    custom = {(kind, api) for api, kind in CUSTOM_KINDS}
    # Only the custom resources lack a bundled schema, and those are validated below.
    assert unvalidated <= custom, f"no schema at all for {unvalidated - custom}"
    passed = len(re.findall(r"passed for resource", output))
    builtin = [d for d in rendered.docs if (d["apiVersion"], d["kind"]) not in CUSTOM_KINDS]
    assert passed == len(builtin), output


def test_custom_resources_match_their_schemas(rendered: Rendered) -> None:
    custom = [d for d in rendered.docs if (d["apiVersion"], d["kind"]) in CUSTOM_KINDS]
    assert {d["kind"] for d in custom} >= {"ScaledObject", "PodMonitor", "PrometheusRule"}
    for document in custom:
        schema = CUSTOM_KINDS[(document["apiVersion"], document["kind"])]
        assert errors_of(schema, document) == [], f"{rendered.overlay}: {document['kind']}"


def kafka_scaled_object(**metadata: Any) -> dict[str, Any]:
    """A valid ScaledObject spec with a Kafka trigger; `None` removes a metadata field."""
    fields = {
        "bootstrapServers": "k:9092",
        "consumerGroup": "g",
        "topic": "t",
        "lagThreshold": "600",
    }
    fields.update(metadata)
    trigger = {"type": "kafka", "metadata": {k: v for k, v in fields.items() if v is not None}}
    return {"scaleTargetRef": {"name": "w"}, "triggers": [trigger]}


def test_the_valid_scaled_object_passes_its_schema() -> None:
    wrapped = {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject"}
    document = {**wrapped, "metadata": {"name": "x", "namespace": "y"}}
    assert errors_of("scaledobject.json", {**document, "spec": kafka_scaled_object()}) == []


@pytest.mark.parametrize(
    ("schema", "document", "mistake"),
    [
        (
            "scaledobject.json",
            kafka_scaled_object(lagThreshold=600),
            "lagThreshold: 600 is not of type 'string'",
        ),
        (
            "scaledobject.json",
            kafka_scaled_object(consumerGroup=None),
            "'consumerGroup' is a required property",
        ),
        ("scaledobject.json", {"triggers": []}, "'scaleTargetRef' is a required property"),
        (
            "podmonitor.json",
            {"selector": {}, "podMetricsEndpoints": [{"port": "http", "interval": "15 seconds"}]},
            "does not match",
        ),
        ("podmonitor.json", {"podMetricsEndpoints": []}, "'selector' is a required property"),
        (
            "prometheusrule.json",
            {"groups": [{"name": "g", "rules": [{"alert": "A", "for": "5m"}]}]},
            "'expr' is a required property",
        ),
        (
            "prometheusrule.json",
            {
                "groups": [
                    {"name": "g", "rules": [{"alert": "A", "expr": "up", "labels": {"n": 1}}]}
                ]
            },
            "1 is not of type 'string'",
        ),
        (
            "triggerauthentication.json",
            {"secretTargetRef": [{"parameter": "password", "name": "s"}]},
            "'key' is a required property",
        ),
    ],
)
def test_schemas_catch_mistakes(schema: str, document: dict[str, Any], mistake: str) -> None:
    api, kind = next(k for k, v in CUSTOM_KINDS.items() if v == schema)
    wrapped = {"apiVersion": api, "kind": kind, "metadata": {"name": "x", "namespace": "y"}}
    errors = errors_of(schema, {**wrapped, "spec": document})
    assert any(mistake in e for e in errors), errors


# --- the worker's contract with Kubernetes ----------------------------------------------------


def setting_names() -> set[str]:
    """Every SIGNOUT_* variable the settings model reads (contracts.md §5)."""
    names = set()
    for name, info in Settings.model_fields.items():
        section = info.annotation
        if isinstance(section, type) and issubclass(section, BaseModel):
            names |= {f"SIGNOUT_{name}__{sub}".upper() for sub in section.model_fields}
        else:
            names.add(f"SIGNOUT_{name}".upper())
    return names


def test_every_variable_is_a_setting(rendered: Rendered, monkeypatch: pytest.MonkeyPatch) -> None:
    env = rendered.worker_environment()
    unknown = {k for k in env if k.startswith("SIGNOUT_")} - setting_names()
    # pydantic-settings ignores unknown names silently: a typo would be a setting never applied.
    assert not unknown, f"{rendered.overlay}: not worker settings: {sorted(unknown)}"
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings()  # the worker's own parsing: a bad value raises here
    assert settings.http.port == container_port(rendered)


def container_port(rendered: Rendered) -> int:
    ports = {p["name"]: p["containerPort"] for p in rendered.worker_container()["ports"]}
    return int(ports["http"])


def test_grace_period_outlasts_the_drain(
    rendered: Rendered, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in rendered.worker_environment().items():
        monkeypatch.setenv(name, value)
    drain = Settings().shutdown_timeout_seconds
    grace = rendered.one("Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > drain + SHUTDOWN_MARGIN_SECONDS, (
        f"{rendered.overlay}: terminationGracePeriodSeconds {grace} must exceed "
        f"SIGNOUT_SHUTDOWN_TIMEOUT_SECONDS {drain} "
        f"(+{SHUTDOWN_MARGIN_SECONDS}s to commit and leave the group)"
    )


def test_probes_and_metrics_port(rendered: Rendered) -> None:
    container = rendered.worker_container()
    assert container_port(rendered) == 8080
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    monitor = rendered.one("PodMonitor")
    assert [(e["port"], e["path"]) for e in monitor["spec"]["podMetricsEndpoints"]] == [
        ("http", "/metrics")
    ]
    pod_labels = rendered.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    for kind in ("PodMonitor", "PodDisruptionBudget"):
        selector = rendered.one(kind)["spec"]["selector"]["matchLabels"]
        assert selector.items() <= pod_labels.items(), f"{kind} selects no worker pod"
    assert rendered.one("NetworkPolicy")["spec"]["podSelector"]["matchLabels"].items() <= (
        pod_labels.items()
    )


def test_network_policy_admits_only_the_metrics_port(rendered: Rendered) -> None:
    spec = rendered.one("NetworkPolicy")["spec"]
    assert set(spec["policyTypes"]) == {"Ingress", "Egress"}
    ports = [p["port"] for rule in spec["ingress"] for p in rule["ports"]]
    assert ports == ["http"]
    egress_ports = {p["port"] for rule in spec["egress"] for p in rule["ports"]}
    assert {53, 443} <= egress_ports
    assert any(9092 <= p <= 9098 for p in egress_ports if isinstance(p, int) and p != 443)


def test_replicas_belong_to_keda(rendered: Rendered) -> None:
    deployment = rendered.one("Deployment")
    assert "replicas" not in deployment["spec"], "KEDA owns the replica count"
    scaled = rendered.one("ScaledObject")
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    partitions = int(scaled["metadata"]["annotations"][PARTITIONS_ANNOTATION])
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= partitions, (
        "replicas beyond the topic's partitions would sit idle"
    )
    assert spec["fallback"]["replicas"] <= spec["maxReplicaCount"]


def test_keda_watches_what_the_worker_consumes(rendered: Rendered) -> None:
    """One Kafka trigger per consumed topic (the urgent one only when it is set), each on the
    worker's brokers and group, authenticated as the worker is."""
    env = rendered.worker_environment()
    triggers = {
        t["name"]: t
        for t in rendered.one("ScaledObject")["spec"]["triggers"]
        if t["type"] == "kafka"
    }
    topics = {"requests": env["SIGNOUT_KAFKA__TOPIC"]}
    if "SIGNOUT_KAFKA__URGENT_TOPIC" in env:
        topics["urgent"] = env["SIGNOUT_KAFKA__URGENT_TOPIC"]
    assert {name: t["metadata"]["topic"] for name, t in triggers.items()} == topics
    for trigger in triggers.values():
        assert trigger["metadata"]["bootstrapServers"] == env["SIGNOUT_KAFKA__BOOTSTRAP_SERVERS"]
        assert trigger["metadata"]["consumerGroup"] == env["SIGNOUT_KAFKA__GROUP_ID"]
        assert_authenticated_as_the_worker(rendered, env, trigger)


def test_dev_runs_the_urgent_lane(kustomize_build: Any) -> None:
    """The overlay with components/urgent-lane: the setting and the second trigger, both."""
    dev = kustomize_build("dev")
    assert dev.worker_environment()["SIGNOUT_KAFKA__URGENT_TOPIC"] == "signout.requests.urgent"
    names = [t.get("name") for t in dev.one("ScaledObject")["spec"]["triggers"]]
    assert names == ["requests", "urgent"]


def test_prod_with_the_urgent_lane_as_its_comments_say(tmp_path: Path) -> None:
    """Uncommenting what overlays/prod says to uncomment gives a valid urgent trigger."""
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    kustomization = copy / "overlays" / "prod" / "kustomization.yaml"
    lines = kustomization.read_text().splitlines()
    enabled = [
        re.sub(r"^(\s*)# (- \.\./\.\./components/urgent-lane)$", r"\1\2", line) for line in lines
    ]
    block = enabled.index(
        "      # The urgent trigger (components/urgent-lane) authenticates the same way:"
    )
    for i in range(block + 1, block + 11):
        enabled[i] = enabled[i].replace("      # ", "      ", 1)
    assert enabled != lines
    kustomization.write_text("\n".join(enabled) + "\n")
    result = run([find_tool("kustomize"), "build", copy / "overlays" / "prod"])
    assert result.returncode == 0, result.stderr
    path = tmp_path / "prod.yaml"
    path.write_text(result.stdout)
    prod = Rendered("prod+urgent", path, [d for d in yaml.safe_load_all(result.stdout) if d])
    triggers = prod.one("ScaledObject")["spec"]["triggers"]
    assert [t["name"] for t in triggers] == ["requests", "urgent"]
    test_keda_watches_what_the_worker_consumes(prod)
    assert errors_of("scaledobject.json", prod.one("ScaledObject")) == []


def assert_authenticated_as_the_worker(
    rendered: Rendered, env: dict[str, str], trigger: dict[str, Any]
) -> None:
    sasl = env.get("SIGNOUT_KAFKA__SASL_MECHANISM")
    if not sasl:
        return
    assert trigger["metadata"]["sasl"] == KEDA_SASL[sasl]
    assert trigger["metadata"]["tls"] == (
        "enable" if "SSL" in env["SIGNOUT_KAFKA__SECURITY_PROTOCOL"] else "disable"
    )
    auth = rendered.one("TriggerAuthentication", trigger["authenticationRef"]["name"])
    refs = {r["parameter"]: (r["name"], r["key"]) for r in auth["spec"]["secretTargetRef"]}
    secrets = {
        e["name"]: (
            e["valueFrom"]["secretKeyRef"]["name"],
            e["valueFrom"]["secretKeyRef"]["key"],
        )
        for e in rendered.worker_container().get("env", [])
        if "valueFrom" in e
    }
    assert refs["username"] == secrets["SIGNOUT_KAFKA__SASL_USERNAME"]
    assert refs["password"] == secrets["SIGNOUT_KAFKA__SASL_PASSWORD"]


def test_pod_security_restricted(rendered: Rendered) -> None:
    """The "restricted" Pod Security Standard, as the namespace label enforces it."""
    namespace = rendered.all("Namespace")[0]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    pod = rendered.one("Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"]["type"] in ("RuntimeDefault", "Localhost")
    assert not {"hostNetwork", "hostPID", "hostIPC"} & {k for k, v in pod.items() if v}
    assert all("hostPath" not in v for v in pod.get("volumes", []))
    for container in pod["containers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        assert not context.get("capabilities", {}).get("add")
        assert context.get("privileged", False) is False
        assert context["readOnlyRootFilesystem"] is True
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        tmp = mounts["/tmp"]  # noqa: S108 - the container's mount path, not a local file
        assert "emptyDir" in volumes[tmp], "a writable /tmp on a read-only root"
        assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
        assert {"cpu", "memory"} <= container["resources"]["limits"].keys()
    assert pod["automountServiceAccountToken"] is False
    assert {c["topologyKey"] for c in pod["topologySpreadConstraints"]} >= {
        "topology.kubernetes.io/zone",
        "kubernetes.io/hostname",
    }


def test_service_account_carries_an_irsa_role(rendered: Rendered) -> None:
    account = rendered.one("ServiceAccount")
    role = account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    assert re.fullmatch(r"arn:aws:iam::\d{12}:role/[\w+=,.@-]+", role), role
    assert (
        rendered.one("Deployment")["spec"]["template"]["spec"]["serviceAccountName"]
        == (account["metadata"]["name"])
    )


def test_prod_is_msk_ready(kustomize_build: Any) -> None:
    prod = kustomize_build("prod")
    env = prod.worker_environment()
    assert env["SIGNOUT_KAFKA__SECURITY_PROTOCOL"] == "SASL_SSL"
    assert env["SIGNOUT_KAFKA__SASL_MECHANISM"] == "SCRAM-SHA-512"
    password = next(
        e for e in prod.worker_container()["env"] if e["name"] == "SIGNOUT_KAFKA__SASL_PASSWORD"
    )
    assert "secretKeyRef" in password["valueFrom"], "the password comes from a Secret"
    data = prod.configmap("signout-worker-config")["data"]
    assert not any("PASSWORD" in k for k in data), "no secret in a ConfigMap"
    image = prod.worker_container()["image"]
    assert re.search(r"@sha256:[0-9a-f]{64}$", image), f"prod pins the image by digest: {image}"
    dev, prod_limits = kustomize_build("dev"), prod.worker_container()["resources"]["limits"]
    assert prod_limits != dev.worker_container()["resources"]["limits"]


def test_overlays_are_the_ones_documented() -> None:
    assert sorted(p.name for p in (K8S / "overlays").iterdir() if p.is_dir()) == sorted(OVERLAYS)
