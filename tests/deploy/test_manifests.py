"""The production topology in deploy/ checked without a cluster: schemas, cross-references
between objects, and the gateway flags against the gateway binary.

Two topologies, each one `kubectl apply -k` away (deploy/README.md):
  strimzi  deploy/kubernetes        gateways in front of Kafka run by Strimzi
  tansu    deploy/kubernetes/tansu  gateways in front of stateless tansu brokers

Built-in kinds are validated with kubernetes-validate's schemas for KUBERNETES_VERSION in strict
mode (unknown fields refused); Strimzi's custom resources against the CRD schemas of the Strimzi
release in schemas/ (schemas/README.md says where they come from and how they are used).

Environment:
  TOLLGATE_BIN  the gateway binary (default: target/release/tollgate in the repo), for the checks
                that the binary accepts the flags and the autoscale policies; skipped without it.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import shutil
import subprocess
import textwrap
import tomllib
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
KUBE = DEPLOY / "kubernetes"
SCHEMAS = Path(__file__).resolve().parent / "schemas"

# The Kubernetes release the manifests are checked against: one that Strimzi 1.2 supports (1.30
# and later) and kubernetes-validate ships schemas for.
KUBERNETES_VERSION = "1.33.0"

TOPOLOGIES = {"strimzi": KUBE, "tansu": KUBE / "tansu"}
NAMESPACE = "tollgate"

STRIMZI_GROUP = "kafka.strimzi.io"
STRIMZI_CRDS = {
    "Kafka": "040-Crd-kafka.yaml",
    "KafkaNodePool": "045-Crd-kafkanodepool.yaml",
    "KafkaRebalance": "049-Crd-kafkarebalance.yaml",
}

WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet")

# What `--pool-scale-kubernetes KIND/NAME` may name: the object's kind, API group and resource.
SCALE_TARGETS = {
    "deployment": ("Deployment", "apps", "deployments"),
    "statefulset": ("StatefulSet", "apps", "statefulsets"),
    "kafkanodepool": ("KafkaNodePool", STRIMZI_GROUP, "kafkanodepools"),
}

# The policy's keys, as CONTRACT.md "Pool and autoscaling" lists them.
POLICY_KEYS = {"min_brokers", "max_brokers", "interval_seconds", "mode", "target_per_broker",
               "tolerance", "scale_up", "scale_down"}
POLICY_SIGNALS = {"bytes_in_per_second", "bytes_out_per_second", "requests_per_second",
                  "connections"}

# Labels that only clients outside these manifests carry (deploy/README.md names them).
CLIENT_LABELS = [{"tollgate/admin-client": "true"}]
# Namespaces outside these manifests whose pods may connect (deploy/README.md names them):
# Prometheus's, for the metrics port.
CLIENT_NAMESPACES = [{"kubernetes.io/metadata.name": "monitoring"}]

# The container port the gateways serve /metrics on (--metrics-listen), by name, as the
# Services, the NetworkPolicy and deploy/README.md's scrape job address it.
METRICS_PORT = "metrics"
# Prometheus's annotation-driven discovery reads these from the pod template.
SCRAPE_ANNOTATIONS = ("prometheus.io/scrape", "prometheus.io/port", "prometheus.io/path")


# ---------------------------------------------------------------------------------------------
# Reading the manifests


def kustomize(directory: Path) -> list[dict]:
    """The objects `kubectl apply -k directory` applies. The kustomizations here only list
    resources (no patches, generators or transformers, which test_kustomizations_only_list
    checks), so this is all kustomize does with them; test_render_matches_kubectl_kustomize
    compares the two where kubectl is installed."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    objects: list[dict] = []
    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        if path.is_dir():
            objects.extend(kustomize(path))
        else:
            objects.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return objects


@functools.cache
def rendered(topology: str) -> tuple[dict, ...]:
    return tuple(kustomize(TOPOLOGIES[topology]))


def objects(topology: str, kind: str | None = None) -> list[dict]:
    return [o for o in rendered(topology) if kind is None or o["kind"] == kind]


def find(topology: str, kind: str, name: str) -> dict | None:
    for o in objects(topology, kind):
        if o["metadata"]["name"] == name:
            return o
    return None


def ident(o: dict) -> str:
    return f"{o['kind']}/{o['metadata']['name']}"


def workloads(topology: str) -> list[dict]:
    return [o for o in rendered(topology) if o["kind"] in WORKLOADS]


def containers(workload: dict) -> list[dict]:
    spec = workload["spec"]["template"]["spec"]
    return spec.get("initContainers", []) + spec["containers"]


def selects(selector: dict, labels: dict) -> bool:
    """A label selector (matchLabels form, or a Service's plain map) against a pod's labels."""
    assert "matchExpressions" not in selector, "matchExpressions: extend selects()"
    match = selector["matchLabels"] if "matchLabels" in selector else selector
    return bool(match) and all(labels.get(k) == v for k, v in match.items())


def selected(topology: str, selector: dict) -> list[dict]:
    return [w for w in workloads(topology)
            if selects(selector, w["spec"]["template"]["metadata"].get("labels", {}))]


def config_map_data(topology: str, name: str) -> dict:
    cm = find(topology, "ConfigMap", name)
    assert cm is not None, f"ConfigMap {name} is not in the {topology} manifests"
    return cm.get("data", {})


def container_env(topology: str, container: dict) -> dict[str, tuple[str, str]]:
    """Every environment variable a container gets, with where it comes from."""
    env: dict[str, tuple[str, str]] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            name = source["configMapRef"]["name"]
            for key, value in config_map_data(topology, name).items():
                env[source.get("prefix", "") + key] = (value, f"ConfigMap {name}")
    for var in container.get("env", []):
        env[var["name"]] = (var.get("value", ""), "env" if "value" in var else "valueFrom")
    return env


def gateway_containers(topology: str) -> list[tuple[dict, dict]]:
    found = [(w, c) for w in workloads(topology) for c in w["spec"]["template"]["spec"]["containers"]
             if c["image"].split(":")[0].endswith("tollgate")]
    assert found, f"no tollgate container in the {topology} manifests"
    return found


def flag_values(args: list[str]) -> dict[str, str]:
    """`--flag=value` and `--flag value` arguments (after the subcommand) as a map."""
    values: dict[str, str] = {}
    i = 1
    while i < len(args):
        arg = args[i]
        assert arg.startswith("--"), f"unexpected argument {arg!r} in {args}"
        if "=" in arg:
            name, value = arg.split("=", 1)
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            name, value = arg, args[i + 1]
            i += 1
        else:
            name, value = arg, ""
        assert name not in values, f"{name} given twice in {args}"
        values[name] = value
        i += 1
    return values


def env_name(flag: str) -> str:
    return "TOLLGATE_" + flag.removeprefix("--").replace("-", "_").upper()


