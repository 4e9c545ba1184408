"""A pipeline config as the commands load it: the YAML file, ``--set PATH=VALUE`` overrides, ``--max-events`` and
``--duration-s``, then compiled, so that every command (run, validate, lag) fails alike on a wrong config."""

from __future__ import annotations

import argparse
from typing import Any

import yaml

from pipelines.config.pipeline import PipelineConfig, load_config
from pipelines.errors import ConfigError
from pipelines.stages.plan import compile_pipeline

__all__ = ["load_run_config", "parse_set"]


def parse_set(assignments: list[str]) -> dict[str, Any]:
    """``--set`` assignments as dotted paths and YAML values; ConfigError for one without ``=``."""
    overrides: dict[str, Any] = {}
    for assignment in assignments:
        path, separator, text = assignment.partition("=")
        if not separator or not path:
            raise ConfigError(f"--set {assignment!r}: write PATH=VALUE, e.g. --set source.rate_per_s=null")
        overrides[path.strip()] = yaml.safe_load(text)
    return overrides


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = parse_set(args.set)
    if args.max_events is not None:
        overrides["runtime.max_events"] = args.max_events
        if args.duration_s is None:
            overrides["runtime.duration_s"] = None  # an event budget alone bounds the run
    if args.duration_s is not None:
        overrides["runtime.duration_s"] = args.duration_s if args.duration_s > 0 else None
    return overrides


def load_run_config(args: argparse.Namespace) -> PipelineConfig:
    """``args.config`` with the command line's overrides, checked by compiling it."""
    config = load_config(args.config, _overrides(args))
    compile_pipeline(config)
    return config
