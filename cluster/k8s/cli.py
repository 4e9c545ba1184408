"""``eventray k8s render|validate``: KubeRay manifests from a terminal. The only module here that prints.

``render`` writes the RayJob (or RayCluster) of a pipeline config, headed by the exact command that
produced it, and validates it first; ``validate`` checks files and kustomizations (default ``k8s/``).

Exit codes: 0 success, 1 the manifests have problems (listed one per line), 2 the command could not run
(bad config, missing schemas, a kustomization it cannot build; the message says what to do).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipelines.config.pipeline import PipelineConfig, load_config, with_paths_resolved
from pipelines.errors import ConfigError

from ._conventions import DEFAULT_IMAGE, DEFAULT_RAY_AUTH_MODE, IMAGE_PROJECT_DIR, RAY_AUTH_MODES, RAY_AUTH_SECRET
from ._pods import PodResources
from ._render import ManifestKind, RenderOptions, entrypoint_module, render_manifests
from ._schema import SchemaSet, find_schema_dir, load_schema_set
from ._validate import Problem, validate_documents, validate_paths
from ._yaml import to_yaml

__all__ = ["add_k8s_commands", "build_parser", "main", "rendered_text"]

_EXIT_OK = 0
_EXIT_PROBLEMS = 1
_EXIT_ERROR = 2
_HEADER_ADVICE = "Edit the pipeline config or the flags, not this file; tests compare it with a fresh render."
# (flag, default, type, help): the flags that shape the manifests, recorded in the generated header.
_RENDER_FLAGS: tuple[tuple[str, Any, type, str], ...] = (
    ("--kind", "rayjob", str, "rayjob (runs the pipeline), raycluster (long-running), or all"),
    ("--name", None, str, "metadata.name (default: eventray-<pipeline name>)"),
    ("--image", DEFAULT_IMAGE, str, "image built from k8s/Dockerfile"),
    ("--min-workers", None, int, "fewest worker pods (default 1)"),
    ("--max-workers", None, int, "most worker pods (default: actors in the config / slots per worker)"),
    ("--slots-per-worker", 1, int, "eventray_slot units per worker pod (actors per pod)"),
    ("--worker-cpu", "1", str, "CPU of a worker pod (request = limit)"),
    ("--worker-memory", "2Gi", str, "memory of a worker pod (request = limit)"),
    ("--head-cpu", "1", str, "CPU of the head pod"),
    ("--head-memory", "4Gi", str, "memory of the head pod"),
    ("--idle-timeout-s", 60, int, "seconds an idle worker pod lives before the autoscaler removes it"),
    ("--ttl-s", 300, int, "seconds a finished RayJob's cluster is kept for inspection"),
    (
        "--ray-auth",
        DEFAULT_RAY_AUTH_MODE,
        str,
        f"token: every client needs the token of Secret {RAY_AUTH_SECRET} (key auth_token); disabled: anyone "
        "who reaches the head's ports can submit jobs, i.e. run code in the cluster (opt out only knowingly)",
    ),
    (
        "--secrets",
        "environment",
        str,
        "the job's runtime.secrets: environment (each actor reads the Secrets of its own pod; none travels through "
        "Ray) or driver (the job driver hands them to the actors inside their creation arguments)",
    ),
)
_CHOICES: dict[str, tuple[str, ...]] = {
    "--kind": ("rayjob", "raycluster", "all"),
    "--ray-auth": RAY_AUTH_MODES,
    "--secrets": ("environment", "driver"),
}


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--project-dir", type=Path, default=Path.cwd(), help="tree the image is built from")
    parser.add_argument("--schemas", type=Path, default=None, help="KubeRay CRD schema folder")


def _add_render(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    render = commands.add_parser("render", help="KubeRay YAML for a pipeline config (validated)")
    render.add_argument("config", type=Path, metavar="CONFIG", help="pipeline config YAML in the project")
    for flag, default, kind, text in _RENDER_FLAGS:
        render.add_argument(flag, type=kind, default=default, choices=_CHOICES.get(flag), help=text)
    render.add_argument("--output", type=Path, default=None, help="write here instead of stdout")
    render.add_argument("--no-validate", action="store_true", help="skip validation (no schemas at hand)")
    render.add_argument(
        "--skip-schema-check",
        action="store_true",
        help="render without `eventray schema check` (run for a config that uses a schema registry)",
    )
    _add_common(render)
    render.set_defaults(func=_render)


def _add_validate(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    validate = commands.add_parser("validate", help="check manifests and kustomizations against KubeRay")
    validate.add_argument("paths", type=Path, nargs="*", metavar="PATH", help="files or folders (default: k8s/)")
    _add_common(validate)
    validate.set_defaults(func=_validate)


def add_k8s_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``k8s`` with ``render`` and ``validate`` to ``subparsers``.

    Each leaf parser sets ``func(args) -> int`` (the exit code), to be called by the main CLI.
    """
    k8s = subparsers.add_parser("k8s", help="KubeRay manifests: render from a pipeline config, validate")
    commands = k8s.add_subparsers(dest="k8s_command", required=True, metavar="{render,validate}")
    _add_render(commands)
    _add_validate(commands)