def settings(topology: str, container: dict) -> dict[str, str]:
    """A gateway container's settings by flag, from its arguments and its TOLLGATE_* variables."""
    values = flag_values(container["args"])
    for name, (value, _) in container_env(topology, container).items():
        if name.startswith("TOLLGATE_"):
            flag = "--" + name.removeprefix("TOLLGATE_").lower().replace("_", "-")
            assert flag not in values, f"{flag} is given both as an argument and as {name}"
            values[flag] = value
    return values


def policy_source(topology: str, workload: dict, container: dict) -> tuple[str, str]:
    """The ConfigMap and key of the policy file a gateway's --autoscale-policy names."""
    path = Path(settings(topology, container)["--autoscale-policy"])
    mounts = [m for m in container.get("volumeMounts", []) if m["mountPath"] == str(path.parent)]
    assert mounts, f"{ident(workload)}: --autoscale-policy {path}: nothing is mounted at {path.parent}"
    volume = next(v for v in workload["spec"]["template"]["spec"]["volumes"]
                  if v["name"] == mounts[0]["name"])
    assert "configMap" in volume, f"{ident(workload)}: --autoscale-policy {path} is no ConfigMap's"
    items = {i["path"]: i["key"] for i in volume["configMap"].get("items", [])}
    return volume["configMap"]["name"], items.get(path.name, path.name)


def autoscaling_problems(topology: str) -> list[str]:
    """What keeps the gateways from autoscaling as one: with --redis-url every instance that
    runs the autoscaler publishes its load, one of them decides on the sum, and the others
    follow its resizes with their own actuator. So every gateway needs --redis-url (the same),
    --autoscale-policy with the same policy file, and the same pool and actuator settings
    (every --pool-* flag): a gateway without the policy publishes no load (its traffic goes
    uncounted), one with other settings would follow or decide differently."""
    problems = []
    gateways = [(w, c, settings(topology, c)) for w, c in gateway_containers(topology)]
    for w, _, values in gateways:
        for flag in ("--redis-url", "--autoscale-policy"):
            if not values.get(flag):
                problems.append(f"{ident(w)} has no {flag}")
    if problems:
        return problems

    def alike(values: dict[str, str]) -> dict[str, str]:
        return {k: v for k, v in values.items()
                if k.startswith("--pool-") or k in ("--redis-url", "--autoscale-policy")}

    first_w, first_c, first = gateways[0]
    source = policy_source(topology, first_w, first_c)
    for w, c, values in gateways[1:]:
        if alike(values) != alike(first):
            problems.append(f"{ident(w)} autoscales with {alike(values)}, {ident(first_w)} with "
                            f"{alike(first)}")
        if policy_source(topology, w, c) != source:
            problems.append(f"{ident(w)} reads its policy from {policy_source(topology, w, c)}, "
                            f"{ident(first_w)} from {source}")
    return problems


def autoscaling(topology: str) -> dict[str, str]:
    """The autoscaling settings every gateway shares (checked to be the same)."""
    problems = autoscaling_problems(topology)
    assert not problems, "\n".join(problems)
    return settings(topology, gateway_containers(topology)[0][1])


def autoscale_policy(topology: str) -> str:
    """The text of the policy file every gateway's autoscaler is given."""
    autoscaling(topology)
    workload, container = gateway_containers(topology)[0]
    name, key = policy_source(topology, workload, container)
    return config_map_data(topology, name)[key]


def primary(topology: str) -> tuple[dict, dict, dict[str, str]]:
    """The one gateway that owns the admin store (the one Service tollgate-admin reaches): its
    workload, container and settings."""
    admin = find(topology, "Service", "tollgate-admin")
    assert admin, f"no Service tollgate-admin in {topology}"
    found = [(w, c, settings(topology, c)) for w, c in gateway_containers(topology)
             if selects(admin["spec"]["selector"], w["spec"]["template"]["metadata"]["labels"])]
    assert len(found) == 1, \
        f"Service tollgate-admin reaches {len(found)} gateway workloads: the admin store has one owner"
    return found[0]


def ports_by_name(workload: dict) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for c in containers(workload)
            for p in c.get("ports", []) if "name" in p}


def port_numbers(workload: dict) -> set[int]:
    return {p["containerPort"] for c in containers(workload) for p in c.get("ports", [])}


def host_port(address: str) -> tuple[str, int]:
    host, port = address.rsplit(":", 1)
    return host, int(port)


def service_for_host(topology: str, host: str) -> dict | None:
    """The Service an in-cluster DNS name (short, namespaced or fully qualified) names."""
    parts = host.split(".")
    if len(parts) > 1 and parts[1] != NAMESPACE:
        return None
    if len(parts) > 2 and ".".join(parts[2:]) not in ("svc", "svc.cluster.local"):
        return None
    return find(topology, "Service", parts[0])


def readme() -> str:
    return (DEPLOY / "README.md").read_text()


def ingress_rules_for(topology: str, workload: dict, port_name: str) -> list[dict]:
    """The NetworkPolicy ingress rules that let connections reach a pod's named port: rules of
    the policies selecting the pod, that list no ports or list this one (by name or number)."""
    labels = workload["spec"]["template"]["metadata"]["labels"]
    number = ports_by_name(workload)[port_name]
    return [rule for np in objects(topology, "NetworkPolicy")
            if selects(np["spec"]["podSelector"], labels)
            for rule in np["spec"].get("ingress", [])
            if "ports" not in rule or any(p["port"] in (port_name, number) for p in rule["ports"])]


def metrics_problems(topology: str) -> list[str]:
    """What keeps Prometheus from scraping every gateway, or lets others read the metrics: each
    gateway serves --metrics-listen on all interfaces at its container port METRICS_PORT, its
    pods' prometheus.io/* annotations name that port and /metrics, a Service lists it for
    endpoint discovery but the Service clients reach does not, and the NetworkPolicy opens it
    to Prometheus's namespace only (the port has no authentication)."""
    problems = []
    advertised = {host_port(a)[0] for _, c in gateway_containers(topology)
                  for a in settings(topology, c)["--advertise"].split(",")}
    client_services = [service_for_host(topology, host) for host in advertised]
    for workload, container in gateway_containers(topology):
        where = ident(workload)
        listen = settings(topology, container).get("--metrics-listen")
        if not listen:
            problems.append(f"{where} has no --metrics-listen")
            continue
        host, port = host_port(listen)
        if host not in ("0.0.0.0", "[::]"):
            problems.append(f"{where}: --metrics-listen {listen} is not reachable from other pods")
        named = ports_by_name(workload)
        if named.get(METRICS_PORT) != port:
            problems.append(f"{where}: container port {METRICS_PORT} is {named.get(METRICS_PORT)}, "
                            f"--metrics-listen listens on {port}")
        numbers = [p["containerPort"] for c in containers(workload) for p in c.get("ports", [])]
        if numbers.count(port) != 1:
            problems.append(f"{where}: port {port} is declared {numbers.count(port)} times")
        annotations = workload["spec"]["template"]["metadata"].get("annotations", {})
        wanted = dict(zip(SCRAPE_ANNOTATIONS, ("true", str(port), "/metrics")))
        for key, value in wanted.items():
            if annotations.get(key) != value:
                problems.append(f"{where}: pod annotation {key} is {annotations.get(key)!r}, "
                                f"not {value!r}")
        labels = workload["spec"]["template"]["metadata"]["labels"]
        listing = [s for s in objects(topology, "Service")
                   if selects(s["spec"]["selector"], labels)
                   and any(p.get("targetPort") in (METRICS_PORT, port) for p in s["spec"]["ports"])]
        if not listing:
            problems.append(f"{where}: no Service lists its {METRICS_PORT} port")
        for svc in listing:
            if any(svc is c for c in client_services):
                problems.append(f"Service {svc['metadata']['name']}, which clients reach, exposes "
                                f"{where}'s unauthenticated {METRICS_PORT} port")
        if METRICS_PORT not in named:
            continue
        rules = ingress_rules_for(topology, workload, METRICS_PORT)
        if any("from" not in rule for rule in rules):
            problems.append(f"{where}: a NetworkPolicy opens {METRICS_PORT} to everyone")
        peers = [peer for rule in rules for peer in rule.get("from", [])]
        if not any(peer.get("namespaceSelector", {}).get("matchLabels") in CLIENT_NAMESPACES
                   for peer in peers):
            problems.append(f"{where}: no NetworkPolicy lets Prometheus's namespace "
                            f"{CLIENT_NAMESPACES} reach {METRICS_PORT}")
    return problems


