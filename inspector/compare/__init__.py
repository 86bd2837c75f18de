"""Compare two models layer by layer: where does the int8 (fine-tuned, re-exported) model part ways?

Public:

- ``diff(model_a, model_b, images, ...) -> DiffResult``: streamed per-layer SQNR, cosine, errors and
  weight changes (``inspector.compare.run``);
- ``match_layers(layers_a, layers_b) -> list[Pair]``: which conv layer of one is which of the other
  (``inspector.compare.matching``);
- ``LayerStats`` and ``sqnr_db``: the streamed accumulators (``inspector.compare.metrics``);
- ``weight_change``: per-filter relative change and cosine (``inspector.compare.weights``);
- ``side_by_side``: a layer's maps for A, B and |A-B| (``inspector.compare.pictures``);
- ``compare_section``: the HTML report's comparison section (``inspector.compare.html``).
"""

from .matching import Pair, match_layers
from .metrics import LayerStats, sqnr_db
from .run import DiffResult, diff
from .weights import weight_change

__all__ = ["DiffResult", "LayerStats", "Pair", "diff", "match_layers", "sqnr_db", "weight_change"]
