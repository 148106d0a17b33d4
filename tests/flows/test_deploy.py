"""deploy/: the files parse and say what they should; `prefect deploy --all` works against a real
local `prefect server start`; a worker executes a deployed run; a failed GPU child fails its
parent; ingest runs its tasks on a local Dask cluster.

Docker and Kubernetes cannot run here (no engine): their files are parsed and checked, the work
pool templates are validated by Prefect's own schema and rendered with the deployments' values.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
PREFECT = str(Path(sys.executable).with_name("prefect"))
PREFECT_FILES = ("prefect.yaml", "prefect.docker.yaml", "prefect.kubernetes.yaml")
POOLS = {
    "prefect.yaml": {"process": "process", "gpu": "process"},
    "prefect.docker.yaml": {"docker-cpu": "docker", "docker-gpu": "docker"},
    "prefect.kubernetes.yaml": {"kubernetes": "kubernetes", "kubernetes-gpu": "kubernetes"},
}
GPU_POOLS = {"gpu", "docker-gpu", "kubernetes-gpu"}


def _load(name: str) -> dict:
    return yaml.safe_load((DEPLOY / name).read_text())


def _flow_names(path: Path) -> dict[str, str]:
    """function name -> flow name, read from the @flow decorators without importing."""
    names = {}
    for node in ast.parse(path.read_text()).body:
        if not isinstance(node, ast.FunctionDef):
            continue
        for deco in node.decorator_list:
            call = deco if isinstance(deco, ast.Call) else None
            func = call.func if call else deco
            if isinstance(func, ast.Name) and func.id == "flow":
                name = node.name
                for kw in call.keywords if call else []:
                    if kw.arg == "name" and isinstance(kw.value, ast.Constant):
                        name = kw.value.value
                names[node.name] = name
    return names


# -- static checks: every file parses and is consistent --------------------------------------------

@pytest.mark.parametrize("name", PREFECT_FILES)
def test_prefect_files_name_real_flows_pools_and_limits(name):
    config = _load(name)
    deployments = config["deployments"]
    seen = set()
    for dep in deployments:
        path, function = dep["entrypoint"].split(":")
        flows_in_file = _flow_names(REPO / path)
        assert function in flows_in_file, f"{dep['entrypoint']} is not a flow"
        full_name = f"{flows_in_file[function]}/{dep['name']}"
        assert full_name not in seen, f"duplicate deployment {full_name}"
        seen.add(full_name)
        pool = dep["work_pool"]["name"]
        assert pool in POOLS[name], f"{full_name} uses unknown pool {pool}"
        if function in ("train", "train_stage"):
            assert pool in GPU_POOLS and dep.get("concurrency_limit") == 1, full_name
        params = dep.get("parameters", {})
        assert set(params) <= {"params"}, f"{full_name}: flows take one 'params' model"
    refresh = [d for d in deployments if d["entrypoint"].endswith(":refresh")]
    assert len(refresh) == 1 and refresh[0]["schedules"][0]["cron"] == "0 4 * * 1"
    assert {d["entrypoint"].split(":")[1] for d in deployments} >= {
        "ingest", "summarize", "build_dataset", "train", "evaluate", "pipeline", "refresh", "rebuild", "train_stage"}
    # The pipeline deployments hand training to the GPU pool's train-stage deployment.
    for dep in deployments:
        if dep["entrypoint"].endswith((":pipeline", ":refresh", ":rebuild")):
            target = dep["parameters"]["params"]["train_deployment"]
            assert target.split("/")[1] in GPU_POOLS and f"train-stage/{target.split('/')[1]}" in seen


def _defaults(template: dict) -> dict:
    return {k: v["default"] for k, v in template["variables"]["properties"].items() if "default" in v}


@pytest.mark.parametrize("path,pool_type", [
    ("kubernetes/base-job-template-gpu.json", "kubernetes"),
    ("kubernetes/base-job-template-cpu.json", "kubernetes"),
    ("docker/base-job-template-gpu.json", "docker"),
])
def test_work_pool_templates_validate_and_render(path, pool_type):
    from prefect.server.schemas.actions import WorkPoolCreate
    from prefect.utilities.templating import apply_values

    template = json.loads((DEPLOY / path).read_text())
    WorkPoolCreate(name="check", type=pool_type, base_job_template=template)  # Prefect's own validation
    gpu = "gpu" in path
    deployments = _load("prefect.kubernetes.yaml" if pool_type == "kubernetes" else "prefect.docker.yaml")
    train = next(d for d in deployments["deployments"] if d["entrypoint"].endswith(":train_stage"))
    values = {**_defaults(template), **(train["work_pool"]["job_variables"] if gpu else {})}
    rendered = apply_values(template["job_configuration"], values)
    if pool_type == "kubernetes":
        pod = rendered["job_manifest"]["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert container["volumeMounts"][0]["mountPath"] == "/data"
        # The loader's workers hand batches over in shared memory: a pod's default is 64 MiB.
        shm = next(m["name"] for m in container["volumeMounts"] if m["mountPath"] == "/dev/shm")
        assert next(v for v in pod["volumes"] if v["name"] == shm)["emptyDir"]["medium"] == "Memory"
        if gpu:
            assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
        else:
            assert "nvidia.com/gpu" not in container["resources"]["limits"]
    else:
        request = rendered["container_create_kwargs"]["device_requests"][0]
        assert request["capabilities"] == [["gpu"]] and request["count"] == -1
        import docker.types

        docker.types.DeviceRequest(**request)  # what docker-py builds from it


def test_production_compose_stack():
    stack = _load("compose.yaml")
    services = stack["services"]
    assert {"postgres", "prefect-server", "cpu-worker", "gpu-worker", "vllm"} <= set(services)
    server_env = services["prefect-server"]["environment"]
    assert server_env["PREFECT_API_DATABASE_CONNECTION_URL"].startswith("postgresql+asyncpg://")
    assert services["prefect-server"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    gpu_devices = services["gpu-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert gpu_devices[0]["capabilities"] == ["gpu"]
    assert "--pool" in services["gpu-worker"]["command"] and "gpu" in services["gpu-worker"]["command"]
    assert "process" in services["cpu-worker"]["command"]
    assert any(arg.startswith("--served-model-name") for arg in services["vllm"]["command"])
    assert services["bootstrap"]["build"]["dockerfile"] == "deploy/Dockerfile"
    # Both workers see the same data volume, so the GPU run's result reaches the pipeline.
    assert services["cpu-worker"]["volumes"] == services["gpu-worker"]["volumes"] == ["data:/data"]


def test_vllm_server_manifests():
    compose = _load("vllm/compose.yaml")["services"]["vllm"]
    assert compose["image"].startswith("vllm/vllm-openai")
    docs = list(yaml.safe_load_all((DEPLOY / "kubernetes" / "vllm.yaml").read_text()))
    kinds = {d["kind"]: d for d in docs}
    assert {"Deployment", "Service", "PersistentVolumeClaim"} <= set(kinds)
    container = kinds["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert kinds["Service"]["spec"]["ports"][0]["port"] == 8000
    worker_docs = list(yaml.safe_load_all((DEPLOY / "kubernetes" / "worker.yaml").read_text()))
    pools = [d["spec"]["template"]["spec"]["containers"][0]["args"] for d in worker_docs if d["kind"] == "Deployment"]
    assert {args[args.index("--pool") + 1] for args in pools} == {"kubernetes", "kubernetes-gpu"}


def test_dockerfile_has_cpu_and_cuda_variants():
    text = (DEPLOY / "Dockerfile").read_text()
    assert "FROM python:3.11-slim-bookworm AS base-cpu" in text
    assert "AS base-cuda" in text and "FROM base-${VARIANT}" in text
    copied = {line.split()[1] for line in text.splitlines() if line.startswith("COPY ")}
    assert {"flows", "tasks", "schemas", "storage", "pyproject.toml"} <= copied


# -- a real server: deploy, a worker runs a deployed flow, a failed GPU child fails its parent -----

def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _clean_env(**extra: str) -> dict[str, str]:
    """This process's environment minus the test harness's Prefect settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_LOGGING_LEVEL="WARNING",
               PREFECT_WORKER_QUERY_SECONDS="1", PREFECT_WORKER_PREFETCH_SECONDS="5",
               HUBBLECLIP_HOME=str(REPO), **extra)
    return env