def readme_scrape_job() -> dict:
    """The Prometheus job deploy/README.md's "Monitoring" section shows for the manifests."""
    doc = readme()
    section = doc[doc.index("\n## Monitoring\n"):]
    block = re.search(r"^( +)- job_name: .*\n(?:\1 .*\n)*", section, re.M)
    assert block, "deploy/README.md's Monitoring section shows no scrape job"
    jobs = yaml.safe_load(textwrap.dedent(block.group(0)))
    assert len(jobs) == 1
    return jobs[0]


# ---------------------------------------------------------------------------------------------
# The gateway binary


def gateway_binary() -> Path:
    return Path(os.environ.get("TOLLGATE_BIN", REPO / "target" / "release" / "tollgate"))


@functools.cache
def serve_help() -> tuple[frozenset[str], frozenset[str]]:
    """The flags and TOLLGATE_* variables `tollgate serve` accepts, from its help text."""
    binary = gateway_binary()
    if not binary.exists():
        pytest.skip(f"{binary} is not built, so the flags cannot be checked against it: "
                    "cargo build --release -p tollgate-gateway (scripts/test.sh builds it first)")
    text = subprocess.run([str(binary), "serve", "--help"], capture_output=True, text=True,
                          check=True, timeout=30).stdout
    flags = frozenset(re.findall(r"^\s+(?:-\w, )?(--[a-z0-9][a-z0-9-]*)", text, re.M))
    # "[env: NAME=default]", or "[env: NAME]" for a flag whose value the help hides.
    envs = frozenset(re.findall(r"\[env: (TOLLGATE_[A-Z0-9_]+)[=\]]", text))
    assert "--pool-bootstrap" in flags and "TOLLGATE_POOL_BOOTSTRAP" in envs, text
    return flags, envs


# ---------------------------------------------------------------------------------------------
# Strimzi CRD schemas


def closed(schema):
    """The schema with every object that lists properties closed to other fields, as the API
    server's strict field validation treats a structural schema."""
    if isinstance(schema, list):
        return [closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: closed(v) for k, v in schema.items()}
    if ("properties" in schema and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


@functools.cache
def crd_schema(kind: str, version: str) -> dict:
    crd = yaml.safe_load((SCHEMAS / STRIMZI_CRDS[kind]).read_text())
    assert crd["spec"]["names"]["kind"] == kind
    for v in crd["spec"]["versions"]:
        if v["name"] == version:
            assert v["served"], f"{kind} {version} is not served by this Strimzi release"
            return v["schema"]["openAPIV3Schema"]
    served = [v["name"] for v in crd["spec"]["versions"] if v["served"]]
    raise AssertionError(f"{kind}: {STRIMZI_GROUP}/{version} is not in the CRD (served: {served})")


def strimzi_errors(obj: dict) -> list[str]:
    group, version = obj["apiVersion"].split("/")
    assert group == STRIMZI_GROUP
    schema = crd_schema(obj["kind"], version)
    validator = jsonschema.Draft4Validator(closed(schema))
    errors = [f"{ident(obj)}: {'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
              for e in validator.iter_errors(obj)]
    errors += [f"{ident(obj)}: {path} has CEL rules this test cannot evaluate: {rules}"
               for path, rules in cel_rules_used(schema, obj)]
    return errors


def cel_rules_used(schema: dict, value, path: str = "") -> list[tuple[str, list]]:
    found = []
    if "x-kubernetes-validations" in schema:
        found.append((path or "(root)", [r["rule"] for r in schema["x-kubernetes-validations"]]))
    if isinstance(value, dict):
        for key, sub in value.items():
            if key in schema.get("properties", {}):
                found += cel_rules_used(schema["properties"][key], sub, f"{path}.{key}".lstrip("."))
    elif isinstance(value, list) and "items" in schema:
        for i, sub in enumerate(value):
            found += cel_rules_used(schema["items"], sub, f"{path}[{i}]")
    return found


# ---------------------------------------------------------------------------------------------
# The tests

parametrize = pytest.mark.parametrize("topology", sorted(TOPOLOGIES))


def test_kustomizations_only_list_resources():
    kustomizations = sorted(KUBE.rglob("kustomization.yaml"))
    assert kustomizations
    listed: set[Path] = set()
    for k in kustomizations:
        content = yaml.safe_load(k.read_text())
        extra = set(content) - {"apiVersion", "kind", "resources"}
        assert not extra, f"{k}: {sorted(extra)}: kustomize() in this test would not apply them"
        for entry in content["resources"]:
            path = (k.parent / entry).resolve()
            assert path.exists(), f"{k} lists {entry}, which does not exist"
            listed.add(path / "kustomization.yaml" if path.is_dir() else path)
    for path in KUBE.rglob("*.yaml"):
        if path.name != "kustomization.yaml":
            assert path.resolve() in listed, f"{path} is in no kustomization: nothing applies it"


@parametrize
def test_render_matches_kubectl_kustomize(topology):
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the rendering is checked by this test's own reading "
                    "of the kustomizations only")
    out = subprocess.run([kubectl, "kustomize", str(TOPOLOGIES[topology])], capture_output=True,
                         text=True, check=True, timeout=60).stdout
    theirs = [d for d in yaml.safe_load_all(out) if d]
    key = lambda o: (o["kind"], o["metadata"]["name"])  # noqa: E731
    assert sorted(theirs, key=key) == sorted(rendered(topology), key=key)


