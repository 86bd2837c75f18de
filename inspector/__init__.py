"""inspector: see inside any CNN, whatever framework trained it.

    >>> import inspector
    >>> model = inspector.load("vgg16.onnx")
    >>> [layer.name for layer in model.layers][:2]
    ['block1_conv1', 'block1_conv2']
    >>> maps = model.maps("tiger.jpg", ["block1_conv1"])   # {name: (C, H, W)}
    >>> weights = model.filters("block1_conv1")            # (O, I, kH, kW)

Heavy modules (onnx, onnxruntime, matplotlib) load on first use, so that
``inspector --help`` stays fast.
"""

__version__ = "0.1.0"

__all__ = ["load", "Model", "Layer", "InspectorError", "CheckFailed", "__version__"]


def __getattr__(name):
    if name in ("load", "Model"):
        from . import api

        return getattr(api, name)
    if name == "Layer":
        from .graph import Layer

        return Layer
    if name in ("InspectorError", "CheckFailed"):
        from . import errors

        return getattr(errors, name)
    raise AttributeError(f"module 'inspector' has no attribute {name!r}")
