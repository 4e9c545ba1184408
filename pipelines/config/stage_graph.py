"""Which keyed stage takes the rows of each input and the results of each stage: a pipeline's stages as a tree.

A pipeline's keyed stages (``stages:``) are listed in order. Each names what it takes in ``inputs``: inputs of
the pipeline (by name) and earlier stages (by ``name``). Left out, the first stage takes every input no other
stage names, and each later stage the one before it, so a list without ``inputs`` is a chain.

The rules keep the graph a tree that ends in the last stage, the one whose results reach the sinks:

- a stage takes inputs and *earlier* stages only (no cycle; a checkpoint takes the stages in order, each after
  every stage that feeds it);
- each input and each stage but the last feeds exactly one stage (fanning one out to two stages is not built);
- every input feeds a stage, and the first stage takes at least one input.

The owners of a stage number their senders: the source actors first (when the stage takes inputs), then each
feeding stage's owners, stage by stage in order (:meth:`StageGraph.senders`, :meth:`StageGraph.first_sender`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["StageGraph", "stage_graph"]


@dataclass(frozen=True)
class StageGraph:
    """``input_stage``: for each input (``PipelineConfig.all_inputs`` order) the stage its rows go to;
    ``next_stage``: for each stage the one its results go to (None: the last, whose results reach the sinks)."""

    input_stage: tuple[int, ...]
    next_stage: tuple[int | None, ...]

    @property
    def input_stages(self) -> tuple[int, ...]:
        """The stages the sources send to, in order."""
        return tuple(sorted(set(self.input_stage)))

    def reads_inputs(self, stage: int) -> bool:
        """Whether ``stage`` takes the rows of some input (then every source actor is one of its senders)."""
        return stage in self.input_stage

    def takes_one_stage(self, stage: int) -> bool:
        """Whether ``stage`` takes only the results of one earlier stage (as they are); any other stage takes the
        rows of its inputs and stages in one schema."""
        return not self.reads_inputs(stage) and len(self.feeders(stage)) == 1

    def feeders(self, stage: int) -> tuple[int, ...]:
        """The earlier stages whose results ``stage`` takes, in order."""
        return tuple(index for index, following in enumerate(self.next_stage) if following == stage)

    def senders(self, stage: int, sources: int, sizes: Sequence[int]) -> int:
        """How many senders feed ``stage``: ``sources`` source actors when it takes inputs, plus every owner of
        each feeding stage (``sizes``: the actors of each stage)."""
        own = sources if self.reads_inputs(stage) else 0
        return own + sum(sizes[feeder] for feeder in self.feeders(stage))

    def first_sender(self, stage: int, feeder: int, sources: int, sizes: Sequence[int]) -> int:
        """The sender number of owner 0 of ``feeder`` among ``stage``'s senders (owner ``i`` is this plus ``i``)."""
        if self.next_stage[feeder] != stage:
            raise ValueError(f"stage {feeder} does not feed stage {stage}")
        number = sources if self.reads_inputs(stage) else 0
        return number + sum(sizes[earlier] for earlier in self.feeders(stage) if earlier < feeder)


def stage_graph(
    input_names: Sequence[str], stage_names: Sequence[str], stage_inputs: Sequence[Sequence[str] | None]
) -> StageGraph:
    """The graph of stages named ``stage_names`` taking ``stage_inputs`` (None: the default, see the module
    docstring) over inputs named ``input_names`` (one per input; an input of several topics repeats its name).
    Raises ValueError naming the field (``stages.<k>.inputs``) and the fix."""
    inputs = list(dict.fromkeys(input_names))
    _check_names(inputs, stage_names)
    input_stage: dict[str, int] = {}
    next_stage: list[int | None] = [None] * len(stage_names)
    for index, names in enumerate(_reads(inputs, stage_names, stage_inputs)):
        for name in names:
            if name in inputs:
                if name in input_stage:
                    raise _fanned_out(f"input {name!r}", input_stage[name], index)
                input_stage[name] = index
                continue
            feeder = _earlier_stage(name, index, inputs, stage_names)
            following = next_stage[feeder]
            if following is not None:
                raise _fanned_out(f"stage {name!r}", following, index)
            next_stage[feeder] = index
    unread = [name for name in inputs if name not in input_stage]
    if unread:
        raise ValueError(f"stages: the input(s) {unread} feed no stage; name each in one stage's inputs, or remove it")
    for index, following in enumerate(next_stage[:-1]):
        if following is None:
            raise ValueError(
                f"stages.{index}: stage {stage_names[index]!r} feeds no stage, and only the last stage writes to the "
                "sinks: name it in a later stage's inputs"
            )
    return StageGraph(tuple(input_stage[name] for name in input_names), tuple(next_stage))


def _check_names(inputs: Sequence[str], stage_names: Sequence[str]) -> None:
    clash = sorted(set(inputs) & set(stage_names))
    if clash:
        raise ValueError(f"stages: {clash} name both an input and a stage; rename the stage (stages.<k>.name)")
    repeated = sorted({name for name in stage_names if stage_names.count(name) > 1})
    if repeated:
        raise ValueError(f"stages: several stages are named {repeated}; give each stage its own name")


def _reads(
    inputs: Sequence[str], stage_names: Sequence[str], stage_inputs: Sequence[Sequence[str] | None]
) -> list[list[str]]:
    """What each stage takes, defaults filled in: the first stage every input no stage names, a later stage the
    one before it."""
    named = {name for written in stage_inputs if written is not None for name in written}
    reads: list[list[str]] = []
    for index, written in enumerate(stage_inputs):
        if written is not None:
            names = list(written)
        elif index == 0:
            names = [name for name in inputs if name not in named]
        else:
            names = [stage_names[index - 1]]
        if not names:
            raise ValueError(
                "stages.0.inputs: the first stage takes no input (the other stages name them all); name at least one "
                "input in it"
            )
        if len(set(names)) != len(names):
            raise ValueError(f"stages.{index}.inputs: {names} names one thing twice; name each input or stage once")
        reads.append(names)
    return reads


def _earlier_stage(name: str, index: int, inputs: Sequence[str], stage_names: Sequence[str]) -> int:
    """The index of stage ``name``, which stage ``index`` takes: an earlier one."""
    path = f"stages.{index}.inputs"
    if name not in stage_names:
        raise ValueError(f"{path}: {name!r} is neither an input nor a stage; inputs: {list(inputs)}, stages: "
                         f"{list(stage_names)}")  # fmt: skip
    feeder = stage_names.index(name)
    if feeder >= index:
        raise ValueError(
            f"{path}: {name!r} is stages.{feeder}, not an earlier stage; a stage takes inputs and earlier stages "
            "only: list each stage after those it takes"
        )
    return feeder


def _fanned_out(what: str, first: int, second: int) -> ValueError:
    return ValueError(
        f"stages.{second}.inputs: {what} already feeds stages.{first}; each input and stage feeds one stage (sending "
        "one to two stages is not supported)"
    )
