"""Datasets of the companion: 2D toys with exact densities, CIFAR-10, CelebA (Mathematics §6), and data roots.

Data root: ``data_root(root)`` = the argument, else env ``KPE_DATA``, else ``~/.cache/kpe_lib/data``
(``XDG_CACHE_HOME`` honoured). Image loaders return ``ImageData`` (images (N, C, H, W) float32 and what was
subtracted from them); a missing or corrupt file raises one ``DataError`` (a ``FileNotFoundError``) that
says what was looked for, where, and how to get it.

Example:
    >>> from kpe_lib.data import load_celeba, load_cifar10, toy_dataset
    >>> train = load_celeba(n=1024)                  # doctest: +SKIP
    >>> cifar = load_cifar10(split="test", n=500)    # doctest: +SKIP
"""
from kpe_lib.data.celeba import celeba_files, decode_image, load_celeba
from kpe_lib.data.cifar10 import CIFAR10_CLASSES, download_cifar10, load_cifar10
from kpe_lib.data.images import LUMA_601, ImageData, preprocess
from kpe_lib.data.roots import ChecksumError, DataError, PartialDataWarning, cache_root, data_root, natural_sorted
from kpe_lib.data.toy2d import TOY_NAMES, Checkerboard, EightGaussians, Rings, Toy2D, TwoMoons, toy_dataset

__all__ = [
    "data_root",
    "cache_root",
    "natural_sorted",
    "DataError",
    "ChecksumError",
    "PartialDataWarning",
    "ImageData",
    "preprocess",
    "LUMA_601",
    "load_cifar10",
    "download_cifar10",
    "CIFAR10_CLASSES",
    "load_celeba",
    "celeba_files",
    "decode_image",
    "Toy2D",
    "EightGaussians",
    "TwoMoons",
    "Checkerboard",
    "Rings",
    "TOY_NAMES",
    "toy_dataset",
]
