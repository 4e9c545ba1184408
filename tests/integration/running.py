"""A pipeline run in a thread of the test process (a driver of the session's Ray cluster) until stopped: for tests
that run two pipelines at once, or query one while it runs."""

from __future__ import annotations

import threading

from cluster.control.run_report import RunProgress, RunSummary
from cluster.control.runner import run_pipeline
from pipelines.config.pipeline import PipelineConfig

__all__ = ["Running"]


class Running:
    """``config`` run on the cluster at ``address`` until :meth:`stop` (a drain, as after Ctrl-C)."""

    def __init__(self, config: PipelineConfig, address: str) -> None:
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self.summary: RunSummary | None = None
        self._thread = threading.Thread(target=self._run, args=(config, address), daemon=True)
        self._thread.start()

    def _run(self, config: PipelineConfig, address: str) -> None:
        try:
            self.summary = run_pipeline(config, address=address, stop_when=self._stop_requested)
        except BaseException as error:
            self.error = error

    def _stop_requested(self, _: RunProgress) -> bool:
        return self._stop.is_set()

    def ended(self, timeout_s: float) -> bool:
        """Whether the run ended (by itself: a drain asked by another process, a failure) within ``timeout_s``."""
        self._thread.join(timeout=timeout_s)
        return not self._thread.is_alive()

    def stop(self) -> RunSummary:
        """Stop the run, wait for its end; its summary (an AssertionError naming the failure if it failed)."""
        self._stop.set()
        self._thread.join(timeout=180)
        assert not self._thread.is_alive(), "the run did not end within 180 s of being stopped"
        assert self.error is None, f"the run failed: {self.error!r}"
        assert self.summary is not None
        return self.summary
