"""keract's way to see feature maps, emulated (keract 4.5.2 does not run on Keras 3).

keract's ``get_activations(model, x, layer_names)`` evaluates every requested
layer's output in ONE pass over the model (``K.function(model.inputs,
outputs)`` in keract; Keras 3 has no ``K.function``, so here one multi-output
``keras.Model`` and ``predict``) and returns ``{layer name: array}``.
``display_activations(..., save=True)`` then draws each layer as keract does:
a near-square ``pyplot.subplots`` grid on a 24x24-inch figure, one ``imshow``
per channel (default colour map), axes off, a colour bar, ``savefig`` with
``bbox_inches="tight"``, one PNG per layer. keract draws every channel; here
the first 64, as the tutorial and ``inspector maps`` (``--max 64``) do, so all
ways draw the same number of tiles.

Why not keract itself: ``pip install keract`` (4.5.2, 2025) installs, but its
``get_activations`` fails on Keras 3 with ``AttributeError: 'Functional' object
has no attribute '_is_compiled'``.
"""

import argparse
import math
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("MPLBACKEND", "Agg")

MAX_CHANNELS = 64


def get_activations(model, x, layer_names):
    import keras

    layers = [model.get_layer(name) for name in layer_names]
    multi_output = keras.Model(inputs=model.inputs, outputs=[layer.output for layer in layers])
    values = multi_output.predict(x, verbose=0)
    return dict(zip(layer_names, values))


def display_activations(activations, directory, cmap=None, fig_size=(24, 24)):
    import matplotlib.pyplot as plt

    os.makedirs(directory, exist_ok=True)
    for index, (name, acts) in enumerate(activations.items()):
        channels = min(acts.shape[-1], MAX_CHANNELS)
        nrows = int(math.sqrt(channels) - 0.001) + 1  # keract's "best square fit"
        ncols = int(math.ceil(channels / nrows))
        fig, axes = plt.subplots(nrows, ncols, squeeze=False, figsize=fig_size)
        hmap = None
        for i in range(nrows * ncols):
            if i < channels:
                hmap = axes.flat[i].imshow(acts[0, :, :, i], cmap=cmap)
            axes.flat[i].axis("off")
        fig.suptitle(name)
        fig.subplots_adjust(right=0.8)
        colorbar_axes = fig.add_axes([0.85, 0.15, 0.03, 0.7])
        if hmap is not None:
            fig.colorbar(hmap, cax=colorbar_axes)
        plt.savefig(os.path.join(directory, f"{index}_{name}.png"), bbox_inches="tight")
        plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image")
    parser.add_argument("--weights", help=".weights.h5 file (default: Keras' random initialisation)")
    parser.add_argument("-o", "--output", required=True)
    args = parser.parse_args()

    import numpy as np
    from keras.applications.vgg16 import VGG16, preprocess_input
    from keras.utils import img_to_array, load_img

    model = VGG16(weights=None)
    if args.weights:
        model.load_weights(args.weights)
    x = preprocess_input(np.expand_dims(img_to_array(load_img(args.image, target_size=(224, 224))), 0))
    conv_names = [layer.name for layer in model.layers if "conv" in layer.name]
    display_activations(get_activations(model, x, conv_names), args.output)


if __name__ == "__main__":
    main()
