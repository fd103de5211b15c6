"""Checks of the deployment files, run by `make check-deploy` (tools from install-deploy-tools.sh).

Each check prints `ok` or `FAIL` with the problems it found; the exit status is 1 if any failed.

- Dockerfile: hadolint; every COPY source is in the build context (.dockerignore allow-list);
  the install steps are the slim install of `make run` on a CPU (`pip install --no-cache-dir -c
  requirements.lock .` and Silero VAD's wheel without its deps) and, for the CUDA image, the `torch` extra.
- docker-compose.yml: the compose-spec JSON schema; bind mounts, build targets and ASR_* names exist.
- Grafana: provisioning paths match the compose mounts; dashboard panels are unique, do not
  overlap and use the provisioned data source.
- Prometheus: `promtool check config` (which also checks the alert rules).
- PromQL everywhere (Grafana dashboard, alert rules, prometheus-adapter rule): every expression
  parses (`promtool check rules` on a generated file) and every `asr_*` name it queries is exposed
  by the service's metrics (app/metrics.py rendered in the Prometheus text format).
- Shell scripts (demo, tools installer, image rehearsal): shellcheck.
- Kubernetes: `kubectl kustomize` renders each overlay with Debian's kubectl and, if another is on
  PATH, with that one too (the two outputs must agree); the result and the Ingress example
  validate against the Kubernetes JSON schemas (kubernetes-validate --strict); cross-references
  (selectors, ports, probes, grace periods, ConfigMap keys, GPU requests) are consistent.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

METRIC_NAME = re.compile(r"\basr_[a-z0-9_]+\b")
OVERLAYS: dict[str, dict[str, Any]] = {
    "cpu": {"ASR_DEVICE": "cpu", "gpu": False},
    "gpu": {"ASR_DEVICE": "cuda", "gpu": True},
}
# Grafana's variables, replaced by plain PromQL so promtool can parse the dashboard's queries.
GRAFANA_VARS = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h", "$instance": ".*", "$route": ".*"}
ADAPTER_VARS = {"<<.Series>>": "asr_metric", "<<.LabelMatchers>>": 'namespace="ns",pod="p"', "<<.GroupBy>>": "pod"}


# ----------------------------------------------------------------------------------------------
# Helpers shared with tests/integration/test_deploy_metrics.py


def exposed_metric_names(exposition: str) -> set[str]:
    """Sample names a Prometheus text exposition offers, including those of metric families that
    have no samples yet (a labelled counter before its first increment)."""
    names: set[str] = set()
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("_sum", "_count", "_created"),
        "gauge": ("",),
    }
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            base = name.removesuffix("_total") if kind == "counter" else name
            names.update(base + suffix for suffix in suffixes.get(kind, ("",)))
            names.add(name)
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def dashboard_queries(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression of a Grafana dashboard: panel targets (rows included) and variables."""

    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    queries = [t["expr"] for p in panels(dashboard.get("panels", [])) for t in p.get("targets", []) if "expr" in t]
    for var in dashboard.get("templating", {}).get("list", []):
        query = var.get("query")
        if var.get("type") == "query":
            queries.append(query["query"] if isinstance(query, dict) else query)
    return queries


def referenced_metrics(queries: list[str]) -> set[str]:
    """The `asr_*` series names the queries read."""
    return {name for query in queries for name in METRIC_NAME.findall(query)}


def service_metric_names() -> set[str]:
    """Names exposed by a fresh instance of the service's metrics (app/metrics.py)."""
    from prometheus_client import generate_latest

    from app.metrics import Metrics

    return exposed_metric_names(generate_latest(Metrics().registry).decode())


def settings_env_names() -> set[str]:
    """Environment variable names the service's settings read (ASR_<FIELD>)."""
    from app.config import Settings

    return {f"ASR_{name.upper()}" for name in Settings.model_fields}


# ----------------------------------------------------------------------------------------------


def run(cmd: list[str | Path], problems: list[str]) -> str:
    """Run a tool; a non-zero exit becomes a problem carrying its output."""
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        problems.append(
            f"`{' '.join(str(c) for c in cmd)}` exited {proc.returncode}:\n{(proc.stdout + proc.stderr).strip()}"
        )
    return proc.stdout