@parametrize
def test_objects_are_unique_and_namespaced(topology):
    seen = set()
    for o in rendered(topology):
        key = (o["apiVersion"], o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"])
        assert key not in seen, f"{ident(o)} is defined twice"
        seen.add(key)
        if o["kind"] != "Namespace":
            assert o["metadata"].get("namespace") == NAMESPACE, f"{ident(o)} is not in {NAMESPACE}"
    assert find(topology, "Namespace", NAMESPACE) is not None


@parametrize
def test_builtin_kinds_match_kubernetes_schemas(topology):
    errors = []
    checked = 0
    for o in rendered(topology):
        if o["apiVersion"].startswith(STRIMZI_GROUP + "/"):
            continue
        try:
            kubernetes_validate.validate(o, KUBERNETES_VERSION, strict=True)
            checked += 1
        except kubernetes_validate.ValidationError as e:
            path = ".".join(map(str, e.absolute_path)) or "(root)"
            errors.append(f"{ident(o)}: {path}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            errors.append(f"{ident(o)}: no schema: {e.message}")
    assert not errors, "\n".join(errors)
    assert checked >= 15


def test_strict_kubernetes_validation_refuses_unknown_fields():
    """The check above would pass anything if strict mode let unknown fields through."""
    deployment = copy.deepcopy(find("strimzi", "Deployment", "tollgate"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_strimzi_resources_match_crd_schemas():
    strimzi = [o for o in rendered("strimzi") if o["apiVersion"].startswith(STRIMZI_GROUP + "/")]
    assert {o["kind"] for o in strimzi} == set(STRIMZI_CRDS)
    errors = [e for o in strimzi for e in strimzi_errors(o)]
    assert not errors, "\n".join(errors)


def test_strimzi_schema_check_refuses_unknown_and_wrong_fields():
    kafka = copy.deepcopy(find("strimzi", "Kafka", "tollgate-pool"))
    kafka["spec"]["kafka"]["replicas"] = 3  # a v1beta2 field the v1 API dropped
    kafka["spec"]["cruiseControl"]["autoRebalance"][0]["mode"] = "scale-up"
    errors = strimzi_errors(kafka)
    assert any("replicas" in e for e in errors), errors
    assert any("scale-up" in e for e in errors), errors
    old = copy.deepcopy(find("strimzi", "KafkaNodePool", "brokers"))
    old["apiVersion"] = f"{STRIMZI_GROUP}/v1beta2"
    with pytest.raises(AssertionError, match="not in the CRD"):
        strimzi_errors(old)


@parametrize
def test_workload_selectors_match_their_own_pods_only(topology):
    for w in workloads(topology):
        labels = w["spec"]["template"]["metadata"]["labels"]
        assert selects(w["spec"]["selector"], labels), f"{ident(w)}: selector misses its pods"
        for other in workloads(topology):
            if other is not w:
                assert not selects(w["spec"]["selector"],
                                   other["spec"]["template"]["metadata"]["labels"]), \
                    f"{ident(w)}'s selector also matches {ident(other)}'s pods"


@parametrize
def test_services_select_pods_that_have_their_ports(topology):
    for svc in objects(topology, "Service"):
        pods = selected(topology, svc["spec"]["selector"])
        assert pods, f"Service {svc['metadata']['name']} selects no pod template"
        for w in pods:
            for port in svc["spec"]["ports"]:
                target = port.get("targetPort", port["port"])
                if isinstance(target, str):
                    assert target in ports_by_name(w), \
                        f"Service {svc['metadata']['name']}: {ident(w)} has no port named {target}"
                else:
                    assert target in port_numbers(w), \
                        f"Service {svc['metadata']['name']}: {ident(w)} has no port {target}"


@parametrize
def test_network_policies_and_budgets_select_pods_and_ports(topology):
    for np in objects(topology, "NetworkPolicy"):
        pods = selected(topology, np["spec"]["podSelector"])
        assert pods, f"NetworkPolicy {np['metadata']['name']} selects no pod template"
        for rule in np["spec"].get("ingress", []):
            for peer in rule.get("from", []):
                if "namespaceSelector" in peer:
                    assert "podSelector" not in peer, "a pod in another namespace: extend this"
                    labels = peer["namespaceSelector"]["matchLabels"]
                    assert labels in CLIENT_NAMESPACES, \
                        f"NetworkPolicy {np['metadata']['name']}: namespace {labels}"
                    assert f"{next(iter(labels))}={next(iter(labels.values()))}" in readme()
                    continue
                labels = peer["podSelector"].get("matchLabels")
                if labels in CLIENT_LABELS:
                    assert f"{next(iter(labels))}={next(iter(labels.values()))}" in readme()
                    continue
                assert selected(topology, peer["podSelector"]), \
                    f"NetworkPolicy {np['metadata']['name']}: a peer selector selects no pod"
            for port in rule.get("ports", []):
                for w in pods:
                    if isinstance(port["port"], str):
                        assert port["port"] in ports_by_name(w), \
                            f"NetworkPolicy {np['metadata']['name']}: {ident(w)} has no {port['port']}"
    for pdb in objects(topology, "PodDisruptionBudget"):
        assert selected(topology, pdb["spec"]["selector"]), f"PDB {pdb['metadata']['name']}"


@parametrize
def test_referenced_objects_exist_or_are_documented(topology):
    """ConfigMaps, keys, PVCs and service accounts must be in the manifests; Secrets are made by
    the operator (never committed), so deploy/README.md must say how, with every key."""
    doc = readme()
    secrets: dict[str, set[str]] = {}

    def config_map(name, keys=()):
        data = config_map_data(topology, name)
        for key in keys:
            assert key in data, f"ConfigMap {name} has no key {key}"

    for w in workloads(topology):
        spec = w["spec"]["template"]["spec"]
        sa = spec.get("serviceAccountName")
        if sa:
            assert find(topology, "ServiceAccount", sa), f"{ident(w)}: no ServiceAccount {sa}"
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                config_map(volume["configMap"]["name"],
                           [i["key"] for i in volume["configMap"].get("items", [])])
            if "secret" in volume:
                secrets.setdefault(volume["secret"]["secretName"], set()).update(
                    i["key"] for i in volume["secret"].get("items", []))
            if "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                assert find(topology, "PersistentVolumeClaim", claim), f"{ident(w)}: no PVC {claim}"
        for c in containers(w):
            for source in c.get("envFrom", []):
                if "configMapRef" in source:
                    config_map(source["configMapRef"]["name"])
                if "secretRef" in source:
                    secrets.setdefault(source["secretRef"]["name"], set())
            for var in c.get("env", []):
                ref = var.get("valueFrom", {})
                if "configMapKeyRef" in ref:
                    config_map(ref["configMapKeyRef"]["name"], [ref["configMapKeyRef"]["key"]])
                if "secretKeyRef" in ref:
                    secrets.setdefault(ref["secretKeyRef"]["name"], set()).add(
                        ref["secretKeyRef"]["key"])
    assert secrets
    for name, keys in secrets.items():
        if find(topology, "Secret", name):
            continue
        command = f"kubectl -n {NAMESPACE} create secret generic {name}"
        assert command in doc, f"Secret {name} is neither in the manifests nor made by " \
                               f"`{command} ...` in deploy/README.md"
        block = doc[doc.index(command):].split("\n\n", 1)[0]
        for key in keys:
            assert re.search(rf"--from-(literal|file)={re.escape(key)}=", block), \
                f"deploy/README.md creates Secret {name} without the key {key}"


@parametrize
def test_every_gateway_runs_the_autoscaler_alike(topology):
    """Every instance publishes its load through Redis and any may decide or follow: all run the
    autoscaler, with the same policy and the same actuator (autoscaling_problems says why)."""
    values = autoscaling(topology)
    assert len(gateway_containers(topology)) >= 2
    assert values.get("--pool-scale-kubernetes") or values.get("--pool-scale-command"), \
        f"the gateways in {topology} have no actuator: the autoscaler would only record"
    redis = service_for_host(topology, re.match(r"redis://([^:/]+)", values["--redis-url"])[1])
    assert redis and redis["metadata"]["name"] == "redis"


def test_the_autoscaling_check_refuses_a_gateway_left_out(monkeypatch):
    """The check above would pass anything if it looked at one gateway only."""
    original = rendered("tansu")

    def check(change) -> list[str]:
        objs = copy.deepcopy(list(original))
        replica = next(o for o in objs if o["kind"] == "Deployment"
                       and o["metadata"]["name"] == "tollgate")
        change(replica["spec"]["template"]["spec"]["containers"][0])
        monkeypatch.setitem(globals(), "rendered", lambda topology: tuple(objs))
        try:
            return autoscaling_problems("tansu")
        finally:
            monkeypatch.undo()

    assert check(lambda c: None) == []

    def no_policy(c):
        c["args"] = [a for a in c["args"] if not a.startswith("--autoscale-policy")]
    assert any("has no --autoscale-policy" in p for p in check(no_policy))

    def no_actuator(c):
        c["envFrom"] = [s for s in c["envFrom"]
                        if s.get("configMapRef", {}).get("name") != "tollgate-autoscaler"]
    assert any("--pool-scale-kubernetes" in p for p in check(no_actuator))

    def other_discovery(c):
        c["args"].append("--pool-discover=dns:tansu-headless:9092")
    assert any("--pool-discover" in p for p in check(other_discovery))


@parametrize
def test_rbac_lets_every_gateway_scale_the_target(topology):
    """Every gateway GETs the scale subresource at start (ExternalPool::start learns the pool's
    size from it) and PATCHes it whenever it is the decider, which any of them may become."""
    values = autoscaling(topology)
    target = values["--pool-scale-kubernetes"]
    kind_name, _, name = target.partition("/")
    kind, group, resource = SCALE_TARGETS[kind_name]
    assert find(topology, kind, name), f"--pool-scale-kubernetes {target}: no {kind} {name}"
    namespace = values.get("--pool-scale-namespace", NAMESPACE)

    for workload, _ in gateway_containers(topology):
        spec = workload["spec"]["template"]["spec"]
        assert spec.get("automountServiceAccountToken", True), \
            f"{ident(workload)} scales through the API server but mounts no service account token"
        sa = spec.get("serviceAccountName", "default")
        granted: set[tuple[str, str]] = set()
        for binding in objects(topology, "RoleBinding"):
            if not any(s["kind"] == "ServiceAccount" and s["name"] == sa
                       and s.get("namespace", NAMESPACE) == NAMESPACE for s in binding["subjects"]):
                continue
            if binding["metadata"]["namespace"] != namespace:
                continue
            role = find(topology, binding["roleRef"]["kind"], binding["roleRef"]["name"])
            assert role, f"RoleBinding {binding['metadata']['name']}: no {binding['roleRef']['name']}"
            for rule in role["rules"]:
                if group in rule["apiGroups"] and name in rule.get("resourceNames", [name]):
                    granted |= {(r, v) for r in rule["resources"] for v in rule["verbs"]}
        missing = {(f"{resource}/scale", v) for v in ("get", "patch")} - granted
        assert not missing, \
            f"{ident(workload)} runs as {sa}, which may not {sorted(missing)} in group {group!r} " \
            f"of namespace {namespace} for {target}"


@parametrize
def test_the_gateways_role_grants_the_scale_subresource_only(topology):
    """Every gateway pod holds this token now, so it grants what the actuator uses and no more:
    GET and PATCH of the scale subresource (gateway/src/pool/autoscale/actuator/kubernetes.rs)."""
    roles = objects(topology, "Role") + objects(topology, "ClusterRole")
    assert [r["metadata"]["name"] for r in roles] == ["tollgate-pool-scaler"]
    for rule in roles[0]["rules"]:
        assert all(r.endswith("/scale") for r in rule["resources"]), rule
        assert set(rule["verbs"]) <= {"get", "patch"}, rule
    assert not objects(topology, "ClusterRoleBinding")


@parametrize
def test_autoscale_policy_fits_the_pool(topology):
    values = autoscaling(topology)
    policy = json.loads(autoscale_policy(topology))
    assert set(policy) <= POLICY_KEYS, set(policy) - POLICY_KEYS
    assert policy["target_per_broker"] and set(policy["target_per_broker"]) <= POLICY_SIGNALS
    assert policy.get("mode", "apply") == "apply"

    kind, _, name = values["--pool-scale-kubernetes"].partition("/")
    target = find(topology, SCALE_TARGETS[kind][0], name)
    assert policy["min_brokers"] <= target["spec"]["replicas"] <= policy["max_brokers"], \
        f"{ident(target)} starts outside the policy's [min_brokers, max_brokers]"
    if target["kind"] == "KafkaNodePool":
        assert target["spec"]["roles"] == ["broker"], "the scaled pool must be brokers only"
        kafka = find(topology, "Kafka", target["metadata"]["labels"]["strimzi.io/cluster"])
        config = kafka["spec"]["kafka"].get("config", {})
        for setting in ("default.replication.factor", "offsets.topic.replication.factor",
                        "transaction.state.log.replication.factor"):
            assert policy["min_brokers"] >= int(config.get(setting, 3)), \
                f"min_brokers below {setting}: a scale-down would leave partitions unplaceable"


@parametrize
def test_the_binary_accepts_the_autoscale_policy(topology, tmp_path):
    serve_help()  # skips without a binary
    policy = tmp_path / "policy.json"
    policy.write_text(autoscale_policy(topology))
    trace, capacity = tmp_path / "trace.csv", tmp_path / "capacity.json"
    capacity.write_text(json.dumps({
        "per_broker": {s: 1_000_000 for s in POLICY_SIGNALS}, "start_seconds": 60,
        "drain_seconds": 30, "price_per_broker_hour": "0.2", "latency_ms": [[0.0, 2]]}))
    binary = str(gateway_binary())
    subprocess.run([binary, "autoscale", "trace", "--synthetic", "flat", "--days", "1",
                    "--step-seconds", "3600", "--out", str(trace)],
                   check=True, capture_output=True, timeout=60)
    run = subprocess.run([binary, "autoscale", "simulate", "--trace", str(trace), "--capacity",
                          str(capacity), "--policy", str(policy), "--out", str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, f"{binary} refuses the {topology} policy: {run.stderr}"


@parametrize
def test_gateway_flags_are_accepted_by_the_binary(topology):
    flags, envs = serve_help()
    problems = []
    for workload, container in gateway_containers(topology):
        args = container["args"]
        if args[:1] != ["serve"]:
            problems.append(f"{ident(workload)}: runs {args[:1]}, not `tollgate serve`")
            continue
        for flag in flag_values(args):
            if flag not in flags:
                problems.append(f"{ident(workload)}: argument {flag}")
        for name, (_, source) in container_env(topology, container).items():
            if name.startswith("TOLLGATE_") and name not in envs:
                problems.append(f"{ident(workload)}: {name} (flag --"
                                f"{name.removeprefix('TOLLGATE_').lower().replace('_', '-')}, "
                                f"from {source})")
    if problems:
        pytest.fail(f"`{gateway_binary()} serve` does not accept:\n  "
                    + "\n  ".join(sorted(set(problems)))
                    + "\n(a binary older than the source? cargo build --release -p tollgate-gateway)",
                    pytrace=False)


@parametrize
def test_gateways_agree_and_lanes_are_exposed(topology):
    gateways = gateway_containers(topology)
    shared = {"--advertise", "--lanes", "--kafka-listen", "--redis-url", "--pool-bootstrap",
              "--pool-kind", "--token-signing-key-file"}
    first = {k: v for k, v in settings(topology, gateways[0][1]).items() if k in shared}
    for workload, container in gateways:
        mine = {k: v for k, v in settings(topology, container).items() if k in shared}
        assert mine == first, f"{ident(workload)} differs from {ident(gateways[0][0])}: " \
                              "every gateway must present the same nodes on the same pool"
    lanes = int(first["--lanes"])
    _, kafka_port = host_port(first["--kafka-listen"])
    advertised = first["--advertise"].split(",")
    for address in advertised:
        host, port = host_port(address)
        svc = service_for_host(topology, host)
        assert svc, f"--advertise {address}: no Service {host} in {NAMESPACE}"
        exposed = {p["port"]: p.get("targetPort", p["port"]) for p in svc["spec"]["ports"]}
        for workload, container in gateways:
            assert selects(svc["spec"]["selector"], workload["spec"]["template"]["metadata"]["labels"]), \
                f"Service {host} does not send clients to {ident(workload)}"
            named = ports_by_name(workload)
            for lane in range(lanes):
                assert port + lane in exposed, f"Service {host} does not expose lane {lane}"
                target = exposed[port + lane]
                number = named.get(target, target)
                assert number == kafka_port + lane, \
                    f"Service {host}:{port + lane} goes to {number}, lane {lane} listens on " \
                    f"{kafka_port + lane}"
    admin = service_for_host(topology, "tollgate-admin")
    assert admin and admin["spec"].get("type", "ClusterIP") == "ClusterIP"
    owner, _, values = primary(topology)
    assert selected(topology, admin["spec"]["selector"]) == [owner], \
        "the admin API must reach the one gateway whose data dir holds the admin store"
    _, admin_port = host_port(values["--admin-listen"])
    assert ports_by_name(owner)[admin["spec"]["ports"][0]["targetPort"]] == admin_port


@parametrize
def test_the_primary_is_alone_and_persistent(topology):
    workload, container, values = primary(topology)
    assert workload["kind"] == "Deployment" and workload["spec"]["replicas"] == 1
    assert workload["spec"]["strategy"]["type"] == "Recreate", \
        "two pods would open the same admin store during a rolling update"
    data = next(m for m in container["volumeMounts"] if m["mountPath"] == values["--data-dir"])
    volume = next(v for v in workload["spec"]["template"]["spec"]["volumes"]
                  if v["name"] == data["name"])
    assert "persistentVolumeClaim" in volume, "the admin store must survive a restart"
    replicas = [w for w, _ in gateway_containers(topology) if w is not workload]
    assert sum(w["spec"]["replicas"] for w in replicas) + 1 >= 2
    for w in replicas:
        data = next(m for c in containers(w) for m in c["volumeMounts"]
                    if m["mountPath"] == values["--data-dir"])
        volume = next(v for v in w["spec"]["template"]["spec"]["volumes"]
                      if v["name"] == data["name"])
        assert "persistentVolumeClaim" not in volume, \
            f"{ident(w)}: only the primary keeps an admin store"


def pod_address(topology: str, address: str) -> tuple[dict, int, int]:
    """A StatefulSet pod's address under its headless Service (NAME-i.SERVICE[.NS.svc...]:PORT):
    the StatefulSet, the ordinal and the port."""
    host, port = host_port(address)
    pod, _, service_host = host.partition(".")
    svc = service_for_host(topology, service_host)
    assert svc, f"{address}: no Service {service_host}"
    assert svc["spec"].get("clusterIP") == "None", \
        f"{address}: pods have DNS names of their own only under a headless Service"
    sets = [w for w in selected(topology, svc["spec"]["selector"]) if w["kind"] == "StatefulSet"]
    assert len(sets) == 1, f"{address}: Service {service_host} selects no one StatefulSet"
    name, _, ordinal = pod.rpartition("-")
    assert name == sets[0]["metadata"]["name"] and ordinal.isdigit(), \
        f"{address}: {pod} is not a pod of StatefulSet {sets[0]['metadata']['name']}"
    assert sets[0]["spec"]["serviceName"] == svc["metadata"]["name"], \
        f"{address}: the StatefulSet's pods get DNS names under {sets[0]['spec']['serviceName']}"
    assert port in {p["port"] for p in svc["spec"]["ports"]} and port in port_numbers(sets[0])
    return sets[0], int(ordinal), port


@parametrize
def test_the_pool_addresses_resolve(topology):
    values = autoscaling(topology)
    bootstrap = values["--pool-bootstrap"].split(",")
    for _, container in gateway_containers(topology):
        discover = settings(topology, container).get("--pool-discover")
        assert discover in (None, "metadata") or "--pool-scale-kubernetes" in \
            settings(topology, container), "the binary refuses --pool-discover without an actuator"
    if topology == "strimzi":
        assert values["--pool-kind"] == "leader"
        assert values.get("--pool-discover", "metadata") == "metadata"
        kafka = objects(topology, "Kafka")[0]
        for address in bootstrap:
            host, port = host_port(address)
            assert host == f"{kafka['metadata']['name']}-kafka-bootstrap", \
                f"{host} is not the bootstrap Service Strimzi makes for Kafka " \
                f"{kafka['metadata']['name']}"
            listeners = {li["port"]: li for li in kafka["spec"]["kafka"]["listeners"]}
            assert port in listeners and listeners[port]["type"] == "internal"
            assert not listeners[port]["tls"] and "authentication" not in listeners[port], \
                "the gateways are given no TLS or SASL settings towards the pool here"
    else:
        assert values["--pool-kind"] == "stateless"
        assert "--pool-discover" not in values, \
            "with --pool-bootstrap listing the brokers in order, the autoscaler drains the " \
            "leaving ones before a scale-in; addresses of --pool-bootstrap are never taken out " \
            "by another discovery"
        # The list is the pool in scale order: ordinal i at position i, as far as the policy
        # may grow the pool, so every broker the autoscaler starts is one the gateways know.
        target = find(topology, "StatefulSet", values["--pool-scale-kubernetes"].split("/")[1])
        pods = [pod_address(topology, a) for a in bootstrap]
        assert all(sts is target for sts, _, _ in pods)
        assert [ordinal for _, ordinal, _ in pods] == list(range(len(bootstrap)))
        max_brokers = json.loads(autoscale_policy(topology))["max_brokers"]
        assert len(bootstrap) == max_brokers, \
            f"--pool-bootstrap lists {len(bootstrap)} brokers, the policy's max_brokers is {max_brokers}"


def test_the_actuator_speaks_the_strimzi_api_the_manifests_use():
    """The Kubernetes actuator addresses KafkaNodePools at a fixed API version; the Strimzi
    release whose CRDs are in schemas/ must serve it."""
    source = (REPO / "gateway" / "src" / "pool" / "autoscale" / "actuator" / "kubernetes.rs")
    found = re.findall(r'"apis/kafka\.strimzi\.io/(v\w+)"', source.read_text())
    assert found, f"no kafka.strimzi.io API version found in {source}: update this test"
    pool = objects("strimzi", "KafkaNodePool")[0]
    crd = yaml.safe_load((SCHEMAS / STRIMZI_CRDS["KafkaNodePool"]).read_text())
    served = [v["name"] for v in crd["spec"]["versions"] if v["served"]]
    for version in set(found):
        assert version in served and pool["apiVersion"] == f"{STRIMZI_GROUP}/{version}", (
            f"{source.relative_to(REPO)} scales kafkanodepools through {STRIMZI_GROUP}/{version}; "
            f"the manifests use {pool['apiVersion']} and Strimzi 1.2 serves only {served} "
            "(1.0 removed v1beta2): the PATCH would find no such resource")


def test_strimzi_rebalances_on_scale_up_and_down():
    kafka = find("strimzi", "Kafka", "tollgate-pool")
    rebalance = kafka["spec"]["cruiseControl"]["autoRebalance"]
    assert {r["mode"] for r in rebalance} == {"add-brokers", "remove-brokers"}
    for r in rebalance:
        template = find("strimzi", "KafkaRebalance", r["template"]["name"])
        assert template, f"autoRebalance {r['mode']}: no KafkaRebalance {r['template']['name']}"
        assert template["metadata"]["annotations"]["strimzi.io/rebalance-template"] == "true"
    pools = objects("strimzi", "KafkaNodePool")
    for pool in pools:
        assert pool["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]
    assert any(p["spec"]["roles"] == ["controller"] for p in pools), "KRaft needs controllers"
    peers = kafka["spec"]["kafka"]["listeners"][0]["networkPolicyPeers"]
    assert all(selected("strimzi", p["podSelector"]) for p in peers)


@parametrize
def test_pods_run_locked_down(topology):
    for w in workloads(topology):
        pod = w["spec"]["template"]["spec"]
        assert pod["securityContext"].get("runAsNonRoot") is True, ident(w)
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", ident(w)
        for c in containers(w):
            sc = c["securityContext"]
            where = f"{ident(w)} container {c['name']}"
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]), where
            assert "memory" in c["resources"]["limits"], where
            assert "readinessProbe" in c and "livenessProbe" in c, where


@parametrize
def test_gateway_probes_use_the_unauthenticated_health_endpoint(topology):
    # The admin API serves GET /healthz without a token (gateway/src/admin/mod.rs).
    assert '"/healthz"' in (REPO / "gateway" / "src" / "admin" / "mod.rs").read_text()
    for workload, container in gateway_containers(topology):
        values = settings(topology, container)
        _, admin_port = host_port(values["--admin-listen"])
        probe = container["livenessProbe"]["httpGet"]
        assert probe["path"] == "/healthz"
        assert ports_by_name(workload).get(probe["port"], probe["port"]) == admin_port
        ready = container["readinessProbe"]["tcpSocket"]["port"]
        _, kafka_port = host_port(values["--kafka-listen"])
        assert ports_by_name(workload).get(ready, ready) == kafka_port


@parametrize
def test_prometheus_finds_every_gateways_metrics_port(topology):
    # The --metrics-listen listener serves GET /metrics without a token (gateway/src/admin/mod.rs).
    admin = (REPO / "gateway" / "src" / "admin" / "mod.rs").read_text()
    assert '(&Method::GET, "/metrics")' in admin
    problems = metrics_problems(topology)
    assert not problems, "\n".join(problems)


def test_the_metrics_check_refuses_what_prometheus_would_miss(monkeypatch):
    """The check above would pass anything if it looked at one gateway only, or not at the
    annotations, the ports and the NetworkPolicy."""
    original = rendered("strimzi")

    def check(change) -> list[str]:
        objs = copy.deepcopy(list(original))
        replica = next(o for o in objs if o["kind"] == "Deployment"
                       and o["metadata"]["name"] == "tollgate")
        change(replica, objs)
        monkeypatch.setitem(globals(), "rendered", lambda topology: tuple(objs))
        try:
            return metrics_problems("strimzi")
        finally:
            monkeypatch.undo()

    def container(workload):
        return workload["spec"]["template"]["spec"]["containers"][0]

    assert check(lambda w, objs: None) == []

    def no_flag(w, objs):
        container(w)["args"] = [a for a in container(w)["args"]
                                if not a.startswith("--metrics-listen")]
    assert any("has no --metrics-listen" in p for p in check(no_flag))

    def loopback(w, objs):
        container(w)["args"] = [a.replace("0.0.0.0:9090", "127.0.0.1:9090")
                                for a in container(w)["args"]]
    assert any("not reachable" in p for p in check(loopback))

    def other_port(w, objs):
        w["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] = "9091"
        next(p for p in container(w)["ports"] if p["name"] == METRICS_PORT)["containerPort"] = 9091
    found = check(other_port)
    assert any("--metrics-listen listens on 9090" in p for p in found), found

    def unannotated(w, objs):
        del w["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scrape"]
    assert any("prometheus.io/scrape" in p for p in check(unannotated))

    def on_the_client_service(w, objs):
        kafka = next(o for o in objs if o["kind"] == "Service"
                     and o["metadata"]["name"] == "tollgate-kafka")
        kafka["spec"]["ports"].append({"name": METRICS_PORT, "port": 9090,
                                       "targetPort": METRICS_PORT})
    assert any("which clients reach" in p for p in check(on_the_client_service))

    def open_to_all(w, objs):
        policy = next(o for o in objs if o["kind"] == "NetworkPolicy"
                      and o["metadata"]["name"] == "tollgate-gateway")
        policy["spec"]["ingress"][0]["ports"].append({"port": METRICS_PORT})
    assert any("to everyone" in p for p in check(open_to_all))

    def closed(w, objs):
        policy = next(o for o in objs if o["kind"] == "NetworkPolicy"
                      and o["metadata"]["name"] == "tollgate-gateway")
        policy["spec"]["ingress"] = [r for r in policy["spec"]["ingress"]
                                     if {"port": METRICS_PORT} not in r.get("ports", [])]
    assert any("no NetworkPolicy lets" in p for p in check(closed))


def test_the_readme_scrape_job_finds_the_metrics_port():
    """The job deploy/README.md offers scrapes the gateways' METRICS_PORT in this namespace
    under the job name the alerts' `up` rule reads."""
    job = readme_scrape_job()
    alerts = (DEPLOY / "prometheus" / "alerts.yml").read_text()
    assert {job["job_name"]} == set(re.findall(r'\bup\{job="([^"]+)"', alerts))
    sd, = job["kubernetes_sd_configs"]
    assert sd["role"] == "pod" and sd["namespaces"]["names"] == [NAMESPACE]
    keep, = [r for r in job["relabel_configs"] if r.get("action") == "keep"]
    assert keep["source_labels"] == ["__meta_kubernetes_pod_container_port_name"]
    for topology in TOPOLOGIES:
        for workload, _ in gateway_containers(topology):
            names = [n for n in ports_by_name(workload) if re.fullmatch(keep["regex"], n)]
            assert names == [METRICS_PORT], f"{ident(workload)}: the job keeps ports {names}"
    assert job.get("metrics_path", "/metrics") == "/metrics"


def test_the_example_configuration_names_flags_of_the_binary():
    """Every key of deploy/tollgate.example.toml, commented out or not, is a `tollgate serve`
    flag, and the file is TOML with the commented ones put back; the monitoring and audit flags
    are all shown."""
    flags, _ = serve_help()
    text = (DEPLOY / "tollgate.example.toml").read_text()
    setting = re.compile(r"^# ([a-z0-9-]+ = .*)$", re.M)
    config = tomllib.loads(setting.sub(r"\1", text))
    assert set(tomllib.loads(text)) < set(config), "no commented example is left to check"
    unknown = {f"--{key}" for key in config} - flags
    assert not unknown, \
        f"deploy/tollgate.example.toml names settings `tollgate serve` lacks: {unknown}"
    monitoring = {f for f in flags if f.startswith(("--metrics-", "--otlp-", "--audit-"))}
    assert "--metrics-listen" in monitoring and "--audit-s3-url" in monitoring
    missing = monitoring - {f"--{key}" for key in config}
    assert not missing, f"deploy/tollgate.example.toml does not show {sorted(missing)}"


def containerfile(name: str) -> tuple[list[str], list[list[str]]]:
    """A Containerfile's stages (FROM lines) and its instructions, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", (DEPLOY / name).read_text())
    lines = [line.strip() for line in text.splitlines()
             if line.strip() and not line.strip().startswith("#")]
    return [line for line in lines if line.upper().startswith("FROM ")], \
        [line.split(None, 1) for line in lines]


@pytest.mark.parametrize("name,binary,image,uid_of", [
    ("Containerfile", "tollgate", "tollgate:0.1.0", "tollgate"),
    ("tansu.Containerfile", "tansu", "tansu:0.6.0-tollgate", "tansu"),
])
def test_containerfiles(name, binary, image, uid_of):
    stages, instructions = containerfile(name)
    assert stages[0].split()[1] == "rust:1-bookworm" and stages[-1] == "FROM debian:bookworm-slim"
    final = instructions[max(i for i, ins in enumerate(instructions) if ins[0].upper() == "FROM"):]
    user = [ins[1] for ins in final if ins[0] == "USER"][-1]
    uid = int(user.split(":")[0])
    assert uid > 0
    assert [ins[1] for ins in final if ins[0] == "ENTRYPOINT"] == [f'["{binary}"]']
    copies = [ins[1] for ins in final if ins[0] == "COPY"]
    assert any(c.startswith("--from=build ") and c.endswith(f"/usr/local/bin/{binary}") for c in copies)
    if binary == "tollgate":
        run = " ".join(ins[1] for ins in instructions if ins[0] == "RUN")
        assert "cargo build --release --locked -p tollgate-gateway" in run
        assert "target/release/tollgate" in run
        exposed = " ".join(ins[1] for ins in final if ins[0] == "EXPOSE").split()
        assert "9080" in exposed and any(p.startswith("9092") for p in exposed)
    # The pods run as the image's user, and pull the image deploy/README.md builds.
    for topology in TOPOLOGIES:
        for w in workloads(topology):
            for c in containers(w):
                if c["image"].split(":")[0] == uid_of:
                    assert c["image"] == image
                    assert w["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == uid
    assert f"-f deploy/{name} -t {image} ." in readme()


def test_dockerignore_keeps_what_the_build_needs():
    patterns = [line.strip().rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for junk in ("target", ".tollgate", "node_modules", ".venv", ".git"):
        assert junk in patterns, f".dockerignore does not exclude {junk}"
    members = re.search(r"members\s*=\s*\[([^\]]*)\]", (REPO / "Cargo.toml").read_text()).group(1)
    needed = ["Cargo.toml", "Cargo.lock", "vendor"] + re.findall(r'"([^"]+)"', members)
    for path in needed:
        assert (REPO / path).exists(), path
        for pattern in patterns:
            assert not re.fullmatch(pattern.replace("**/", "").replace("*", "[^/]*"), path), \
                f".dockerignore pattern {pattern} excludes {path}, which the build needs"


def test_readme_says_how_to_apply_both_topologies():
    doc = readme()
    for command in ("kubectl apply -k deploy/kubernetes\n", "kubectl apply -k deploy/kubernetes/tansu"):
        assert command in doc, command


def test_readme_documents_the_pool_flags_of_the_binary():
    """deploy/README.md describes every --pool-* flag `tollgate serve` has, and no other."""
    flags, _ = serve_help()
    pool_flags = {f for f in flags if f.startswith("--pool-")}
    assert "--pool-scale-kubernetes" in pool_flags and "--pool-discover" in pool_flags
    documented = set(re.findall(r"`(--pool-[a-z0-9-]+)", readme()))
    assert pool_flags - documented == set(), "deploy/README.md does not describe these"
    assert documented - pool_flags == set(), "deploy/README.md names flags the binary lacks"
    for kind in ("list:", "ordinal:", "dns:", "metadata"):
        assert f"`{kind}" in readme(), f"deploy/README.md does not describe --pool-discover {kind}"
