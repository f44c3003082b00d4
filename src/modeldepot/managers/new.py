"""Template for a new service's manager (document 001's ``new.py``).

To add a service ``foo``:

1. Copy this file to ``foo.py`` and replace ``new`` / ``New`` with ``foo`` / ``Foo``.
2. Ship its reference as ``reference/data/foo.json`` (the document-000 format) and add
   ``"foo": "foo"`` to ``modeldepot.reference.SERVICE_DB``; or always pass ``reference=``.
3. Write :meth:`NewModelManager.load_model`. Keep the structure of ``load`` (it is inherited:
   check the key, download and validate when not available, then call ``load_model``);
   ``load_model`` builds the model from the depot record through ``self.load_part`` (the load
   service and its cache) and returns a ``ManagedModel``. ``device`` and ``dtype`` are already
   overridden to what exists (no CUDA: CPU and float32).
4. Export it from ``modeldepot.managers`` and add it to ``super.MANAGERS``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from modeldepot.managers.base import BaseModelManager, ManagedModel

if TYPE_CHECKING:
    from modeldepot.configs import ModelConfigBase
    from modeldepot.reference import ReferenceEntry


class NewModelManager(BaseModelManager):
    """The models of the ``new`` service (give ``reference=``: nothing is shipped for it)."""

    service = "new"
    #: Reference ``type`` values this manager loads (empty: any).
    model_types = ()

    def load_model(
        self, key: str, entry: ReferenceEntry, record: ModelConfigBase, *, device: str, dtype: str
    ) -> ManagedModel:
        part = self.load_part(record, None, device, dtype)
        model = part.model  # adapt here: wrap it, load its processor with load_part(record, "feature_extractor", ...)
        return ManagedModel(key, self.service, model, device, part.precision, record, {"model": part})


__all__ = ["NewModelManager"]