def check_dockerfile(ctx: Context) -> list[str]:
    problems: list[str] = []
    run([ctx.venv_bin / "hadolint", "--failure-threshold", "info", "Dockerfile"], problems)
    text = (ROOT / "Dockerfile").read_text()
    allowed = {
        line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines() if line.startswith("!")
    }
    for match in re.finditer(r"^COPY (?!--from)(?:--\S+ )*(.+) \S+$", text, re.MULTILINE):
        for source in match.group(1).split():
            if source.rstrip("/") not in allowed:
                problems.append(f"COPY {source}: not allowed into the build context by .dockerignore")
    slim = (
        "RUN pip install --no-cache-dir -c requirements.lock . "
        "&& pip install --no-cache-dir --no-deps -c requirements.lock silero-vad"
    )
    cuda = 'RUN pip install --no-cache-dir -c requirements.lock ".[torch]"'
    for step in (slim, cuda):
        if step not in text.splitlines():
            problems.append(f"Dockerfile: expected the install step `{step}`")
    problems += [
        f"Dockerfile ENV {name}: not a setting in app/config.py"
        for name in re.findall(r"\b(ASR_[A-Z0-9_]+)=", text)
        if name not in ctx.settings
    ]
    return problems


def check_scripts(ctx: Context) -> list[str]:
    problems: list[str] = []
    scripts = ["scripts/demo.sh", "scripts/install-deploy-tools.sh", "deploy/docker/rehearse-build.sh"]
    run([ctx.venv_bin / "shellcheck", *scripts], problems)
    return problems


def check_compose(ctx: Context) -> list[str]:
    problems: list[str] = []
    run([ctx.venv_bin / "check-jsonschema", "--builtin-schema", "vendor.compose-spec", "docker-compose.yml"], problems)
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    stages = set(re.findall(r"^FROM \S+ AS (\S+)$", (ROOT / "Dockerfile").read_text(), re.MULTILINE))
    for name, service in compose["services"].items():
        target = service.get("build", {}).get("target")
        if target is not None and target not in stages:
            problems.append(f"compose service {name}: build target {target!r} is not a Dockerfile stage")
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith(".") and not (ROOT / source).exists():
                problems.append(f"compose service {name}: bind mount source {source} does not exist")
        problems += [
            f"compose service {name}: {key} is not a setting in app/config.py"
            for key in service.get("environment", {})
            if key.startswith("ASR_") and key not in ctx.settings
        ]
    prometheus = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    for job in prometheus["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host = target.split(":")[0]
                if host != "localhost" and host not in compose["services"]:
                    problems.append(f"prometheus job {job['job_name']}: target {target} is not a compose service")
    return problems


def check_grafana(ctx: Context) -> list[str]:
    """Provisioning matches the compose mounts; the dashboard's panels are unique, laid out without
    overlaps, and use the provisioned data source (directly or through its variable)."""
    problems: list[str] = []
    grafana = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["grafana"]
    mounts = dict(v.split(":")[:2] for v in grafana["volumes"] if v.startswith("."))
    provisioning = ROOT / "deploy/grafana/provisioning"
    providers = yaml.safe_load((provisioning / "dashboards/asr.yml").read_text())["providers"]
    if {p["options"]["path"] for p in providers} != {mounts.get("./deploy/grafana/dashboards")}:
        problems.append("the dashboard provider's path is not where compose mounts deploy/grafana/dashboards")
    sources = yaml.safe_load((provisioning / "datasources/prometheus.yml").read_text())["datasources"]
    uids = {d["uid"] for d in sources} | {"${datasource}"}
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/asr.json").read_text())
    panels = dashboard["panels"]
    if len({p["id"] for p in panels}) != len(panels):
        problems.append("dashboard: panel ids are not unique")
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        pos = panel["gridPos"]
        for cell in (
            (x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])
        ):
            if cell in cells:
                problems.append(f"dashboard: panels {cells[cell]!r} and {panel['title']!r} overlap")
                break
            cells[cell] = panel["title"]
        used = {t.get("datasource", panel.get("datasource", {})).get("uid") for t in panel.get("targets", [])}
        if used - uids:
            problems.append(f"dashboard panel {panel['title']!r}: unknown data source {sorted(used - uids)}")
    return problems


def check_prometheus(ctx: Context) -> list[str]:
    problems: list[str] = []
    run([ctx.tools / "promtool", "check", "config", "deploy/prometheus/prometheus.yml"], problems)
    return problems


def promql_sources() -> dict[str, list[str]]:
    """PromQL of the repository by source, Grafana and adapter templates made plain PromQL."""
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/asr.json").read_text())
    rules = yaml.safe_load((ROOT / "deploy/prometheus/rules.yml").read_text())
    adapter = yaml.safe_load((ROOT / "deploy/k8s/examples/prometheus-adapter-values.yaml").read_text())

    def substitute(query: str, variables: dict[str, str]) -> str:
        for name, value in sorted(variables.items(), key=lambda kv: -len(kv[0])):
            query = query.replace(name, value)
        return query

    grafana = [substitute(q, GRAFANA_VARS) for q in dashboard_queries(dashboard)]
    grafana = [re.sub(r"^label_values\((\w+), \w+\)$", r"\1", q) for q in grafana]  # a variable's series
    adapter_queries = []
    for rule in adapter["rules"]["custom"]:
        series = rule["seriesQuery"]
        variables = {**ADAPTER_VARS, "<<.Series>>": series.split("{")[0]}
        adapter_queries += [series, substitute(rule["metricsQuery"], variables)]
    alerts = [r["expr"] for group in rules["groups"] for r in group["rules"]]
    return {
        "deploy/grafana/dashboards/asr.json": grafana,
        "deploy/prometheus/rules.yml": alerts,
        "deploy/k8s/examples/prometheus-adapter-values.yaml": adapter_queries,
    }


