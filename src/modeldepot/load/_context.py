"""InvokeAI's invocation ``context`` as the load service sees it: ids for events, maybe a bus.

Seed 002 ("Emitting model loading events"): when a context is passed to ``load_model_*()``, the
load events go to the invocation's event bus, tagged with its queue and session ids. Any object is
accepted; what it lacks is ignored, so code written for InvokeAI keeps working unchanged here.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modeldepot.configs import ModelConfigBase
    from modeldepot.events import EventBus
    from modeldepot.taxonomy import SubModelType

log = logging.getLogger(__name__)
#: The ids an invocation context tags load events with (seed 002's payload).
CONTEXT_IDS = ("queue_id", "queue_item_id", "queue_batch_id", "graph_execution_state_id")
# InvokeAI 4 keeps them on the context's queue item, under these names.
_QUEUE_ITEM_IDS = ("queue_id", "item_id", "batch_id", "session_id")


class ContextEvents:
    """What an invocation context offers for load events: its ids, and its own event bus if any.

    Ids come from ``context.<id>``, else InvokeAI 4's ``context.queue_item`` (or
    ``context._data.queue_item``). The bus is ``context.events`` or ``context.services.events``,
    used through ``emit_<event name>(**payload)`` (InvokeAI's event service; keywords it does not
    take are left out) or ``emit(name, **payload)`` (ours).
    """

    def __init__(self, context: Any, own_bus: EventBus | None) -> None:
        item = getattr(context, "queue_item", None) or getattr(getattr(context, "_data", None), "queue_item", None)
        self.ids: dict[str, Any] = {}
        for name, alt in zip(CONTEXT_IDS, _QUEUE_ITEM_IDS, strict=True):
            value = getattr(context, name, None)
            if value is None and item is not None:
                value = getattr(item, alt, None)
            # Payloads stay JSON-able whatever the context holds (a UUID, a mock).
            self.ids[name] = value if value is None or isinstance(value, str | int) else str(value)
        bus = getattr(context, "events", None)
        if bus is None:
            bus = getattr(getattr(context, "services", None), "events", None)
        # The service's own bus already gets every load from disk: telling it twice would double-count.
        self.bus = None if bus is own_bus else bus

    def emit(self, name: str, payload: dict[str, Any]) -> None:
        bus = self.bus
        if bus is None:
            return
        try:
            method = getattr(bus, f"emit_{name}", None)
            if callable(method):
                method(**_accepted(method, payload))
            elif callable(getattr(bus, "emit", None)):
                bus.emit(name, **payload)
        except Exception:  # a caller's broken bus must not break the load, as with our EventBus
            log.exception("the invocation context's event bus failed on %s", name)


def _accepted(method: Callable[..., Any], payload: dict[str, Any]) -> dict[str, Any]:
    """The part of ``payload`` that ``method`` takes as keywords."""
    try:
        params = inspect.signature(method).parameters
    except (TypeError, ValueError):
        return payload
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return payload
    return {k: v for k, v in payload.items() if k in params}


def load_event_payload(
    config: ModelConfigBase, submodel_type: SubModelType | None, precision: str | None, ids: dict[str, Any] | None
) -> dict[str, Any]:
    """A load event's payload: seed 002's keys (the context ids, ``model_key``, ``submodel_type``,
    ``hash``, ``location``, ``precision``) beside the earlier ``key``, ``model_name``, ``submodel``."""
    sub = submodel_type.value if submodel_type else None
    return {
        **(ids if ids is not None else dict.fromkeys(CONTEXT_IDS)),
        "key": config.key,
        "model_key": config.key,
        "model_name": config.name,
        "submodel": sub,
        "submodel_type": sub,
        "hash": config.hash,
        "location": str(config.path),
        "precision": precision,
    }


__all__ = ["CONTEXT_IDS", "ContextEvents", "load_event_payload"]
