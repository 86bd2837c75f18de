"""torchvision and timm models by name: the module, its preprocessing and class names from the library's metadata.

torchvision's weight enums carry ``transforms()`` (crop size, mean, std) and
``meta["categories"]``; timm's ``pretrained_cfg`` carries mean, std and input
size, and ``timm.data.ImageNetInfo`` the class names. Weights: ``none``
(random), ``default`` (the library's own pretrained download and cache) or a
state-dict PATH. Only this module imports torchvision and timm, inside functions.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import socket
from dataclasses import dataclass

from inspector.errors import InspectorError
from inspector.preprocess import Preprocess

DOWNLOAD_TIMEOUT_S = 30  # per socket operation while a hub fetches weights


@dataclass
class ZooModel:
    module: object  # torch.nn.Module, in eval mode
    name: str
    preprocess: Preprocess
    class_names: list | None
    trained: bool
    source: str  # "default" weights' name, a file name, or "random"


def _home(path: str) -> str:
    return path.replace(os.path.expanduser("~"), "~", 1)


@contextlib.contextmanager
def _download_timeout():
    """Hubs download through urllib/requests without a timeout of their own: bound each socket wait."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(previous or DOWNLOAD_TIMEOUT_S)
    saved = {k: os.environ.get(k) for k in ("HF_HUB_ETAG_TIMEOUT", "HF_HUB_DOWNLOAD_TIMEOUT")}
    for key in saved:
        os.environ.setdefault(key, str(DOWNLOAD_TIMEOUT_S))
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)


def _reachable(host: str, port: int = 443, timeout: float = 5.0) -> bool:
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


@contextlib.contextmanager
def _hf_offline_unless_reachable():
    """Hugging Face's hub retries a failed request five times with back-off (about 45 s) and logs each
    retry; when its host cannot be reached at all it is put in offline mode instead, which reads the
    cache and fails at once when the file is not there. Its log lines are kept off the terminal."""
    import logging

    logger = logging.getLogger("huggingface_hub")
    level = logger.level
    logger.setLevel(logging.ERROR)
    patched = None
    try:
        from huggingface_hub import constants
    except ImportError:
        constants = None
    if constants is not None and not constants.HF_HUB_OFFLINE and \
            not _reachable(constants.ENDPOINT.split("://")[-1].split("/")[0]):
        patched = constants.HF_HUB_OFFLINE
        constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        logger.setLevel(level)
        if patched is not None:
            constants.HF_HUB_OFFLINE = patched


def _unknown(kind: str, name: str, names: list[str], command: str) -> InspectorError:
    close = difflib.get_close_matches(name, names, n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return InspectorError(f"unknown {kind} model '{name}'{hint}; list them with: {command}")


def _preprocess(mode: str, mean, std, size: tuple[int, int], description: str) -> Preprocess:
    return Preprocess(mode, "RGB", 1 / 255.0, tuple(float(v) for v in mean), tuple(float(v) for v in std),
                      (int(size[0]), int(size[1])), description)


def _is_download_failure(exc: BaseException) -> bool:
    import urllib.error

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError, OSError)):
            return True
        name = type(exc).__name__
        if name in ("LocalEntryNotFoundError", "ConnectionError", "Timeout", "ReadTimeout", "ConnectTimeout",
                    "OfflineModeIsEnabled", "HfHubHTTPError"):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _load_file(module, path: str) -> None:
    from .torch_convert import load_state_dict

    if path.endswith(".safetensors"):
        if not os.path.isfile(path):
            raise InspectorError(f"state dict not found: {path}")
        from safetensors.torch import load_file

        try:
            state = load_file(path)
            module.load_state_dict(state, strict=True)
        except Exception as exc:
            raise InspectorError(f"{path} does not fit the model ({exc.__class__.__name__}: "
                                 f"{' '.join(str(exc).split())[:200]})") from None
        return
    load_state_dict(module, path)


# ------------------------------------------------------------------ torchvision

