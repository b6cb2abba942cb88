"""compose.yaml, checked statically: no Docker engine runs here.

Well-formed, every file it names is in the repository, the shipped configs are mounted where
each image reads them, and the addresses in prometheus.yml, alertmanager.yml and the Grafana
datasources reach the services as compose.yaml starts them (all on the host's network).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from tests.deploy.deploy_support import (
    LOOPBACK_HOSTS,
    REPO,
    XEN_HOST_PATHS,
    compose,
    console_scripts,
    endpoint,
    flag_values,
    host_path,
    is_mounted,
    listen_host,
    listen_port,
    load_yaml,
    mounts,
    service,
)
from tests.support import require_binary

DOM0_SERVICES = ("exporter", "remediator")
SERVICES = (*DOM0_SERVICES, "prometheus", "alertmanager", "grafana")
# The attributes of a service in the Compose specification, so that a typo (`cap_adds`) fails
# here instead of being ignored by an engine we cannot run.
SERVICE_KEYS = {
    "annotations", "attach", "blkio_config", "build", "cap_add", "cap_drop", "cgroup",
    "cgroup_parent", "command", "configs", "container_name", "cpu_count", "cpu_percent",
    "cpu_period", "cpu_quota", "cpu_rt_period", "cpu_rt_runtime", "cpu_shares", "cpus",
    "cpuset", "credential_spec", "depends_on", "deploy", "develop", "device_cgroup_rules",
    "devices", "dns", "dns_opt", "dns_search", "domainname", "entrypoint", "env_file",
    "environment", "expose", "extends", "external_links", "extra_hosts", "gpus", "group_add",
    "healthcheck", "hostname", "image", "init", "ipc", "isolation", "labels", "links",
    "logging", "mac_address", "mem_limit", "mem_reservation", "mem_swappiness",
    "memswap_limit", "network_mode", "networks", "oom_kill_disable", "oom_score_adj", "pid",
    "pids_limit", "platform", "ports", "post_start", "pre_stop", "privileged", "profiles",
    "pull_policy", "read_only", "restart", "runtime", "scale", "secrets", "security_opt",
    "shm_size", "stdin_open", "stop_grace_period", "stop_signal", "storage_opt", "sysctls",
    "tmpfs", "tty", "ulimits", "user", "userns_mode", "uts", "volumes", "volumes_from",
    "working_dir",
}  # fmt: skip
TOP_KEYS = {"name", "services", "networks", "volumes", "secrets", "configs", "include"}
# What is deployed is what was tested: compose pins the Prometheus and Alertmanager the tests
# run (Debian 12's, which `make deps` installs; the rules need keep_firing_for, Prometheus 2.42).
TESTED_VERSIONS = {"prom/prometheus": "2.42.0", "prom/alertmanager": "0.25.0"}
TESTED_BINARIES = {"prom/prometheus": "prometheus", "prom/alertmanager": "prometheus-alertmanager"}
MINIMUM_IMAGE_VERSIONS = {"grafana/grafana-oss": (9, 0)}


def _command(name: str) -> list[str]:
    command = service(name)["command"]
    assert isinstance(command, list), f"{name}: write command as an argv list"
    return [str(arg) for arg in command]


def _flag(name: str, flag: str) -> str:
    values = flag_values(_command(name))
    assert flag in values, f"{name}: command sets no {flag}"
    return values[flag]


def _port(name: str) -> int:
    if name == "grafana":
        return int(service("grafana")["environment"]["GF_SERVER_HTTP_PORT"])
    return listen_port(_flag(name, "--web.listen-address"))


def _shipped(name: str, container_path: str) -> Path:
    path = host_path(name, container_path)
    assert path is not None, f"{name}: nothing from the repository is mounted at {container_path}"
    assert path.exists(), f"{name}: {container_path} comes from {path}, which does not exist"
    return path


def _reachable_on_host(host: str, service_name: str) -> None:
    """A URL host that reaches a service listening on the host's network."""
    bound = listen_host(_flag(service_name, "--web.listen-address"))
    if bound in LOOPBACK_HOSTS:
        assert host in LOOPBACK_HOSTS, f"{service_name} listens on {bound} only, not on {host}"


