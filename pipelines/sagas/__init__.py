"""Sagas: multi-step workflows across services, run as a keyed stage per saga id (ARCHITECTURE.md, sagas).

:mod:`.contract` names the rows a saga stage reads and emits, :mod:`.definition` the steps a saga is made of,
:mod:`.machine` decides what each start, reply and deadline does (pure), :mod:`.process` runs it as a keyed
process function, :mod:`.monitor` watches a choreography for events that do not arrive, :mod:`.history` folds
the lifecycle events back into each saga's story (``eventray saga show|list``).
"""
