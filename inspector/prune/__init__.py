"""Remove dead filters from an ONNX model, with every weight that only served them.

Public: ``prune(model, dead=None, channels=False) -> PruneResult`` (``.table()``,
``.to_dict()``, ``.write(path)``), ``check.compare`` (outputs before and after),
``audit_input.dead_by_layer`` (the audit's dead filters and channels).
Modules: ``trace`` (dependency groups), ``values`` (constant channels through
ops), ``surgery`` (rewriting weights and shape constants), ``check``, ``api``.
"""

from .api import PruneResult, prune

__all__ = ["PruneResult", "prune"]