def _version(tag: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", tag)[:2])


def test_compose_is_well_formed_with_known_keys() -> None:
    data = compose()
    assert set(data) <= TOP_KEYS | {k for k in data if k.startswith("x-")}
    assert set(data["services"]) == set(SERVICES)
    for name in SERVICES:
        unknown = set(service(name)) - SERVICE_KEYS
        assert not unknown, f"{name}: not Compose service attributes: {sorted(unknown)}"


def test_every_service_shares_the_hosts_network() -> None:
    # The shipped configs address each other on 127.0.0.1; the remediator's vifs exist only in
    # Dom0's namespace. With host networking `ports:` would be ignored: none may pretend.
    for name in SERVICES:
        assert service(name).get("network_mode") == "host", name
        assert "ports" not in service(name), f"{name}: ports are ignored with host networking"


def test_listen_ports_are_the_documented_defaults_and_distinct() -> None:
    # design.md: exporter :10170, remediator :10171; Prometheus 9090, Alertmanager 9093.
    ports = {name: _port(name) for name in SERVICES}
    assert ports["exporter"] == 10170
    assert ports["remediator"] == 10171
    assert ports["prometheus"] == 9090
    assert ports["alertmanager"] == 9093
    assert len(set(ports.values())) == len(ports), ports
    cluster = flag_values(_command("alertmanager")).get("--cluster.listen-address", "x")
    assert cluster == "", "a single Alertmanager should not open the cluster gossip port"


def test_dom0_services_build_one_image_from_the_shipped_dockerfile() -> None:
    build = service("exporter")["build"]
    assert (REPO / build["context"] / build["dockerfile"]).is_file()
    images = {service(name)["image"] for name in DOM0_SERVICES}
    assert len(images) == 1, f"one image for both Dom0 services, got {images}"
    # Without its own build, compose would try to pull the remediator's image from a registry.
    assert service("remediator")["build"] == build
    for name in DOM0_SERVICES:
        program = _command(name)[0]
        assert program == f"judicator-{name}" and program in console_scripts()


def test_dom0_services_get_only_the_privileges_they_need() -> None:
    for name in DOM0_SERVICES:
        svc = service(name)
        assert not svc.get("privileged", False), f"{name}: no privileged containers"
        assert svc["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in svc["security_opt"], name
        assert svc.get("read_only") is True, name
        assert [d.partition(":")[0] for d in svc["devices"]] == ["/dev/xen"], name
    # NET_ADMIN: the exporter's direction counters, the remediator's shaping (both tc).
    assert sorted(service("exporter")["cap_add"]) == ["IPC_LOCK", "NET_ADMIN"]
    assert sorted(service("remediator")["cap_add"]) == ["IPC_LOCK", "NET_ADMIN"]
    assert "--collector.flowdirection" in service("exporter")["command"]


def test_mounted_repository_files_exist_and_host_paths_are_known() -> None:
    named_volumes = set(compose().get("volumes") or {})
    for name in SERVICES:
        for mount in mounts(name):
            if mount.named_volume:
                assert mount.source in named_volumes, f"{name}: undeclared volume {mount.source}"
            elif mount.repo_path is not None:
                assert mount.repo_path.exists(), f"{name}: {mount.source} is not in the repository"
                assert REPO in (mount.repo_path, *mount.repo_path.parents), mount.source
                assert mount.read_only, f"{name}: mount shipped configs read-only: {mount.source}"
            elif mount.source not in XEN_HOST_PATHS:
                assert mount.source == "/etc/judicator/remediator.token", (
                    f"{name}: unexpected host path {mount.source}"
                )
            else:
                assert name in DOM0_SERVICES, f"{name} has no business with {mount.source}"
                assert mount.source == mount.target, "Xen host paths keep their place"


def test_images_are_pinned_and_new_enough() -> None:
    for name in ("prometheus", "alertmanager", "grafana"):
        repository, _, tag = service(name)["image"].rpartition(":")
        assert tag and tag != "latest", f"{name}: pin the image version"
        if repository in TESTED_VERSIONS:
            assert tag == f"v{TESTED_VERSIONS[repository]}", f"{name}: deploy what the tests run"
        else:
            assert _version(tag) >= MINIMUM_IMAGE_VERSIONS[repository], service(name)["image"]


@pytest.mark.parametrize("repository", sorted(TESTED_VERSIONS))
def test_the_tests_run_the_versions_compose_deploys(repository: str) -> None:
    binary = require_binary(TESTED_BINARIES[repository])
    result = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
    first_line = (result.stdout + result.stderr).splitlines()[0]
    version = re.search(r"version (\d+\.\d+\.\d+)", first_line)
    assert version, first_line
    assert version[1] == TESTED_VERSIONS[repository], f"{first_line}: compose pins another"


def test_prometheus_reads_the_shipped_config_and_every_rule_file() -> None:
    config_path = _flag("prometheus", "--config.file")
    assert _shipped("prometheus", config_path) == (REPO / "prometheus/prometheus.yml").resolve()
    config = load_yaml(REPO / "prometheus" / "prometheus.yml")
    assert is_mounted("prometheus", _flag("prometheus", "--storage.tsdb.path"))
    rule_files = config.get("rule_files") or []
    assert rule_files, "prometheus.yml loads no rules: the policies would never fire"
    shipped_rules = set()
    for pattern in rule_files:
        in_container = PurePosixPath(config_path).parent / pattern
        on_host = host_path("prometheus", str(in_container))
        assert on_host is not None, f"rule_files {pattern!r} is not mounted into the container"
        matched = sorted(on_host.parent.glob(on_host.name))
        assert matched, f"rule_files {pattern!r} matches no file"
        for rules in matched:
            assert "groups" in load_yaml(rules), f"{rules} is not a rules file"
        shipped_rules.update(matched)
    unit_tests = {p for p in shipped_rules if "tests" in load_yaml(p)}
    assert not unit_tests, f"rule unit tests loaded as rules: {sorted(unit_tests)}"


def _static_targets(config: dict[str, Any]) -> list[tuple[str, str, dict[str, str]]]:
    """(job, target, labels) of every static target of prometheus.yml's scrape configs."""
    found = []
    for job in config.get("scrape_configs") or []:
        for group in job.get("static_configs") or []:
            for target in group.get("targets") or []:
                found.append((job["job_name"], target, group.get("labels") or {}))
    return found


def test_prometheus_scrapes_the_exporter_and_alerts_the_alertmanager() -> None:
    config = load_yaml(REPO / "prometheus" / "prometheus.yml")
    exporter_targets = [
        t for _, t, _ in _static_targets(config) if endpoint(t).port == _port("exporter")
    ]
    assert exporter_targets, "prometheus.yml does not scrape the exporter's port"
    for target in exporter_targets:
        _reachable_on_host(endpoint(target).host, "exporter")
    alertmanagers = [
        target
        for am in (config.get("alerting") or {}).get("alertmanagers") or []
        for group in am.get("static_configs") or []
        for target in group.get("targets") or []
    ]
    assert alertmanagers, "prometheus.yml sends alerts nowhere"
    for target in alertmanagers:
        assert endpoint(target).port == _port("alertmanager"), target
        _reachable_on_host(endpoint(target).host, "alertmanager")


def _webhook_configs(config: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        hook
        for receiver in config.get("receivers") or []
        for hook in receiver.get("webhook_configs") or []
    ]


def test_alertmanager_reads_the_shipped_config_and_reaches_the_remediator() -> None:
    config_path = _flag("alertmanager", "--config.file")
    assert (
        _shipped("alertmanager", config_path) == (REPO / "alertmanager/alertmanager.yml").resolve()
    )
    assert is_mounted("alertmanager", _flag("alertmanager", "--storage.path"))
    config = load_yaml(REPO / "alertmanager" / "alertmanager.yml")
    hooks = [h for h in _webhook_configs(config) if endpoint(h["url"]).port == _port("remediator")]
    assert hooks, "alertmanager.yml has no webhook to the remediator's port"
    for hook in hooks:
        url = endpoint(hook["url"])
        _reachable_on_host(url.host, "remediator")
        assert url.path == "/alerts", f"the remediator takes alerts on POST /alerts, not {url.path}"
        auth = (hook.get("http_config") or {}).get("authorization") or {}
        token_file = auth.get("credentials_file")
        assert token_file, "the webhook must send the remediator's bearer token from a file"
        assert is_mounted("alertmanager", token_file), f"{token_file} is not mounted"


def test_remediator_config_matches_what_compose_mounts() -> None:
    config_path = _flag("remediator", "--config.file")
    raw = load_yaml(_shipped("remediator", config_path))
    state_dir = str(PurePosixPath(raw["state_path"]).parent)
    assert any(m.named_volume and m.target == state_dir for m in mounts("remediator")), (
        f"the remediator's state directory {state_dir} must be a persistent volume"
    )
    token_file = raw["auth"]["bearer_token_file"]
    assert is_mounted("remediator", token_file), f"{token_file} is not mounted"
    am_token = _alertmanager_token_source()
    remediator_token = next(m.source for m in mounts("remediator") if m.target == token_file)
    assert remediator_token == am_token, "Alertmanager must send the token the remediator checks"


def _alertmanager_token_source() -> str:
    config = load_yaml(REPO / "alertmanager" / "alertmanager.yml")
    for hook in _webhook_configs(config):
        auth = (hook.get("http_config") or {}).get("authorization") or {}
        if "credentials_file" in auth:
            return next(
                m.source for m in mounts("alertmanager") if m.target == auth["credentials_file"]
            )
    raise AssertionError("alertmanager.yml sends no bearer token")


def test_remediator_acts_on_the_instance_prometheus_gives_the_exporter() -> None:
    # The remediator refuses alerts for other hosts' instances: its `instances` must hold the
    # `instance` label the shipped prometheus.yml gives this host's exporter.
    config = load_yaml(REPO / "prometheus" / "prometheus.yml")
    instances = {
        labels.get("instance", target)
        for _, target, labels in _static_targets(config)
        if endpoint(target).port == _port("exporter")
    }
    raw = load_yaml(_shipped("remediator", _flag("remediator", "--config.file")))
    assert instances <= set(raw["instances"]), (instances, raw["instances"])


def _grafana_provisioning() -> Path:
    where = service("grafana")["environment"].get(
        "GF_PATHS_PROVISIONING", "/etc/grafana/provisioning"
    )
    return _shipped("grafana", where)


def test_grafana_datasource_points_at_prometheus() -> None:
    datasources = [
        source
        for path in sorted((_grafana_provisioning() / "datasources").glob("*.y*ml"))
        for source in load_yaml(path).get("datasources") or []
    ]
    prometheus = [d for d in datasources if d.get("type") == "prometheus"]
    assert prometheus, "no Prometheus datasource is provisioned"
    for source in prometheus:
        url = endpoint(source["url"])
        assert url.port == _port("prometheus"), source["url"]
        _reachable_on_host(url.host, "prometheus")


def test_grafana_dashboard_providers_find_the_shipped_dashboards() -> None:
    providers = [
        provider
        for path in sorted((_grafana_provisioning() / "dashboards").glob("*.y*ml"))
        for provider in load_yaml(path).get("providers") or []
    ]
    assert providers, "no dashboard provider is provisioned"
    for provider in providers:
        folder = _shipped("grafana", provider["options"]["path"])
        dashboards = sorted(folder.rglob("*.json"))
        assert dashboards, f"{provider['options']['path']} holds no dashboard"
        for dashboard in dashboards:
            assert "panels" in json.loads(dashboard.read_text(encoding="utf-8")), dashboard


@pytest.mark.parametrize("name", SERVICES)
def test_restart_policy_survives_reboots(name: str) -> None:
    assert service(name)["restart"] in {"unless-stopped", "always"}


def test_prometheus_can_scrape_the_remediator() -> None:
    # The remediator answers 401 without its bearer token everywhere but OPEN_PATHS.
    from remediator.app import OPEN_PATHS

    config = load_yaml(REPO / "prometheus" / "prometheus.yml")
    token_needed = False
    for job in config.get("scrape_configs") or []:
        targets = [t for g in job.get("static_configs") or [] for t in g.get("targets") or []]
        if not any(endpoint(t).port == _port("remediator") for t in targets):
            continue
        path = job.get("metrics_path", "/metrics")
        if path in OPEN_PATHS:
            continue
        token_needed = True
        token_file = (job.get("authorization") or {}).get("credentials_file")
        assert token_file, (
            f"job {job['job_name']}: the remediator wants its bearer token on {path}; "
            "give the job authorization.credentials_file"
        )
        assert is_mounted("prometheus", token_file), f"{token_file} is not mounted"
    token_mounted = any(m.target.endswith("remediator.token") for m in mounts("prometheus"))
    assert token_mounted == token_needed, "Prometheus gets the remediator's token iff it needs it"


@pytest.mark.parametrize(("name", "path"), [("exporter", "/"), ("remediator", "/-/ready")])
def test_healthchecks_probe_the_services_own_port(name: str, path: str) -> None:
    probe = " ".join(service(name)["healthcheck"]["test"])
    urls = re.findall(r"https?://[^'\"\s]+", probe)
    assert len(urls) == 1, probe
    url = endpoint(urls[0])
    assert (url.host, url.port, url.path) == ("127.0.0.1", _port(name), path)


def test_prometheus_ships_the_production_intervals() -> None:
    """docs/policies.md#production-settings; the demo and the tests render their own 1 s."""
    settings = load_yaml(REPO / "prometheus" / "prometheus.yml")["global"]
    production = {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"}
    assert settings == production
    doc = (REPO / "docs" / "policies.md").read_text()
    assert "evaluate every **1 s** (`scrape_timeout: 1s`)" in doc
    # Every rate window of the shipped rules holds at least 4 scrapes of the shipped interval.
    rules = "".join(p.read_text() for p in (REPO / "prometheus" / "rules").glob("*.yml"))
    windows = re.findall(r"(?:rate|increase)\([^\[()]*\[(\d+)s\]", rules)
    assert windows, "no rate windows found in the shipped rules"
    assert min(int(w) for w in windows) >= 4 * int(settings["scrape_interval"].rstrip("s"))
    datasources = load_yaml(_grafana_provisioning() / "datasources" / "judicator.yaml")
    [prometheus] = datasources["datasources"]
    assert prometheus["jsonData"]["timeInterval"] == settings["scrape_interval"]
