"""The three CAM methods, each a small variant of ``CamMethod`` overriding one hook.

``CamMethod.low_res_cam`` is ``ReLU(sum_c w_c A_c)`` over the target layer's maps A;
ScoreCAM and AblationCAM supply the channel weights w (``channel_weights``),
EigenCAM replaces the whole sum by a projection. The pipeline around them (one
run, target, upsampling, scaling) is ``inspector.cam.pipeline``.
"""

from __future__ import annotations

from ..errors import InspectorError

# numpy is imported inside the hooks: the command line builds its --method choices from METHODS
# while it parses, and `inspector --help` must not pay for numpy.


class CamMethod:
    name = ""
    summary = ""
    needs_target = True  # scores a class (or a reduced output) of the model

    def channel_weights(self, run):  # pragma: no cover - every method overrides a hook
        raise NotImplementedError(f"{type(self).__name__} defines neither channel_weights nor low_res_cam")

    def low_res_cam(self, run):
        """(h, w) map at the layer's resolution, before ReLU and scaling."""
        import numpy as np

        run.weights = self.channel_weights(run).astype(np.float32)
        return np.tensordot(run.weights, run.maps, axes=1)


class EigenCAM(CamMethod):
    """Muhammad & Yeasin 2020: the maps (h*w points of C channels), centred per channel, projected on
    their first principal direction. One run, no target.

    Sign rule (an SVD's singular vectors are defined up to sign): the direction is oriented so that its
    loadings sum to a positive number, i.e. a point scores high where the channels fire together more
    than on average; where the loadings sum to exactly zero, the largest loading is made positive.
    """

    name = "eigencam"
    summary = "first principal component of the layer's maps; one run, no target"
    needs_target = False

    def low_res_cam(self, run):
        import numpy as np

        maps = run.maps.astype(np.float64)
        channels, height, width = maps.shape
        points = maps.reshape(channels, -1).T
        points = points - points.mean(axis=0)
        if not np.isfinite(points).all():
            raise InspectorError(f"layer '{run.layer.name}' has NaN or infinite values; EigenCAM cannot project them")
        _, _, directions = np.linalg.svd(points, full_matrices=False)
        direction = directions[0]
        total = direction.sum()
        sign = np.sign(total) if total != 0 else np.sign(direction[np.argmax(np.abs(direction))])
        run.weights = None
        return (points @ (direction * (sign or 1.0))).reshape(height, width).astype(np.float32)


class ScoreCAM(CamMethod):
    """Wang et al. 2020: each channel's map, upsampled to the input and min-max scaled, masks the
    (preprocessed) input; the target's scores of the C masked inputs, softmaxed over channels, weigh the
    maps. C forward runs, batched."""

    name = "scorecam"
    summary = "each channel masks the input; softmax of the target's scores weighs the maps (C runs)"

    def channel_weights(self, run):
        import numpy as np

        from .resize import min_max, upsample

        channels = run.maps.shape[0]
        scores = np.empty(channels, np.float64)
        height, width = run.input_size
        x = run.batch  # (1, ...) in the model's layout
        for start, stop in run.chunks(channels, "scorecam"):
            masks = min_max(upsample(run.maps[start:stop], (height, width)), axis=(1, 2))
            if run.model.input.layout == "NCHW":
                masked = x * masks[:, None, :, :]
            else:
                masked = x * masks[:, :, :, None]
            scores[start:stop] = run.score_inputs(masked.astype(x.dtype, copy=False))
        shifted = np.exp(scores - scores.max())
        run.channel_scores = scores
        return shifted / shifted.sum()


class AblationCAM(CamMethod):
    """Desai & Ramaswamy 2020: the target's relative drop (y - y_k) / y when channel k of the layer is
    zeroed, run on the part of the graph after the layer only (cut at its tensor). C runs of the tail."""

    name = "ablationcam"
    summary = "relative drop of the target when each channel is zeroed; runs only the graph after the layer"

    def channel_weights(self, run):
        import numpy as np

        tail = run.tail()
        channels = run.maps.shape[0]
        base = float(tail.scores(run.maps[None])[0])
        whole = float(run.target.scores(run.values[run.target.tensor])[0])
        if not abs(base - whole) <= 1e-3 * max(abs(whole), 1e-6) + 1e-5:
            # The cut graph, fed the unmodified maps, must give the whole model's score: else the cut is wrong.
            raise InspectorError(f"the graph cut after layer '{run.layer.name}' gives {base:.6g} where the whole "
                                 f"model gives {whole:.6g}; AblationCAM cannot be trusted here: use --method scorecam")
        dropped = np.empty(channels, np.float64)
        for start, stop in run.chunks(channels, "ablationcam"):
            ablated = np.repeat(run.maps[None], stop - start, axis=0)
            ablated[np.arange(stop - start), np.arange(start, stop)] = 0
            dropped[start:stop] = tail.scores(ablated)
        run.channel_scores = dropped
        if abs(base) < 1e-12:
            raise InspectorError(f"the target's score is {base:g} on this photo, so its relative drop is undefined; "
                                 "choose another --target or use --method scorecam")
        return (base - dropped) / base


METHODS: dict[str, CamMethod] = {method.name: method for method in (ScoreCAM(), EigenCAM(), AblationCAM())}


def method(name: str) -> CamMethod:
    try:
        return METHODS[str(name).lower()]
    except KeyError:
        raise InspectorError(f"unknown CAM method '{name}': choose {', '.join(METHODS)}") from None
