"""Framework models -> clean, named, self-describing ONNX files for the inspector.

    >>> import converters
    >>> converters.convert_keras_app("VGG16", "models/vgg16.onnx", weights="none")
    >>> converters.convert_keras_file("my.keras", "my.onnx", preprocess="tf", check=True)
    >>> converters.convert_torch("nets.py:make_net", "1,3,224,224", "net.onnx", weights="net.pt")
    >>> converters.convert_torchvision("resnet18", "r18.onnx", weights="default")
    >>> converters.convert_timm("efficientnet_b0", "b0.onnx", weights="none", check=True)

TensorFlow, tf2onnx, Keras and torch are optional extras, imported only inside
the functions that need them (``pip install 'inspector-cnn[keras]'`` / ``[torch]``).
"""

__all__ = ["convert_keras_app", "convert_keras_file", "convert_keras_model", "convert_torch",
           "convert_torch_module", "convert_torchvision", "convert_timm",
           "check_keras", "check_torch", "ConversionResult"]


def __getattr__(name):
    if name in ("convert_keras_app", "convert_keras_file", "convert_keras_model", "convert_torch",
                "convert_torch_module", "convert_torchvision", "convert_timm", "ConversionResult"):
        from . import api

        return getattr(api, name)
    if name in ("check_keras", "check_torch"):
        from . import parity

        return getattr(parity, name)
    raise AttributeError(f"module 'converters' has no attribute {name!r}")
