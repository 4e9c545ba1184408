"""Ray token auth in Ray manifests: one mode on every container, the token only ever from a Secret.

What KubeRay v1.7 does when ``authOptions.mode`` is ``token`` (``controllers/ray/common/pod.go``,
``SetContainerTokenAuthEnvVars``): it adds ``RAY_AUTH_MODE=token`` and ``RAY_AUTH_TOKEN`` (``secretKeyRef``
to ``authOptions.secretName``, key ``auth_token``), each only when the container does not set it already, to
``containers[0]`` of the head and of every worker group pod, to the autoscaler sidecar, and
(``rayjob_controller.go`` ``configureSubmitterContainer``) to ``containers[0]`` of the RayJob submitter. The
sidecar's ``autoscalerOptions.env`` is appended after that (``mergeAutoscalerOverrides``), so a variable set
there is duplicated. Every other container gets nothing.

Rules, each a :class:`Violation` with the path and the fix:

- Every cluster spec sets ``authOptions.mode``; in token mode it names ``secretName``, the Secret clients
  and CI read the token from (without it KubeRay generates one named after the RayCluster).
- Every container sets ``RAY_AUTH_MODE`` explicitly, and all agree with ``authOptions.mode``; the autoscaler
  sidecar sets it only when auth is disabled, and in token mode sets neither auth variable.
- A container that sets ``RAY_AUTH_MODE=token`` and that KubeRay does not inject into reads ``RAY_AUTH_TOKEN``
  through ``secretKeyRef``; any ``RAY_AUTH_TOKEN`` reads ``secretName``'s ``auth_token`` key.
- :func:`literal_token_violations`: a literal token in any document (env ``value``, ConfigMap ``data``, a
  RayJob's runtime env) is refused: it would sit in git and in ``kubectl get -o yaml``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import yaml

from ._conventions import RAY_AUTH_SECRET, RAY_AUTH_TOKEN_KEY
from ._tree import Violation, cluster_specs, env_entry, format_path, mapping, pod_spec, ray_groups, sequence

__all__ = ["auth_violations", "literal_token_violations"]

MODE_ENV = "RAY_AUTH_MODE"
TOKEN_ENV = "RAY_AUTH_TOKEN"  # noqa: S105
_RERENDER = "render again with `eventray k8s render` (token by default, --ray-auth disabled to opt out)"
_CREATE_SECRET = (
    f'kubectl create secret generic {RAY_AUTH_SECRET} --from-literal={RAY_AUTH_TOKEN_KEY}="$(openssl rand -hex 32)"'
)


@dataclass(frozen=True)
class _Container:
    """The ``env`` of one container, where it is, and whether KubeRay injects the auth variables into it."""

    path: str
    env: Any
    injected: bool


def _template_containers(template: Any, path: str) -> list[_Container]:
    containers = sequence(pod_spec({"template": template}).get("containers"))
    return [
        _Container(f"{path}.spec.containers[{index}].env", mapping(container).get("env"), injected=index == 0)
        for index, container in enumerate(containers)
    ]


def _pod_containers(document: dict[str, Any]) -> list[_Container]:
    """Containers of the Ray pods and of a RayJob's submitter pod (not the autoscaler sidecar)."""
    found = []
    for path, spec in cluster_specs(document):
        for group_path, group in ray_groups(spec, path):
            found += _template_containers(group.get("template"), f"{group_path}.template")
    spec = mapping(document.get("spec"))
    if document.get("kind") == "RayJob" and "submitterPodTemplate" in spec:
        found += _template_containers(spec["submitterPodTemplate"], "spec.submitterPodTemplate")
    return found


def _options_violations(options: dict[str, Any], path: str) -> list[Violation]:
    if not options.get("mode"):
        return [Violation(f"{path}.authOptions.mode", f"must be set explicitly (token, or disabled); {_RERENDER}")]
    if options["mode"] == "token" and not options.get("secretName"):
        return [
            Violation(
                f"{path}.authOptions.secretName",
                "token mode must name the Secret that holds the token (data key auth_token); otherwise KubeRay "
                f"generates one named after the RayCluster that clients cannot know. Fix: secretName: "
                f"{RAY_AUTH_SECRET}, and create it: {_CREATE_SECRET}",
            )
        ]
    return []


