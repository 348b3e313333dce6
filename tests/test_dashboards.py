"""dashboards/: the Grafana dashboard names only metrics that exist (w2sweep's own, or Ray's), and a real
Prometheus scraping a real local Ray cluster that runs a sweep sees every w2sweep metric it names."""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import ray
import yaml

from conftest import REPO, broken_model_dir, free_port, tiny_config
from test_jobs import RayHead
from w2sweep.telemetry import EXPORTED

DASHBOARDS = REPO / "dashboards"
HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")


def _dashboard() -> dict:
    return json.loads((DASHBOARDS / "w2sweep.json").read_text())


def _exprs(dashboard: dict) -> list[str]:
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return exprs


def test_every_dashboard_query_names_its_metrics_with_a_selector():
    """So that `_metric_names` finds every metric: no bare metric name in a query."""
    for e in _exprs(_dashboard()):
        if e.startswith("label_values("):
            continue
        stripped = re.sub(r"\{[^}]*\}", "", METRIC.sub("", e))  # drop metric{...}
        stripped = re.sub(r"\b(sum|avg|max|min|count|rate|histogram_quantile|by|le|max_over_time)\b", "", stripped)
        stripped = re.sub(r"\([^()]*\)", "", re.sub(r"\[[^\]]*\]", "", stripped))
        leftover = re.findall(r"[A-Za-z_][A-Za-z0-9_]*", re.sub(r"\$\w+", "", stripped))
        assert not leftover, f"{e!r}: bare names {leftover}"