def torchvision_names() -> list[str]:
    """Classification and semantic segmentation models (``deeplabv3_resnet50``): one image in, one map out."""
    from torchvision import models

    return sorted(models.list_models(module=models) + models.list_models(module=models.segmentation) +
                  models.list_models(module=models.detection))


def is_detection(name: str) -> bool:
    from torchvision import models

    return name in models.list_models(module=models.detection)


def _detection_features(real: str, builder, default) -> ZooModel:
    """A detection model's backbone and neck (FPN, SSD's extra layers): the feature maps its heads read, which
    the maps and audits need. The full graph (anchors, box decoding, NMS) is not converted. The model's own
    transform (normalise, resize) comes before the backbone: its mean/std become the preprocessing, its
    shorter side the traced size."""
    model = builder(weights=None, weights_backbone=None).eval()
    transform = model.transform
    side = int(transform.min_size[0]) if hasattr(transform, "min_size") else 320
    if "ssd" in real:  # SSD's transform resizes to a fixed square
        side = int(getattr(transform, "fixed_size", None)[0]) if getattr(transform, "fixed_size", None) else side
    how = (f"torchvision {default} backbone+neck: resize to {side}x{side}, /255, mean/std "
           f"(the detection model's own transform)")
    spec = _preprocess("torchvision", transform.image_mean, transform.image_std, (side, side), how)
    return ZooModel(model.backbone.eval(), real, spec, None, False, "random")


def _is_segmentation(name: str) -> bool:
    from torchvision import models

    return name in models.list_models(module=models.segmentation)


def torchvision_model(name: str, weights: str = "default") -> ZooModel:
    try:
        import torchvision  # noqa: F401
        from torchvision import models
    except ImportError as exc:
        raise InspectorError(f"converting torchvision models needs torchvision ({exc}); "
                             "install it with: pip install 'inspector-cnn[torch]'") from None
    names = torchvision_names()
    real = {n.lower(): n for n in names}.get(name.lower())
    if real is None:
        raise _unknown("torchvision classification or segmentation", name, names,
                       "python -c 'import torchvision as t; print(t.models.list_models(t.models), "
                       "t.models.list_models(t.models.segmentation))'")
    builder = models.get_model_builder(real)
    enum = models.get_model_weights(real)
    default = enum.DEFAULT
    if is_detection(real):
        if weights.lower() != "none":
            raise InspectorError(f"torchvision {real}: the detection models convert their backbone+neck with "
                                 "--weights none only, for now")
        return _detection_features(real, builder, default)
    transforms = default.transforms()
    resize = [int(v) for v in transforms.resize_size] if transforms.resize_size else None
    if _is_segmentation(real):  # resized (shorter side), no crop: traced square at that size
        import functools

        builder = functools.partial(builder, weights_backbone=None)
        size = (resize[0], resize[0]) if resize else (520, 520)
        how = f"torchvision {default}: resize to {size[0]}x{size[1]}, /255, mean/std"
    else:
        crop = [int(v) for v in transforms.crop_size]
        size = (crop[0], crop[-1])
        how = (f"torchvision {default}: resize to {resize[0] if resize else '?'}, centre crop {size[0]}x{size[1]}, "
               f"/255, mean/std")
    spec = _preprocess("torch" if tuple(transforms.mean) == (0.485, 0.456, 0.406) and
                       tuple(transforms.std) == (0.229, 0.224, 0.225) else "torchvision",
                       transforms.mean, transforms.std, size, how)
    choice = weights.lower()
    if choice == "none":
        module = builder(weights=None)
        return ZooModel(module.eval(), real, spec, None, False, "random")
    if choice == "default":
        import urllib.parse

        import torch.hub

        file = os.path.basename(default.url)
        cached = os.path.join(torch.hub.get_dir(), "checkpoints", file)
        with _download_timeout():
            try:
                if not os.path.isfile(cached) and not _reachable(urllib.parse.urlparse(default.url).hostname):
                    raise ConnectionError(f"{default.url} cannot be reached")  # before torch.hub prints a line
                module = builder(weights=default)
            except Exception as exc:
                if not _is_download_failure(exc):
                    raise
                where = _home(cached)
                raise InspectorError(
                    f"could not download the torchvision weights {default} (offline?); fetch {default.url} "
                    f"and put it at {where}, or pass --weights PATH (or --weights none for random "
                    f"weights)") from None
        return ZooModel(module.eval(), real, spec, list(default.meta.get("categories") or []) or None, True,
                        str(default))
    module = builder(weights=None)
    _load_file(module, os.path.expanduser(weights))
    return ZooModel(module.eval(), real, spec, None, True, os.path.basename(weights))


