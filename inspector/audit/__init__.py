"""Audit a CNN: dead and duplicate filters from the weights, dead channels and collapse from activations.

One module per job: ``weights`` (rules on the weights alone), ``activations`` (running per-channel
statistics of the maps), ``partials`` (those statistics as per-batch partials merged exactly once by
key), ``distributed`` (the batches on a Ray cluster, ``--ray``), ``verdicts`` (dead, constant and
dormant channels, collapse: each unchanged by a function-preserving rescaling), ``routing`` (which convs read a layer's channels, from the graph),
``result`` (per-layer findings, the JSON and the table), ``images`` (files and batches), ``ingraph``
(the per-channel figures computed inside the ONNX graph), ``parallel`` (the map path's statistics on all
cores), ``verify`` (the verdicts checked by mean ablation on images not judged on, and the dormant rule
on the judged ones), ``run`` (``audit()`` itself). The rules and their reasons: docs/audit.md.
"""

from .activations import ActivationStats
from .images import IMAGE_EXTENSIONS, batch_size, collect_images
from .result import SCHEMA_VERSION, AuditResult, LayerAudit
from .run import audit
from .verdicts import MIN_IMAGES, MIN_IMAGES_POOLED
from .verify import DEFAULT_TOLERANCE, Verification, fire_rate_bound
from .weights import WeightStats, weight_stats

__all__ = ["audit", "AuditResult", "LayerAudit", "ActivationStats", "WeightStats", "weight_stats",
           "collect_images", "batch_size", "IMAGE_EXTENSIONS", "SCHEMA_VERSION", "MIN_IMAGES", "MIN_IMAGES_POOLED",
           "Verification", "DEFAULT_TOLERANCE", "fire_rate_bound"]
