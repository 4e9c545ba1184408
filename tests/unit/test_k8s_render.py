"""`eventray k8s render`: pipeline config -> RayCluster/RayJob, valid against KubeRay, with eventray's contract.

No Ray, no Kafka, no cluster: rendered dicts are checked against the KubeRay v1 CRD schemas in
cluster/k8s/crds (shipped with the package) and the operator's rules.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from cluster.job import job_arguments
from cluster.k8s import (
    IMAGE_PROJECT_DIR,
    RAY_VERSION,
    SLOT_RESOURCE,
    RenderOptions,
    SchemaSet,
    entrypoint_module,
    find_schema_dir,
    load_schema_set,
    render_manifests,
    render_raycluster,
    render_rayjob,
    to_yaml,
    validate_documents,
    worker_bounds,
)
from cluster.k8s.cli import main
from pipelines.config.pipeline import PipelineConfig, load_config, parse_config
from pipelines.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
# fake_cluster.yaml is a Ray autoscaler config (the fake multinode cluster), not a pipeline
REPO_CONFIGS = sorted(path for path in (REPO / "configs").glob("*.yaml") if path.name != "fake_cluster.yaml")
DEMO_CONFIG = """\
name: demo
source: {type: generator, partitions: 4}
schema:
  fields: {order_id: string, customer_id: string, amount_cents: int64, event_time_ms: int64}
  event_time_field: event_time_ms
aggregate:
  key: customer_id
  window: {size_ms: 10000}
  aggregations: {orders: {fn: count}}
runtime: {source_actors: 3, aggregate_actors: 2}
"""


@pytest.fixture(scope="module")
def schemas() -> SchemaSet:
    return load_schema_set(find_schema_dir())


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A minimal project tree: one config and the pipeline module its RayJob entrypoint names."""
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "demo.yaml").write_text(DEMO_CONFIG, encoding="utf-8")
    (tmp_path / "cluster" / "examples").mkdir(parents=True)
    (tmp_path / "cluster" / "examples" / "demo.py").write_text("", encoding="utf-8")
    return tmp_path


@pytest.fixture
def demo(project: Path) -> PipelineConfig:
    return load_config(project / "configs" / "demo.yaml")


def _containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    return [container for group in groups for container in group["template"]["spec"]["containers"]]


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {entry["name"]: entry for entry in container.get("env", [])}


def test_rendered_rayjob_and_raycluster_are_valid(demo: PipelineConfig, project: Path, schemas: SchemaSet) -> None:
    documents = render_manifests(demo, RenderOptions(), "all")

    assert [d["kind"] for d in documents] == ["RayCluster", "RayJob"]
    assert validate_documents(documents, source="render", schemas=schemas, project_dir=project) == []


@pytest.mark.parametrize("config_path", REPO_CONFIGS, ids=[p.name for p in REPO_CONFIGS])
def test_every_repo_config_renders_valid_manifests(config_path: Path, schemas: SchemaSet) -> None:
    config = load_config(config_path)
    options = RenderOptions(
        config_in_image=f"{IMAGE_PROJECT_DIR}/configs/{config_path.name}", module=entrypoint_module(config, REPO)
    )

    documents = render_manifests(config, options, "all")

    assert validate_documents(documents, source=config_path.name, schemas=schemas, project_dir=REPO) == []


def test_rayjob_runs_the_pipeline_module_and_cleans_up(demo: PipelineConfig) -> None:
    job = render_rayjob(demo, RenderOptions(ttl_after_finished_s=120))
    spec = job["spec"]

    assert job["metadata"]["name"] == "eventray-demo"
    assert spec["entrypoint"] == (
        f"python -m cluster.examples.demo --config {IMAGE_PROJECT_DIR}/configs/demo.yaml --secrets environment"
    ), "the actors read the Secrets of their own pods: none travels through Ray"
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["ttlSecondsAfterFinished"] == 120
    assert yaml.safe_load(spec["runtimeEnvYAML"]) == {"env_vars": {"OTEL_SERVICE_NAME": "eventray-demo"}}
    assert spec["submitterPodTemplate"]["spec"]["restartPolicy"] == "Never"


