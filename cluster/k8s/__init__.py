"""KubeRay deployment of eventray pipelines: render manifests from a config, build overlays, validate.

``render_rayjob``/``render_raycluster`` turn a :class:`~pipelines.config.pipeline.PipelineConfig` into manifests
(plain dicts; ``to_yaml`` serialises them). ``build_kustomization`` renders a ``k8s/`` overlay as
``kustomize build`` would, for the subset of kustomize eventray uses. ``validate_documents`` and
``validate_paths`` check manifests against the strict KubeRay v1 CRD schemas, the operator's own rules
and eventray's rules, returning :class:`Problem` records. The CLI is in :mod:`cluster.k8s.cli`.

Errors: anything that stops rendering or validation from running raises ``pipelines.errors.ConfigError``
with the field or file and the fix; problems found in manifests are returned, never raised.
"""

from ._conventions import IMAGE_PROJECT_DIR, RAY_VERSION, SLOT_RESOURCE
from ._kustomize import build_kustomization, find_kustomization_roots
from ._pods import PodResources
from ._render import (
    ManifestKind,
    RenderOptions,
    WorkerBounds,
    entrypoint_module,
    render_manifests,
    render_raycluster,
    render_rayjob,
    worker_bounds,
)
from ._schema import SchemaSet, find_schema_dir, load_schema_set
from ._validate import Problem, validate_documents, validate_paths
from ._yaml import load_documents, to_yaml
from .cli import add_k8s_commands

__all__ = [
    "IMAGE_PROJECT_DIR",
    "RAY_VERSION",
    "SLOT_RESOURCE",
    "ManifestKind",
    "PodResources",
    "Problem",
    "RenderOptions",
    "SchemaSet",
    "WorkerBounds",
    "add_k8s_commands",
    "build_kustomization",
    "entrypoint_module",
    "find_kustomization_roots",
    "find_schema_dir",
    "load_documents",
    "load_schema_set",
    "render_manifests",
    "render_raycluster",
    "render_rayjob",
    "to_yaml",
    "validate_documents",
    "validate_paths",
    "worker_bounds",
]