# A metric in a query: a name followed by its label selector (every query here writes one, `{}` if empty).
METRIC = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)\{")


def _metric_names(exprs: list[str]) -> set[str]:
    names = {m for e in exprs for m in METRIC.findall(e)}
    # label_values(metric, label) in the template variables
    names |= {m for e in exprs for m in re.findall(r"label_values\((\w+)", e)}
    return names


def _w2sweep_series() -> set[str]:
    """Every series name w2sweep exports, histograms expanded."""
    names = set()
    for name, what in EXPORTED.items():
        names |= {name + s for s in HISTOGRAM_SERIES} if what.startswith("histogram") else {name}
    return names


def _rays_known_metrics() -> set[str]:
    """The metric names Ray's own Grafana dashboards (shipped in the installed ray) query."""
    panels = Path(ray.__file__).parent / "dashboard" / "modules" / "metrics" / "dashboards"
    return {m for f in panels.glob("*_panels.py") for m in METRIC.findall(f.read_text())}


def test_dashboard_json_is_valid_and_names_only_known_metrics():
    dashboard = _dashboard()
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert rows == ["Sweep progress", "Throughput and durations", "GPU utilisation", "Cost"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for p in dashboard["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        if p["type"] != "row":
            assert p["targets"] and all(t["expr"] for t in p["targets"]), p["title"]
            assert p["datasource"]["uid"] == "${datasource}", p["title"]

    used = _metric_names(_exprs(dashboard))
    ours = {m for m in used if m.startswith("ray_w2sweep_")}
    unknown = ours - _w2sweep_series()
    assert not unknown, f"the dashboard names w2sweep metrics nobody emits: {sorted(unknown)}"
    theirs = used - ours
    assert "ray_node_gpus_utilization" in theirs
    unknown = theirs - _rays_known_metrics()
    assert not unknown, f"the dashboard names Ray metrics Ray's own dashboards do not know: {sorted(unknown)}"
    # Every metric the sweep emits is on the dashboard.
    assert {m for m in EXPORTED} <= {re.sub(r"_(bucket|sum|count)$", "", m) for m in ours}


def test_dashboard_expressions_and_prometheus_config_pass_promtool(tmp_path, prometheus):
    """Every panel query is valid PromQL once Grafana's variables are filled in."""
    promtool = str(Path(prometheus).with_name("promtool"))
    exprs = [t["expr"] for p in _dashboard()["panels"] for t in p.get("targets", [])]
    filled = [e.replace("$__rate_interval", "1m").replace("$gpu_hour_price", "1.21")
              .replace('"$instance"', '".*"').replace('"$sweep"', '".*"').replace('"$dataset"', '".*"')
              .replace('"$student"', '".*"').replace('"$method"', '".*"') for e in exprs]
    assert not [e for e in filled if "$" in e]
    rules = {"groups": [{"name": "w2sweep", "rules": [{"record": f"w2sweep:panel_{i}", "expr": e}
                                                       for i, e in enumerate(filled)]}]}
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
    done = subprocess.run([promtool, "check", "rules", str(tmp_path / "rules.yml")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    done = subprocess.run([promtool, "check", "config", str(DASHBOARDS / "prometheus.yml")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    for path in (DASHBOARDS / "provisioning").rglob("*.yml"):
        assert yaml.safe_load(path.read_text())["apiVersion"] == 1, path


# --- a real Prometheus against a real Ray cluster running a sweep ---------------------------------

@pytest.fixture(scope="session")
def prometheus() -> str:
    """The `prometheus` binary; installed from Debian's package when absent (must succeed in CI)."""
    path = shutil.which("prometheus")
    if path is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "prometheus"],
                       env=env, capture_output=True, timeout=900)
        path = shutil.which("prometheus")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("prometheus is not installed and `apt-get install prometheus` did not install it")
        pytest.skip("prometheus is not installed (apt-get install prometheus)")
    return path


class Prometheus:
    """Prometheus on 127.0.0.1 with dashboards/prometheus.yml, pointed at one Ray head's discovery file."""

    def __init__(self, binary: str, head: RayHead):
        self.dir = Path(tempfile.mkdtemp(prefix="w2prom"))
        config = yaml.safe_load((DASHBOARDS / "prometheus.yml").read_text())
        config["global"]["scrape_interval"] = "1s"
        (job,) = config["scrape_configs"]
        job["file_sd_configs"][0]["files"] = [str(Path(head.temp_dir) / "prom_metrics_service_discovery.json")]
        # The file is re-read on this timer only (see dashboards/prometheus.yml): a Prometheus that read
        # it before the head had listed its own node would otherwise never scrape that node.
        job["file_sd_configs"][0]["refresh_interval"] = "1s"
        (self.dir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = open(self.dir / "prometheus.log", "w")
        self.process = subprocess.Popen(
            [binary, f"--config.file={self.dir / 'prometheus.yml'}", f"--storage.tsdb.path={self.dir / 'data'}",
             f"--web.listen-address={self.url.removeprefix('http://')}"],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not self._ready():
            assert self.process.poll() is None, (self.dir / "prometheus.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "Prometheus did not become ready in 60 s"
            time.sleep(0.5)

    def _ready(self) -> bool:
        try:
            return urllib.request.urlopen(f"{self.url}/-/ready", timeout=2).status == 200
        except OSError:
            return False

    def api(self, path: str, **params) -> dict:
        query = urllib.parse.urlencode(params, doseq=True)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as r:
            body = json.loads(r.read())
        assert body["status"] == "success", body
        return body["data"]

    def names(self, prefix: str) -> set[str]:
        """Metric names with at least one sample stored, ever (not only those still being scraped)."""
        series = self.api("series", **{"match[]": f'{{__name__=~"{prefix}.*"}}', "start": "0"})
        return {s["__name__"] for s in series}

    def value(self, expr: str) -> float | None:
        result = self.api("query", query=expr)["result"]
        return float(result[0]["value"][1]) if result else None

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def swept(prometheus, tmp_path_factory):
    """A Ray head with a fake GPU, Prometheus scraping it, and a 2-cell sweep run on it by a driver
    that alone holds the storage credentials: one cell finishes, one fails (its student's weights file
    is not a safetensors file: the directory looks complete to `validate`, so the failure comes at run
    time). Yields (head, prometheus, storage path, secret)."""
    head = RayHead()
    prom = Prometheus(prometheus, head)
    try:
        tmp = tmp_path_factory.mktemp("swept")
        broken_model_dir(tmp / "broken-model")
        storage = tmp / "store"
        config = tiny_config(str(storage), budgets=[4], spending_fractions=[0.5], max_failures=0,
                             resources={"cpu": 1, "gpu": 0.5},
                             students=[dict(model="tiny-bert", name="tiny-student", epochs=2, max_length=32),
                                       dict(model=str(tmp / "broken-model"), name="broken")])
        (tmp / "sweep.yaml").write_text(yaml.safe_dump(config))
        secret = "w2sweep-test-secret-" + os.urandom(6).hex()
        env = head.client_env(RAY_ADDRESS=head.gcs_address, AWS_ACCESS_KEY_ID="w2sweep-test-key",
                              AWS_SECRET_ACCESS_KEY=secret)
        run = subprocess.run([sys.executable, str(REPO / "jobs" / "sweep.py"), str(tmp / "sweep.yaml")], env=env,
                             cwd=tmp, capture_output=True, text=True, timeout=600)
        assert run.returncode == 1, run.stdout[-2000:] + run.stderr[-3000:]  # 1: a cell failed
        assert "1 cells finished, 0 already done, 1 failed (of 2)" in run.stdout
        assert secret not in run.stdout + run.stderr
        # Counters and histograms outlive the driver; wait until Prometheus has scraped their final
        # values (the agent exports them in batches: one can arrive a scrape after another).
        wanted = {m for m in _metric_names(_exprs(_dashboard())) if m.startswith("ray_w2sweep_")}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (
                prom.value("sum(ray_w2sweep_cells_failed_total)") == 1
                and prom.value("sum(ray_w2sweep_cells_done_total)") == 1 and wanted <= prom.names("ray_w2sweep_")):
            time.sleep(1)
        yield head, prom, storage, secret
    finally:
        prom.stop()
        head.stop()


@pytest.mark.ray
def test_prometheus_scraping_ray_sees_every_w2sweep_metric_the_dashboard_names(swept):
    _, prom, _, _ = swept
    wanted = {m for m in _metric_names(_exprs(_dashboard())) if m.startswith("ray_w2sweep_")}
    present = prom.names("ray_w2sweep_")
    assert wanted <= present, f"named in the dashboard but never scraped: {sorted(wanted - present)}"

    # The values are the sweep's: one cell done, one failed, at budget 4 and f = 0.5.
    ok, broken = 'student="tiny-student"', 'student="broken"'
    assert prom.value(f"sum(ray_w2sweep_cells_done_total{{{ok}}})") == 1
    assert prom.value(f"sum(ray_w2sweep_cells_failed_total{{{broken}}})") == 1
    assert prom.value(f"sum(ray_w2sweep_cells_failed_total{{{ok}}})") == 0
    assert prom.value("max_over_time(sum(ray_w2sweep_grid_cells)[15m:1s])") == 2
    assert prom.value(f"sum(ray_w2sweep_labels_total{{{ok},source=\"oracle\"}})") == 2  # floor(0.5 * 4 / 1)
    assert prom.value(f"sum(ray_w2sweep_labels_total{{{ok},source=\"weak\"}})") == 20  # (4 - 2) / 0.1
    assert prom.value(f"sum(ray_w2sweep_label_cost_total{{{ok}}})") == pytest.approx(4)
    assert prom.value(f"sum(ray_w2sweep_cell_duration_seconds_count{{{ok}}})") == 1
    # Half a (declared) GPU per cell: GPU-seconds are half the cell's wall time.
    wall = json.loads(next((swept[2] / "tiny" / "cells").glob("*.json")).read_text())["wall_seconds"]
    assert prom.value(f"sum(ray_w2sweep_gpu_seconds_total{{{ok}}})") == pytest.approx(0.5 * wall, rel=0.05)
    # Ray's own node metrics come through the same discovery file.
    assert "ray_node_cpu_utilization" in prom.names("ray_node_")


@pytest.mark.ray
def test_drivers_storage_secret_reaches_no_log_and_no_stored_object(swept):
    """The credentials a driver forwards to its workers stay out of Ray's log files and of every
    object the sweep wrote (results, failures, Tune's experiment state)."""
    head, _, storage, secret = swept
    assert list(storage.rglob("*.json"))  # there is something to search
    assert secret not in head.ray_logs()
    for path in storage.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
