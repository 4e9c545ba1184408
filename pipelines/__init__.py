"""What a pipeline computes: configs, codecs, operators, windows, sources and sinks. Never imports ray."""

from pipelines.config.pipeline import PipelineConfig, load_config, parse_config
from pipelines.errors import ConfigError, EventrayError, ExpressionError, FatalError, RetriableError
from pipelines.stages.plan import CompiledPipeline, compile_pipeline

__all__ = [
    "CompiledPipeline",
    "ConfigError",
    "EventrayError",
    "ExpressionError",
    "FatalError",
    "PipelineConfig",
    "RetriableError",
    "compile_pipeline",
    "load_config",
    "parse_config",
]
