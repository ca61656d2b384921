"""Datamodules: one module per data family, all batching in-memory tensors by indexing."""

from whylearn.data.base import ChunkLoader, EvalLoader, InMemoryDataModule, Split, apply_label_noise
from whylearn.data.idx import FashionMNISTDataModule, MNISTDataModule
from whylearn.data.kepler import KeplerDataModule
from whylearn.data.mnist1d import MNIST1DDataModule, make_mnist1d
from whylearn.data.placeholder import NoDataModule
from whylearn.data.toy import PatternsDataModule, RegressionDataModule, ToyDataModule

__all__ = [
    "ChunkLoader", "EvalLoader", "InMemoryDataModule", "Split", "apply_label_noise",
    "MNIST1DDataModule", "make_mnist1d", "MNISTDataModule", "FashionMNISTDataModule",
    "KeplerDataModule", "NoDataModule",
    "ToyDataModule", "PatternsDataModule", "RegressionDataModule",
]