def check_promql(ctx: Context) -> list[str]:
    problems: list[str] = []
    sources = promql_sources()
    for source, queries in sources.items():
        unknown = referenced_metrics(queries) - ctx.metrics
        if not queries:
            problems.append(f"{source}: no queries found")
        if unknown:
            problems.append(f"{source}: queries metrics the service does not expose: {sorted(unknown)}")
    rules = [{"record": f"check:query_{i}", "expr": q} for i, q in enumerate(q for qs in sources.values() for q in qs)]
    rule_file = ctx.out / "promql-rules.yml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "repository_promql", "rules": rules}]}))
    run([ctx.tools / "promtool", "check", "rules", rule_file], problems)
    return problems


def kubectls(ctx: Context) -> list[Path]:
    """Debian's kubectl (installed by the tools script) and, if different, the one on PATH."""
    found = [ctx.tools / "kubectl"]
    other = shutil.which("kubectl")
    if other and Path(other).resolve() != found[0].resolve():
        found.append(Path(other))
    return found


def normalise(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rendered manifests without the differences between kustomize versions: empty maps and
    the generated ConfigMap's hash suffix."""

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if v != {}}
        if isinstance(value, list):
            return [clean(v) for v in value]
        if isinstance(value, str):
            return re.sub(r"^asr-config-[a-z0-9]{10}$", "asr-config", value)
        return value

    return sorted((clean(d) for d in docs), key=lambda d: (d["kind"], d["metadata"]["name"]))


def check_kubernetes(ctx: Context) -> list[str]:
    problems: list[str] = []
    for overlay, expected in OVERLAYS.items():
        renders = []
        for n, kubectl in enumerate(kubectls(ctx)):
            rendered = run([kubectl, "kustomize", f"deploy/k8s/overlays/{overlay}"], problems)
            path = ctx.out / f"k8s-{overlay}-{n}.yaml"
            path.write_text(rendered)
            for version in ctx.k8s_versions:
                run([ctx.venv_bin / "kubernetes-validate", "--strict", "--quiet", "-k", version, path], problems)
            renders.append(normalise([d for d in yaml.safe_load_all(rendered) if d]))
        if any(r != renders[0] for r in renders[1:]):
            problems.append(f"overlay {overlay}: {' and '.join(map(str, kubectls(ctx)))} render different manifests")
        if renders and renders[0]:
            problems += [f"overlay {overlay}: {p}" for p in manifest_problems(renders[0], expected, ctx)]
    for version in ctx.k8s_versions:
        run(
            [
                ctx.venv_bin / "kubernetes-validate",
                "--strict",
                "--quiet",
                "-k",
                version,
                "deploy/k8s/examples/ingress.yaml",
            ],
            problems,
        )
    return problems


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    if len(found) != 1:
        raise LookupError(f"expected one {kind}, found {len(found)}")
    return found[0]


