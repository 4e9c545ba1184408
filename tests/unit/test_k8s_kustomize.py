"""The project's `kustomize build`: each k8s/ overlay renders as expected, and as the real kustomize renders it.

The real kustomize is `kubectl kustomize` (kustomize v5 inside kubectl) where kubectl is installed; the
comparison is skipped elsewhere. The renderer's features are also tested on small kustomizations in a
temporary directory, including the cases it must refuse.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from cluster.k8s import build_kustomization, find_kustomization_roots
from pipelines.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
ROOTS = find_kustomization_roots(K8S)
KUBECTL = shutil.which("kubectl")
Key = tuple[str, str, str, str]


def _key(document: dict[str, Any]) -> Key:
    metadata = document["metadata"]
    return document["apiVersion"], document["kind"], metadata.get("namespace", ""), metadata["name"]


def _by_key(documents: list[dict[str, Any]]) -> dict[Key, dict[str, Any]]:
    return {_key(document): document for document in documents}


def _write(root: Path, files: dict[str, Any]) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        text = content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False)
        path.write_text(text, encoding="utf-8")
    return root


@pytest.mark.skipif(KUBECTL is None, reason="kubectl (with kustomize built in) is not installed")
@pytest.mark.parametrize("root", ROOTS, ids=[str(r.relative_to(REPO)) for r in ROOTS])
def test_overlays_render_as_kubectl_kustomize_renders_them(root: Path) -> None:
    assert KUBECTL is not None
    result = subprocess.run([KUBECTL, "kustomize", str(root)], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr

    expected = _by_key([doc for doc in yaml.safe_load_all(result.stdout) if doc])
    actual = _by_key(build_kustomization(root))

    assert sorted(actual) == sorted(expected)
    for key, document in actual.items():
        assert document == expected[key], key


def _job(root: Path) -> dict[str, Any]:
    (job,) = [d for d in build_kustomization(root) if d["kind"] == "RayJob"]
    return job


def test_dev_overlay_is_laptop_sized() -> None:
    documents = build_kustomization(K8S / "overlays" / "dev")
    job = _job(K8S / "overlays" / "dev")
    workers = job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]

    assert {d["metadata"]["namespace"] for d in documents} == {"eventray-dev"}
    assert {d["kind"] for d in documents} == {"RayJob", "RayCluster", "ConfigMap", "NetworkPolicy"}
    assert workers["maxReplicas"] == 2
    assert workers["rayStartParams"]["resources"] == '"{\\"eventray_slot\\": 2}"'
    assert workers["template"]["spec"]["containers"][0]["image"] == "eventray:dev"
    assert job["spec"]["ttlSecondsAfterFinished"] == 60
    assert job["spec"]["rayClusterSpec"]["autoscalerOptions"]["idleTimeoutSeconds"] == 30


def test_prod_overlay_uses_the_registry_image_labels_and_monitoring() -> None:
    documents = _by_key(build_kustomization(K8S / "overlays" / "prod"))
    job = _job(K8S / "overlays" / "prod")
    telemetry = documents["v1", "ConfigMap", "eventray", "eventray-telemetry"]
    dashboard = documents["v1", "ConfigMap", "eventray", "eventray-grafana-dashboard"]
    cluster = job["spec"]["rayClusterSpec"]

    assert ("monitoring.coreos.com/v1", "PodMonitor", "eventray", "eventray-ray") in documents
    policy = documents["networking.k8s.io/v1", "NetworkPolicy", "eventray", "eventray-ray-head"]
    assert policy["spec"]["podSelector"]["matchLabels"] == {
        "ray.io/node-type": "head",
        "app.kubernetes.io/part-of": "eventray",
    }, "the overlay's labels must not reach the selector (includeSelectors is off)"
    assert all(d["metadata"]["labels"]["app.kubernetes.io/instance"] == "eventray-prod" for d in documents.values())
    assert cluster["headGroupSpec"]["template"]["spec"]["containers"][0]["image"] == (
        "registry.example.com/eventray:0.1.0"
    )
    assert job["spec"]["submitterPodTemplate"]["spec"]["containers"][0]["image"].startswith("registry.example.com/")
    assert cluster["workerGroupSpecs"][0]["maxReplicas"] == 10
    assert telemetry["data"]["OTEL_TRACES_SAMPLER_ARG"] == "0.01"
    assert telemetry["data"]["OTEL_EXPORTER_OTLP_PROTOCOL"] == "grpc"
    assert "eventray.json" in dashboard["data"]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"


CONFIGMAP = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"a": "1", "b": "2"}}
KUSTOMIZATION = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization"}


def test_resources_namespace_labels_and_images(tmp_path: Path) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "eventray:1@sha256:abc"}, {"name": "d", "image": "other"}]},
    }
    _write(tmp_path, {"base/pod.yaml": pod, "base/kustomization.yaml": {**KUSTOMIZATION, "resources": ["pod.yaml"]}})
    overlay = {
        **KUSTOMIZATION,
        "resources": ["../base"],
        "namespace": "ns",
        "labels": [{"pairs": {"team": "data"}}],
        "images": [{"name": "eventray", "newName": "reg/eventray", "newTag": "2"}],
    }
    _write(tmp_path, {"overlay/kustomization.yaml": overlay})

    (built,) = build_kustomization(tmp_path / "overlay")

    assert built["metadata"] == {"name": "p", "namespace": "ns", "labels": {"team": "data"}}
    assert [c["image"] for c in built["spec"]["containers"]] == ["reg/eventray:2", "other"]


def test_strategic_merge_merges_maps_and_deletes_null_keys(tmp_path: Path) -> None:
    patch = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"a": None, "c": "3"}}
    files = {"cm.yaml": CONFIGMAP, "p.yaml": patch}
    _write(
        tmp_path,
        {**files, "kustomization.yaml": {**KUSTOMIZATION, "resources": ["cm.yaml"], "patches": [{"path": "p.yaml"}]}},
    )

    (built,) = build_kustomization(tmp_path)

    assert built["data"] == {"b": "2", "c": "3"}


def test_json6902_operations(tmp_path: Path) -> None:
    operations = [
        {"op": "replace", "path": "/data/a", "value": "9"},
        {"op": "remove", "path": "/data/b"},
        {"op": "add", "path": "/data/c~1d", "value": "x"},
        {"op": "test", "path": "/data/a", "value": "9"},
    ]
    entry = {"path": "ops.yaml", "target": {"kind": "ConfigMap", "name": "sett.*"}}
    kustomization = {**KUSTOMIZATION, "resources": ["cm.yaml"], "patches": [entry]}
    _write(tmp_path, {"cm.yaml": CONFIGMAP, "ops.yaml": operations, "kustomization.yaml": kustomization})

    (built,) = build_kustomization(tmp_path)

    assert built["data"] == {"a": "9", "c/d": "x"}


def test_configmap_generator_creates_and_merges(tmp_path: Path) -> None:
    base = {
        **KUSTOMIZATION,
        "configMapGenerator": [{"name": "g", "literals": ["A=1", 'B="two"'], "files": ["conf.json"]}],
        "generatorOptions": {"disableNameSuffixHash": True, "labels": {"x": "y"}},
    }
    merge = {"name": "g", "behavior": "merge", "literals": ["A=3"], "options": {"disableNameSuffixHash": True}}
    overlay = {**KUSTOMIZATION, "resources": ["../base"], "configMapGenerator": [merge]}
    files = {"base/conf.json": "{}\n", "base/kustomization.yaml": base, "overlay/kustomization.yaml": overlay}
    _write(tmp_path, files)

    (built,) = build_kustomization(tmp_path / "overlay")

    assert built["metadata"] == {"name": "g", "labels": {"x": "y"}}
    assert built["data"] == {"A": "3", "B": "two", "conf.json": "{}\n"}


REFUSED: dict[str, tuple[dict[str, Any], dict[str, Any], str]] = {
    "unsupported field": ({"namePrefix": "dev-", "resources": ["cm.yaml"]}, {}, "not supported"),
    "hashed generator name": (
        {"configMapGenerator": [{"name": "g", "literals": ["A=1"]}]},
        {},
        "disableNameSuffixHash",
    ),
    "strategic merge of a list": (
        {"resources": ["cm.yaml"], "patches": [{"path": "p.yaml"}]},
        {"p.yaml": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": ["x"]}},
        "JSON 6902",
    ),
    "patch matching nothing": (
        {"resources": ["cm.yaml"], "patches": [{"path": "p.yaml", "target": {"kind": "Secret"}}]},
        {"p.yaml": [{"op": "remove", "path": "/data/a"}]},
        "matches no resource",
    ),
    "JSON 6902 path that does not exist": (
        {"resources": ["cm.yaml"], "patches": [{"path": "p.yaml", "target": {"kind": "ConfigMap"}}]},
        {"p.yaml": [{"op": "replace", "path": "/spec/replicas", "value": 1}]},
        "does not exist",
    ),
    "failed JSON 6902 test": (
        {"resources": ["cm.yaml"], "patches": [{"path": "p.yaml", "target": {"kind": "ConfigMap"}}]},
        {"p.yaml": [{"op": "test", "path": "/data/a", "value": "no"}]},
        "test of /data/a failed",
    ),
    "duplicate resource": ({"resources": ["cm.yaml", "copy.yaml"]}, {"copy.yaml": CONFIGMAP}, "defined twice"),
    "file outside the root": ({"resources": ["../outside.yaml"]}, {}, "not in or below"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_the_renderer_refuses_what_it_does_not_replicate(case: str, tmp_path: Path) -> None:
    fields, extra_files, message = REFUSED[case]
    root = tmp_path / "root"
    _write(tmp_path, {"outside.yaml": CONFIGMAP})
    _write(root, {"cm.yaml": CONFIGMAP, **extra_files, "kustomization.yaml": {**KUSTOMIZATION, **fields}})

    with pytest.raises(ConfigError, match=message):
        build_kustomization(root)