def build_parser() -> argparse.ArgumentParser:
    """The ``render``/``validate`` parser on its own, as used by ``python -m cluster.k8s``."""
    parser = argparse.ArgumentParser(prog="python -m cluster.k8s", description="KubeRay manifests for eventray")
    commands = parser.add_subparsers(dest="k8s_command", required=True, metavar="{render,validate}")
    _add_render(commands)
    _add_validate(commands)
    return parser


def _in_project(path: Path, project_dir: Path) -> Path:
    """``path`` relative to ``project_dir``; ConfigError when it lies outside (the image would lack it)."""
    absolute = (project_dir / path).resolve()
    if not absolute.is_relative_to(project_dir.resolve()):
        raise ConfigError(
            f"config {path} is outside the project {project_dir}, so the image does not contain it. "
            "Operator action: move it into configs/, rebuild the image, and render again."
        )
    return absolute.relative_to(project_dir.resolve())


def _options(args: argparse.Namespace, config_relative: Path, config: PipelineConfig) -> RenderOptions:
    return RenderOptions(
        module=entrypoint_module(config, args.project_dir),
        image=args.image,
        min_workers=args.min_workers,
        max_workers=args.max_workers,
        slots_per_worker=args.slots_per_worker,
        head=PodResources(cpu=args.head_cpu, memory=args.head_memory),
        worker=PodResources(cpu=args.worker_cpu, memory=args.worker_memory),
        name=args.name,
        idle_timeout_s=args.idle_timeout_s,
        ttl_after_finished_s=args.ttl_s,
        config_in_image=f"{IMAGE_PROJECT_DIR}/{config_relative.as_posix()}",
        ray_auth=args.ray_auth,
        secrets=args.secrets,
    )


def _command_line(args: argparse.Namespace, config_relative: Path) -> str:
    words = ["eventray", "k8s", "render", config_relative.as_posix()]
    for flag, default, _, _ in _RENDER_FLAGS:
        value = getattr(args, _dest(flag))
        if value != default or flag == "--kind":
            words += [flag, str(value)]
    if args.output is not None:
        output = (args.project_dir / args.output).resolve()
        inside = output.is_relative_to(args.project_dir.resolve())
        words += ["--output", output.relative_to(args.project_dir.resolve()).as_posix() if inside else str(output)]
    return shlex.join(words)


def rendered_text(args: argparse.Namespace) -> tuple[str, list[dict[str, Any]]]:
    """The YAML text ``render`` writes for ``args`` (with its header), and the documents in it."""
    relative = _in_project(args.config, args.project_dir)
    config = load_config(args.project_dir / relative)
    kind: ManifestKind = args.kind
    documents = render_manifests(config, _options(args, relative, config), kind)
    header = f"Generated by: {_command_line(args, relative)}\n{_HEADER_ADVICE}"
    return to_yaml(documents, header=header), documents


def _schemas(args: argparse.Namespace) -> SchemaSet:
    return load_schema_set(args.schemas or find_schema_dir())


def _report(problems: list[Problem]) -> int:
    for problem in problems:
        print(problem)
    print(f"{len(problems)} problem(s)" if problems else "no problems")
    return _EXIT_PROBLEMS if problems else _EXIT_OK


def _render(args: argparse.Namespace) -> int:
    try:
        text, documents = rendered_text(args)
        if not args.skip_schema_check:
            from cluster.commands.schema import gate_before_start  # noqa: PLC0415 - loads the registry client

            config = load_config(args.project_dir / _in_project(args.config, args.project_dir))
            gate_before_start(with_paths_resolved(config, args.project_dir), str(args.config))
        if not args.no_validate:
            source = f"render of {args.config}"
            problems = validate_documents(
                documents, source=source, schemas=_schemas(args), project_dir=args.project_dir
            )
            if problems:
                return _report(problems)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return _EXIT_ERROR
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text, encoding="utf-8")
        print(f"wrote {args.output}")
    return _EXIT_OK


def _validate(args: argparse.Namespace) -> int:
    paths = args.paths or [args.project_dir / "k8s"]
    try:
        problems = validate_paths(paths, schemas=_schemas(args), project_dir=args.project_dir)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return _EXIT_ERROR
    return _report(problems)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m cluster.k8s render|validate ...``: the same commands without the main ``eventray`` CLI."""
    args = build_parser().parse_args(argv)
    return int(args.func(args))