def manifest_problems(docs: list[dict[str, Any]], expected: dict[str, Any], ctx: Context) -> list[str]:
    """Cross-references inside one rendered overlay."""
    try:
        deploy, service, config = by_kind(docs, "Deployment"), by_kind(docs, "Service"), by_kind(docs, "ConfigMap")
        monitor, pdb = by_kind(docs, "ServiceMonitor"), by_kind(docs, "PodDisruptionBudget")
        hpa = by_kind(docs, "HorizontalPodAutoscaler")
    except LookupError as exc:
        return [str(exc)]
    pod = deploy["spec"]["template"]
    container = pod["spec"]["containers"][0]
    settings = config["data"]
    problems = pod_problems(pod, container, settings)
    pod_labels = pod["metadata"]["labels"]
    port_names = {p["name"] for p in container["ports"]}
    problems += [f"unknown setting {key} in the ConfigMap" for key in settings if key not in ctx.settings]
    if settings.get("ASR_DEVICE") != expected["ASR_DEVICE"]:
        problems.append(f"ASR_DEVICE is {settings.get('ASR_DEVICE')!r}, expected {expected['ASR_DEVICE']!r}")
    if container["envFrom"][0]["configMapRef"]["name"] != config["metadata"]["name"]:
        problems.append("the container's envFrom does not name the generated ConfigMap")
    target_port = service["spec"]["ports"][0]["targetPort"]
    if not _matches(service["spec"]["selector"], pod_labels) or target_port not in port_names:
        problems.append("the Service does not select the pods' labels and http port")
    monitored_ports = {e["port"] for e in monitor["spec"]["endpoints"]}
    service_ports = {p["name"] for p in service["spec"]["ports"]}
    if not _matches(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"]) or (
        monitored_ports - service_ports
    ):
        problems.append("the ServiceMonitor does not select the Service or its port name")
    if not _matches(pdb["spec"]["selector"]["matchLabels"], pod_labels):
        problems.append("the PodDisruptionBudget does not select the pods")
    if hpa["spec"]["scaleTargetRef"]["name"] != deploy["metadata"]["name"]:
        problems.append("the HorizontalPodAutoscaler does not target the Deployment")
    hpa_metrics = {m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"}
    if not hpa_metrics or hpa_metrics - ctx.metrics:
        problems.append(f"HPA Pods metrics {sorted(hpa_metrics)} are missing or not exposed by the service")
    gpu = "nvidia.com/gpu" in container["resources"].get("limits", {})
    if gpu != expected["gpu"] or (gpu and not (pod["spec"].get("tolerations") and pod["spec"].get("nodeSelector"))):
        problems.append("GPU overlays need an nvidia.com/gpu limit, tolerations and a node selector; CPU ones none")
    return problems


def pod_problems(pod: dict[str, Any], container: dict[str, Any], settings: dict[str, str]) -> list[str]:
    """Probes, security context, writable /tmp and a grace period that covers the drain."""
    problems = []
    probes = {
        kind: container.get(kind, {}).get("httpGet", {}).get("path")
        for kind in ("startupProbe", "readinessProbe", "livenessProbe")
    }
    if probes != {"startupProbe": "/readyz", "readinessProbe": "/readyz", "livenessProbe": "/healthz"}:
        problems.append(f"probes should be startup+readiness on /readyz, liveness on /healthz, got {probes}")
    security = container.get("securityContext", {})
    if not (
        pod["spec"]["securityContext"].get("runAsNonRoot")
        and security.get("readOnlyRootFilesystem")
        and security.get("allowPrivilegeEscalation") is False
    ):
        problems.append("the pod must run as non-root with a read-only root filesystem and no privilege escalation")
    if "/tmp" not in {m["mountPath"] for m in container.get("volumeMounts", [])}:
        problems.append("nothing is mounted at /tmp (the root filesystem is read-only)")
    command = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    pre_stop = float(command[1]) if command[:1] == ["sleep"] and len(command) == 2 else 0.0
    drain = float(settings.get("ASR_SHUTDOWN_GRACE_S", 30))
    grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
    if not pre_stop or grace < pre_stop + drain + 5:
        problems.append(
            f"terminationGracePeriodSeconds {grace} must cover a preStop sleep ({pre_stop} s) "
            f"+ ASR_SHUTDOWN_GRACE_S ({drain} s) + 5 s"
        )
    return problems


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


class Context:
    """What the checks share: tool locations, the output folder and the service's names."""

    def __init__(self, tools: Path, out: Path, k8s_versions: list[str]) -> None:
        self.tools = tools
        self.venv_bin = Path(sys.executable).parent
        self.out = out
        self.k8s_versions = k8s_versions
        self.metrics = service_metric_names()
        self.settings = settings_env_names()


CHECKS: dict[str, Callable[[Context], list[str]]] = {
    "Dockerfile": check_dockerfile,
    "docker-compose.yml": check_compose,
    "Grafana provisioning and dashboard": check_grafana,
    "Prometheus config": check_prometheus,
    "PromQL (dashboard, alerts, adapter)": check_promql,
    "Kubernetes manifests": check_kubernetes,
    "shell scripts": check_scripts,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tools", type=Path, default=ROOT / "build/deploy-tools/bin", help="kubectl and promtool")
    parser.add_argument("--out", type=Path, default=ROOT / "build/deploy-check", help="rendered files go here")
    parser.add_argument("--k8s-versions", default="1.30.0,1.34.0", help="Kubernetes versions to validate against")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    ctx = Context(args.tools.resolve(), args.out.resolve(), args.k8s_versions.split(","))
    failed = 0
    for name, check in CHECKS.items():
        problems = check(ctx)
        print(f"{'ok  ' if not problems else 'FAIL'} {name}")
        for problem in problems:
            print("     " + problem.replace("\n", "\n     "))
        failed += bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