def test_cluster_autoscales_eventray_slots_with_autoscaler_v2(demo: PipelineConfig) -> None:
    spec = render_raycluster(demo, RenderOptions(slots_per_worker=2))["spec"]
    workers = spec["workerGroupSpecs"][0]

    assert spec["rayVersion"] == RAY_VERSION
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["autoscalerOptions"]["version"] == "v2"
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    assert workers["rayStartParams"]["resources"] == '"{\\"' + SLOT_RESOURCE + '\\": 2}"'
    assert (workers["minReplicas"], workers["replicas"], workers["maxReplicas"]) == (1, 1, 3)
    for group in (spec["headGroupSpec"], workers):
        assert group["template"]["spec"]["restartPolicy"] == "Never"
        assert group["template"]["metadata"]["annotations"]["prometheus.io/port"] == "8080"


def test_every_container_sets_ray_auth_mode_and_ray_containers_get_secrets(demo: PipelineConfig) -> None:
    spec = render_rayjob(demo, RenderOptions())["spec"]
    cluster = spec["rayClusterSpec"]
    submitter = spec["submitterPodTemplate"]

    for container in _containers(cluster) + submitter["spec"]["containers"]:
        assert _env(container)["RAY_AUTH_MODE"] == {"name": "RAY_AUTH_MODE", "value": "token"}
    assert "env" not in cluster["autoscalerOptions"], "KubeRay injects the auth variables into the sidecar"
    assert submitter["metadata"]["labels"]["eventray.io/ray-client"] == "true"
    for container in _containers(cluster):
        env = _env(container)
        assert env["KAFKA_BOOTSTRAP"]["valueFrom"]["secretKeyRef"]["name"] == "eventray-kafka"
        assert env["KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "eventray-kafka"
        assert env["EVENTRAY_CHECKPOINT_URI"]["valueFrom"]["secretKeyRef"] == {
            "name": "eventray-checkpoints",
            "key": "EVENTRAY_CHECKPOINT_URI",
            "optional": False,
        }
        assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"} <= set(env)
        assert container["envFrom"] == [{"configMapRef": {"name": "eventray-telemetry", "optional": True}}]
        assert env["MALLOC_ARENA_MAX"] == {"name": "MALLOC_ARENA_MAX", "value": "2"}, "node_environment.py"
        assert any(port["containerPort"] == 8080 for port in container["ports"])


def test_both_resources_use_token_auth_from_the_eventray_secret(demo: PipelineConfig) -> None:
    cluster, job = render_manifests(demo, RenderOptions(), "all")

    expected = {"mode": "token", "secretName": "eventray-ray-auth"}
    assert cluster["spec"]["authOptions"] == expected
    assert job["spec"]["rayClusterSpec"]["authOptions"] == expected


# A model of what KubeRay v1.7 does to the containers in token mode, written from its source:
# common/pod.go SetContainerTokenAuthEnvVars adds each variable only when absent (head and worker
# containers[0], the autoscaler sidecar; rayjob_controller.go configureSubmitterContainer: the submitter),
# and mergeAutoscalerOverrides appends autoscalerOptions.env to the sidecar after that.
def _kuberay_token_env(env: list[dict[str, Any]], auth: dict[str, Any]) -> list[dict[str, Any]]:
    names = {entry["name"] for entry in env}
    injected: list[dict[str, Any]] = [] if "RAY_AUTH_MODE" in names else [{"name": "RAY_AUTH_MODE", "value": "token"}]
    if "RAY_AUTH_TOKEN" not in names:
        reference = {"name": auth.get("secretName", "<cluster name>"), "key": "auth_token"}
        injected.append({"name": "RAY_AUTH_TOKEN", "valueFrom": {"secretKeyRef": reference}})
    return env + injected


def _pods_after_kuberay(spec: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The env of every Ray-talking container of a RayJob, as KubeRay creates its pods."""
    cluster = spec["rayClusterSpec"]
    auth = cluster["authOptions"]
    envs = {
        "head": _kuberay_token_env(cluster["headGroupSpec"]["template"]["spec"]["containers"][0]["env"], auth),
        "autoscaler": _kuberay_token_env([], auth) + cluster["autoscalerOptions"].get("env", []),
        "submitter": _kuberay_token_env(spec["submitterPodTemplate"]["spec"]["containers"][0]["env"], auth),
    }
    for index, group in enumerate(cluster["workerGroupSpecs"]):
        envs[f"worker {index}"] = _kuberay_token_env(group["template"]["spec"]["containers"][0]["env"], auth)
    return envs


def test_every_ray_talking_container_ends_up_with_one_token_from_the_secret(demo: PipelineConfig) -> None:
    envs = _pods_after_kuberay(render_rayjob(demo, RenderOptions())["spec"])

    assert set(envs) == {"head", "autoscaler", "submitter", "worker 0"}
    for name, env in envs.items():
        modes = [entry for entry in env if entry["name"] == "RAY_AUTH_MODE"]
        tokens = [entry for entry in env if entry["name"] == "RAY_AUTH_TOKEN"]
        assert modes == [{"name": "RAY_AUTH_MODE", "value": "token"}], name
        assert tokens == [
            {
                "name": "RAY_AUTH_TOKEN",
                "valueFrom": {"secretKeyRef": {"name": "eventray-ray-auth", "key": "auth_token"}},
            }
        ], name


def test_cli_render_with_ray_auth_disabled_turns_auth_off_everywhere(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = project / "job.yaml"
    argv = ["render", "configs/demo.yaml", "--ray-auth", "disabled", "--output", str(output)]

    assert main([*argv, "--project-dir", str(project), "--schemas", str(find_schema_dir())]) == 0, capsys.readouterr()

    text = output.read_text(encoding="utf-8")
    spec = yaml.safe_load(text)["spec"]
    cluster = spec["rayClusterSpec"]
    others = [*spec["submitterPodTemplate"]["spec"]["containers"], {"env": cluster["autoscalerOptions"]["env"]}]
    assert "--ray-auth disabled" in text.splitlines()[0]
    assert cluster["authOptions"] == {"mode": "disabled"}
    for container in _containers(cluster) + others:
        assert _env(container)["RAY_AUTH_MODE"]["value"] == "disabled"
    assert "RAY_AUTH_TOKEN" not in text


def test_an_unknown_ray_auth_mode_is_refused(demo: PipelineConfig) -> None:
    with pytest.raises(ConfigError, match="--ray-auth must be one of token, disabled"):
        render_rayjob(demo, RenderOptions(ray_auth="none"))  # type: ignore[arg-type]


def test_worker_bounds_default_to_one_pod_per_actor(demo: PipelineConfig) -> None:
    assert worker_bounds(demo, RenderOptions()) == worker_bounds(demo, RenderOptions(min_workers=1, max_workers=5))
    assert worker_bounds(demo, RenderOptions(slots_per_worker=2)).max_replicas == 3
    stateless = demo.model_copy(update={"aggregate": None})
    assert worker_bounds(stateless, RenderOptions()).max_replicas == 3


def test_worker_bounds_reject_min_above_max(demo: PipelineConfig) -> None:
    with pytest.raises(ConfigError, match="--min-workers"):
        worker_bounds(demo, RenderOptions(min_workers=4, max_workers=2))
    with pytest.raises(ConfigError, match="--slots-per-worker"):
        worker_bounds(demo, RenderOptions(slots_per_worker=0))


def test_render_is_deterministic_and_round_trips_through_yaml(demo: PipelineConfig) -> None:
    documents = render_manifests(demo, RenderOptions(), "all")
    text = to_yaml(documents, header="a header")

    assert text == to_yaml(render_manifests(demo, RenderOptions(), "all"), header="a header")
    assert text.startswith("# a header\n")
    assert list(yaml.safe_load_all(text)) == documents


def test_too_long_pipeline_name_is_reported(project: Path, schemas: SchemaSet) -> None:
    long_name = "a" * 40
    config = load_config(project / "configs" / "demo.yaml", {"name": long_name})
    (project / "cluster" / "examples" / f"{long_name}.py").write_text("", encoding="utf-8")
    options = RenderOptions(config_in_image=f"{IMAGE_PROJECT_DIR}/configs/demo.yaml")

    problems = validate_documents([render_rayjob(config, options)], source="r", schemas=schemas, project_dir=project)

    assert [(p.path, "max 47" in p.message) for p in problems] == [("metadata.name", True)]


def test_cli_render_writes_the_command_in_a_header(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = project / "job.yaml"
    argv = ["render", "configs/demo.yaml", "--max-workers", "7", "--output", str(output)]

    assert main([*argv, "--project-dir", str(project), "--schemas", str(find_schema_dir())]) == 0

    text = output.read_text(encoding="utf-8")
    assert text.splitlines()[0] == (
        "# Generated by: eventray k8s render configs/demo.yaml --kind rayjob --max-workers 7 --output job.yaml"
    )
    job = yaml.safe_load(text)
    assert job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["maxReplicas"] == 7
    assert "wrote" in capsys.readouterr().out


def test_cli_render_refuses_an_entrypoint_module_that_does_not_exist(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Without cluster/examples/demo.py the job falls back to the generic cluster.job, which this project lacks too.
    (project / "cluster" / "examples" / "demo.py").unlink()

    code = main(["render", "configs/demo.yaml", "--project-dir", str(project), "--schemas", str(find_schema_dir())])

    assert code == 1
    assert "module cluster.job does not exist" in capsys.readouterr().out


def test_cli_render_refuses_a_config_outside_the_project(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    outside = project.parent / "elsewhere.yaml"
    outside.write_text(DEMO_CONFIG, encoding="utf-8")

    assert main(["render", str(outside), "--project-dir", str(project), "--no-validate"]) == 2
    assert "outside the project" in capsys.readouterr().err


def test_cli_render_reports_bounds_errors_with_the_flag(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["render", "configs/demo.yaml", "--min-workers", "3", "--max-workers", "2", "--no-validate"]

    assert main([*argv, "--project-dir", str(project)]) == 2
    assert "--min-workers (3) is greater than --max-workers (2)" in capsys.readouterr().err


def test_worker_bounds_follow_the_autoscaling_bounds() -> None:
    config = load_config(REPO / "configs" / "autoscale_demo.yaml")  # sources 1..4, aggregates 1..3

    bounds = worker_bounds(config, RenderOptions(slots_per_worker=2))

    assert (bounds.min_replicas, bounds.max_replicas) == (1, 4), "ceil(2 / 2) .. ceil(7 / 2) pods"


def test_the_job_entry_point_passes_where_secrets_are_read_on_to_eventray_run() -> None:
    assert job_arguments(["--config", "c.yaml", "--secrets", "environment"]) == [
        "run", "c.yaml", "--quiet", "--set", "runtime.secrets=environment",
    ]  # fmt: skip
    assert job_arguments(["--config", "c.yaml"]) == ["run", "c.yaml", "--quiet"]
    driver = render_rayjob(load_config(REPO / "configs" / "orders.yaml"), RenderOptions(secrets="driver"))
    assert driver["spec"]["entrypoint"].endswith("--secrets driver")


def test_worker_bounds_count_the_actors_of_every_keyed_stage() -> None:
    config = load_config(REPO / "configs" / "orders_two_stages.yaml")  # 2 sources, 2 actors in each of 2 stages
    assert worker_bounds(config, RenderOptions()).max_replicas == 6


def test_worker_bounds_count_each_stages_own_size() -> None:
    data = load_config(REPO / "configs" / "orders_two_stages.yaml").model_dump(mode="json", by_alias=True)
    data["stages"][0]["actors"], data["stages"][1]["actors"] = 1, 4  # 2 sources + 1 + 4
    assert worker_bounds(parse_config(data), RenderOptions()).max_replicas == 7