def _prefect(env: dict[str, str], *args: str, timeout: float = 120) -> str:
    done = subprocess.run([PREFECT, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"prefect {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@contextlib.contextmanager
def _background(env: dict[str, str], *args: str, log: Path) -> Iterator[subprocess.Popen]:
    with log.open("w") as out:
        proc = subprocess.Popen([PREFECT, *args], env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        # Workers ignore SIGTERM while idle (prefect-notes.md 5.5): SIGINT, then kill by pid.
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory) -> Iterator[dict[str, str]]:
    home = tmp_path_factory.mktemp("prefect-home")
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = _clean_env(PREFECT_HOME=str(home), PREFECT_API_URL=api)
    with _background(env, "server", "start", "--host", "127.0.0.1", "--port", str(port),
                     log=home / "server.log"):
        deadline = time.monotonic() + 90
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{api}/health", timeout=2).json() is True:
                    break
            assert time.monotonic() < deadline, (home / "server.log").read_text()[-3000:]
            time.sleep(0.5)
        yield env


def _flow_run(env: dict[str, str], run_id: str) -> dict:
    return httpx.get(f"{env['PREFECT_API_URL']}/flow_runs/{run_id}", timeout=10).json()


def _wait_final(env: dict[str, str], run_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        run = _flow_run(env, run_id)
        if run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            return run
        assert time.monotonic() < deadline, f"flow run still {run['state']['type']}"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def deployed(prefect_server) -> dict[str, str]:
    """The process and GPU pools (the GPU pool simulated by a second process pool), then every
    deployment of deploy/prefect.yaml, as deploy/bootstrap.sh does."""
    env = prefect_server
    for pool in ("process", "gpu"):
        _prefect(env, "work-pool", "create", pool, "--type", "process", "--overwrite")
    _prefect(env, "work-pool", "set-concurrency-limit", "gpu", "1")
    _prefect(env, "--no-prompt", "deploy", "--all", "--prefect-file", "deploy/prefect.yaml", timeout=240)
    return env


def test_deploy_all_and_a_worker_runs_a_deployment(deployed, tmp_path):
    env = deployed
    api = env["PREFECT_API_URL"]
    deployments = httpx.post(f"{api}/deployments/filter", json={}, timeout=10).json()
    flows = {f["id"]: f["name"] for f in httpx.post(f"{api}/flows/filter", json={}, timeout=10).json()}
    names = {f"{flows[d['flow_id']]}/{d['name']}" for d in deployments}
    assert {"pipeline/process", "refresh/weekly", "rebuild/process", "train-stage/gpu", "train/gpu",
            "ingest/process", "summarize/process", "build_dataset/process", "evaluate/process"} <= names
    refresh = next(d for d in deployments if flows[d["flow_id"]] == "refresh")
    assert refresh["schedules"][0]["schedule"]["cron"] == "0 4 * * 1"
    # The UI form: the deployment's schema is the params model.
    schema = refresh["parameter_openapi_schema"]
    assert schema["properties"]["params"]["$ref"].endswith("/RefreshParams")
    train = next(d for d in deployments if flows[d["flow_id"]] == "train-stage")
    assert train["global_concurrency_limit"]["limit"] == 1 and train["work_pool_name"] == "gpu"
    pool = httpx.get(f"{api}/work_pools/gpu", timeout=10).json()
    assert pool["concurrency_limit"] == 1

    # A worker executes one deployed run: the cheap `status` flow over an empty data root.
    status = next(d for d in deployments if flows[d["flow_id"]] == "status")
    run = httpx.post(f"{api}/deployments/{status['id']}/create_flow_run",
                     json={"parameters": {"params": {"data": str(tmp_path)}}}, timeout=10).json()
    _prefect(env, "worker", "start", "--pool", "process", "--run-once", timeout=180)
    final = _wait_final(env, run["id"], timeout=30)
    assert final["state"]["type"] == "COMPLETED", final["state"]


PARENT = """
import sys
from prefect import flow
from flows.stages import train_via_deployment
from schemas.train import TrainParams

@flow(name="parent")
def parent(data: str):
    return train_via_deployment("train-stage/gpu", TrainParams(data=data, dataset_version="missing-version"),
                                timeout_s=150)

state = parent(sys.argv[1], return_state=True)
print("PARENT", state.type.value)
"""


def test_failed_gpu_child_fails_the_parent(deployed, tmp_path):
    env = deployed
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    with _background(env, "worker", "start", "--pool", "gpu", "--limit", "1", log=tmp_path / "worker.log"):
        done = subprocess.run([sys.executable, str(script), str(tmp_path / "data")], env=env, cwd=REPO,
                              capture_output=True, text=True, timeout=200)
    assert "PARENT FAILED" in done.stdout, done.stdout[-2000:] + done.stderr[-3000:]
    assert "ended Failed" in done.stderr or "ended FAILED" in done.stderr, done.stderr[-3000:]


# -- scale-out: ingest's tasks on a local Dask cluster ---------------------------------------------

def test_ingest_runs_on_a_local_dask_cluster(archive, tmp_path):
    """The pipeline's `task_runner='dask'` path: ingest's mapped tasks execute on Dask workers."""
    from distributed import Client, LocalCluster, get_task_stream

    from flows.pipeline import pipeline
    from schemas.pipeline import PipelineParams

    # memory_limit=0: no spill directory named `storage` on the worker's sys.path (see flows.pipeline._dask).
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None,
                      memory_limit=0) as cluster, \
            Client(cluster) as client, get_task_stream(client) as stream:
        params = PipelineParams.model_validate({
            "data": str(tmp_path / "data"), "until": "ingest", "task_runner": "dask",
            "dask_address": cluster.scheduler_address,
            "ingest": {"mast_url": archive.url, "stsci_url": archive.url, "max_proposals": 3,
                       "max_images_per_proposal": 2},
        })
        result = pipeline(params)
    ingested = result.stages["ingest"]
    assert ingested.stats.get("previews_ok", 0) > 0
    ran_on_dask = {record["key"].rsplit("-", 1)[0] for record in stream.data}
    assert {"query_window", "fetch_proposals", "download_previews"} <= ran_on_dask, ran_on_dask
