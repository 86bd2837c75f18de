"""The Keras tutorial's way to see feature maps, for every conv layer of VGG16.

As in the well-known "visualize filters and feature maps" tutorial: load
VGG16, and for each conv layer build a new ``keras.Model(inputs,
layer.output)``, ``predict`` the photo through it, and draw the first 64 maps
in an 8x8 ``pyplot.subplot`` grid (grey colour map). ``pyplot.show()`` is
replaced by ``savefig``: one PNG per layer.

Weights: a ``.weights.h5`` file (``--weights``) copied from the ONNX model the
inspector reads, so both draw the same maps; ImageNet weights cannot be
downloaded on the benchmark machine.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("MPLBACKEND", "Agg")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image")
    parser.add_argument("--weights", help=".weights.h5 file (default: random initialisation)")
    parser.add_argument("-o", "--output", required=True)
    args = parser.parse_args()

    from keras.applications.vgg16 import VGG16, preprocess_input
    from keras.models import Model
    from keras.utils import img_to_array, load_img
    from matplotlib import pyplot
    from numpy import expand_dims

    os.makedirs(args.output, exist_ok=True)
    model = VGG16(weights=None)
    if args.weights:
        model.load_weights(args.weights)
    img = load_img(args.image, target_size=(224, 224))
    img = img_to_array(img)
    img = expand_dims(img, axis=0)
    img = preprocess_input(img)
    square = 8
    for layer in model.layers:
        if "conv" not in layer.name:
            continue
        feature_model = Model(inputs=model.inputs, outputs=layer.output)
        feature_maps = feature_model.predict(img, verbose=0)
        pyplot.figure(figsize=(12, 12))
        ix = 1
        for _ in range(square):
            for _ in range(square):
                ax = pyplot.subplot(square, square, ix)
                ax.set_xticks([])
                ax.set_yticks([])
                pyplot.imshow(feature_maps[0, :, :, ix - 1], cmap="gray")
                ix += 1
        pyplot.suptitle(layer.name)
        pyplot.savefig(os.path.join(args.output, f"{layer.name}.png"))
        pyplot.close()


if __name__ == "__main__":
    main()
