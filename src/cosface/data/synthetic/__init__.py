"""Synthetic faces: procedurally drawn identities for demos, end-to-end tests and benchmarks.

    from cosface.data.synthetic import generate, raw_pixel_baseline
    manifest = generate("synth", identities=500, images_per_identity=20, lfw_identities=200, seed=0)
    print(raw_pixel_baseline("synth/lfw"))     # the accuracy a model has to beat

`identity` draws a person's stable parameters, `render` draws images of them under random
nuisances (`Nuisances`), `writer` lays out the CASIA-style training folder, the open-set LFW-style
evaluation set and its pairs.txt, and `baseline` computes the raw-pixel accuracy.

Calibration (generator version 1, default nuisances; 300 training identities x 20 images, 200
evaluation identities x 4 images, 10 folds of 120 + 120 pairs, seed 11; reference protocol):
raw pixels 72.3 %; a 0.2 M-parameter CNN with MobileFaceNet's kind of head (strided convolutions,
PReLU, global depthwise convolution, 128-d), CosFace s = 32, m = 0.40, SGD 0.1, batch 64, after
12,000 training images (about 20 s on one CPU thread): 88.3 % (72.3 % at initialisation).
Version 2 halves the share of grayscale images (10 % -> 5 %): pairs with a grayscale image carried
most of a trained model's errors. On version 2 (260 x 20 / 200 x 4, seed 0) raw pixels give 70.8 %
and MobileFaceNet after 3 epochs (`cosface demo`) 92.4 %.
"""
from cosface.data.synthetic.baseline import raw_pixel_baseline
from cosface.data.synthetic.writer import GENERATOR_VERSION, generate

__all__ = ["GENERATOR_VERSION", "generate", "raw_pixel_baseline"]