# ------------------------------------------------------------------ timm

def timm_model(name: str, weights: str = "default") -> ZooModel:
    try:
        import timm
    except ImportError as exc:
        raise InspectorError(f"converting timm models needs timm ({exc}); "
                             "install it with: pip install 'inspector-cnn[torch]'") from None
    if not timm.is_model(name):
        names = timm.list_models()
        raise _unknown("timm", name, names, "python -c 'import timm; print(timm.list_models())'")
    choice = weights.lower()
    module = timm.create_model(name, pretrained=False)
    cfg = dict(getattr(module, "pretrained_cfg", None) or {})
    spec, tag = timm_preprocess(name, cfg)
    if choice == "none":
        return ZooModel(module.eval(), name, spec, None, False, "random")
    if choice == "default":
        with _download_timeout(), _hf_offline_unless_reachable():
            try:
                module = timm.create_model(name, pretrained=True)
            except Exception as exc:
                if not _is_download_failure(exc):
                    raise
                hub = cfg.get("hf_hub_id")
                if hub:
                    cache = os.environ.get("HF_HUB_CACHE") or os.path.join(
                        os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface"),
                        "hub")
                    where = (f"fetch https://huggingface.co/{hub}/resolve/main/model.safetensors into the "
                             f"Hugging Face cache ({_home(cache)}, e.g. `huggingface-cli download {hub}` on a "
                             f"machine that has it, then copy the folder models--{hub.replace('/', '--')})")
                else:
                    where = f"fetch {cfg.get('url')} into {_home(os.path.join(_torch_hub_dir(), 'checkpoints'))}"
                raise InspectorError(f"could not download the timm weights of {tag} (offline?); {where}, or pass "
                                     f"--weights PATH (or --weights none for random weights)") from None
        return ZooModel(module.eval(), name, spec, _timm_classes(module), True, tag)
    _load_file(module, os.path.expanduser(weights))
    return ZooModel(module.eval(), name, spec, None, True, os.path.basename(weights))


def timm_preprocess(name: str, cfg: dict | None = None) -> tuple[Preprocess, str]:
    """(preprocessing, 'architecture.tag') from timm's ``pretrained_cfg`` for ``name``."""
    if cfg is None:
        import timm.models

        found = timm.models.get_pretrained_cfg(name)
        cfg = found.to_dict() if hasattr(found, "to_dict") else dict(found or {})
    size = tuple(cfg.get("input_size", (3, 224, 224)))[1:]
    tag = f"{cfg.get('architecture', name)}.{cfg['tag']}" if cfg.get("tag") else name
    how = (f"timm {tag}: {cfg.get('interpolation', 'bilinear')} resize, crop_pct {cfg.get('crop_pct', 0.875)}, "
           "/255, mean/std")
    mean, std = cfg.get("mean", (0.485, 0.456, 0.406)), cfg.get("std", (0.229, 0.224, 0.225))
    mode = "torch" if tuple(mean) == (0.485, 0.456, 0.406) and tuple(std) == (0.229, 0.224, 0.225) else "timm"
    return _preprocess(mode, mean, std, size, how), tag


def _torch_hub_dir() -> str:
    import torch.hub

    return torch.hub.get_dir()


def _timm_classes(module) -> list | None:
    try:
        from timm.data import ImageNetInfo, infer_imagenet_subset

        subset = infer_imagenet_subset(module)
        if not subset:
            return None
        return list(ImageNetInfo(subset).label_descriptions(as_dict=False))
    except Exception:
        return None