def _autoscaler_violations(spec: dict[str, Any], path: str) -> tuple[list[Violation], list[tuple[str, str]]]:
    """Violations of the autoscaler sidecar's env, and the mode it sets explicitly (if any)."""
    if not spec.get("enableInTreeAutoscaling"):
        return [], []
    env_path, env = f"{path}.autoscalerOptions.env", mapping(spec.get("autoscalerOptions")).get("env")
    if mapping(spec.get("authOptions")).get("mode") == "token":
        repeated = [name for name in (MODE_ENV, TOKEN_ENV) if env_entry(env, name) is not None]
        message = (
            f"remove {' and '.join(repeated)}: in token mode KubeRay injects both into the autoscaler sidecar and "
            "appends this list after them (mergeAutoscalerOverrides), so the sidecar would carry them twice"
        )
        return ([Violation(env_path, message)] if repeated else []), []
    entry = env_entry(env, MODE_ENV)
    if entry is None or not entry.get("value"):
        return [Violation(env_path, f"{MODE_ENV} must be set explicitly here when auth is disabled; {_RERENDER}")], []
    return [], [(env_path, str(entry["value"]))]


def _agreement_violations(modes: list[tuple[str, str]]) -> list[Violation]:
    if not modes:
        return []
    first_path, first = modes[0]
    return [
        Violation(path, f"{MODE_ENV}={value} differs from {first_path}={first}: use one mode everywhere; {_RERENDER}")
        for path, value in modes[1:]
        if value != first
    ]


def _token_violations(container: _Container, mode: str, secret: Any) -> list[Violation]:
    """Where a token-mode container gets its token from; literals are left to literal_token_violations."""
    entry = env_entry(container.env, TOKEN_ENV)
    wanted = f"valueFrom.secretKeyRef {{name: {secret or RAY_AUTH_SECRET}, key: {RAY_AUTH_TOKEN_KEY}}}"
    if mode != "token" or (entry is not None and "value" in entry):
        return []
    if entry is None:
        if container.injected:
            return []
        return [
            Violation(
                container.path,
                f"{MODE_ENV} is token but {TOKEN_ENV} is missing, and KubeRay injects it only into containers[0] "
                f"of Ray and submitter pods. Fix: add {TOKEN_ENV} with {wanted}",
            )
        ]
    reference = mapping(mapping(entry.get("valueFrom")).get("secretKeyRef"))
    if reference.get("key") == RAY_AUTH_TOKEN_KEY and (not secret or reference.get("name") == secret):
        return []
    return [Violation(container.path, f"{TOKEN_ENV} must come from the Secret authOptions.secretName names: {wanted}")]


def auth_violations(document: dict[str, Any]) -> list[Violation]:
    """Every auth rule (module docstring) broken by a RayCluster, RayJob or RayService document."""
    found: list[Violation] = []
    modes: list[tuple[str, str]] = []
    secret = None
    for path, spec in cluster_specs(document):
        options = mapping(spec.get("authOptions"))
        found += _options_violations(options, path)
        modes += [(f"{path}.authOptions.mode", str(options["mode"]))] if options.get("mode") else []
        secret = options.get("secretName")
        autoscaler_found, autoscaler_modes = _autoscaler_violations(spec, path)
        found += autoscaler_found
        modes += autoscaler_modes
    for container in _pod_containers(document):
        entry = env_entry(container.env, MODE_ENV)
        if entry is None or not entry.get("value"):
            found.append(Violation(container.path, f"{MODE_ENV} must be set explicitly; {_RERENDER}"))
            continue
        modes.append((container.path, str(entry["value"])))
        found += _token_violations(container, str(entry["value"]), secret)
    return found + _agreement_violations(modes)


def _literal_env_paths(node: Any, path: list[Any]) -> Iterator[list[Any]]:
    if isinstance(node, dict):
        if node.get("name") == TOKEN_ENV and "value" in node:
            yield [*path, "value"]
        for key, value in node.items():
            yield from _literal_env_paths(value, [*path, key])
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _literal_env_paths(item, [*path, index])


def _runtime_env_has_token(document: dict[str, Any]) -> bool:
    text = mapping(document.get("spec")).get("runtimeEnvYAML")
    try:
        runtime_env = yaml.safe_load(str(text)) if document.get("kind") == "RayJob" and text else None
    except yaml.YAMLError:
        return False  # reported by the operator rules
    return TOKEN_ENV in mapping(mapping(runtime_env).get("env_vars"))


def literal_token_violations(document: dict[str, Any]) -> list[Violation]:
    """A literal ``RAY_AUTH_TOKEN`` anywhere in ``document``, whatever its kind."""
    message = (
        f"a literal {TOKEN_ENV} puts the token in git and in `kubectl get -o yaml`. Fix: read it with "
        f"valueFrom.secretKeyRef {{name: {RAY_AUTH_SECRET}, key: {RAY_AUTH_TOKEN_KEY}}}, or leave it out where "
        "KubeRay injects it (Ray containers, autoscaler, submitter)"
    )
    paths = [format_path(parts) for parts in _literal_env_paths(document, [])]
    if document.get("kind") == "ConfigMap" and TOKEN_ENV in mapping(document.get("data")):
        paths.append(f"data.{TOKEN_ENV}")
    if _runtime_env_has_token(document):
        paths.append("spec.runtimeEnvYAML")
    return [Violation(path, message) for path in paths]
