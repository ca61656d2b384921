"""Datamodules: one module per data family, all batching in-memory tensors by indexing."""

from whylearn.data.augment import Augment, AugmentMixin
from whylearn.data.base import Chunk, ChunkLoader, EvalLoader, InMemoryDataModule, Split, apply_label_noise
from whylearn.data.cifar import CIFAR10DataModule, load_cifar10
from whylearn.data.corruptions import CORRUPTIONS, CorruptionMixin, with_corruption
from whylearn.data.idx import FashionMNISTDataModule, MNISTDataModule
from whylearn.data.kepler import KeplerDataModule
from whylearn.data.mnist1d import MNIST1DDataModule, make_mnist1d
from whylearn.data.modular import ModularArithmeticDataModule, modular_table
from whylearn.data.shift import ShiftAugmentMixin, ShiftedMNIST1DDataModule, random_roll
from whylearn.data.text import BPETokenizer, CharTokenizer, TextDataModule
from whylearn.data.toy import PatternsDataModule, RegressionDataModule, ToyDataModule
from whylearn.data.vision import CorruptedFashionMNISTDataModule, CorruptedMNISTDataModule

__all__ = [
    "Chunk", "ChunkLoader", "EvalLoader", "InMemoryDataModule", "Split", "apply_label_noise",
    "MNIST1DDataModule", "make_mnist1d", "MNISTDataModule", "FashionMNISTDataModule",
    "KeplerDataModule",
    "ToyDataModule", "PatternsDataModule", "RegressionDataModule",
    "CIFAR10DataModule", "load_cifar10", "CORRUPTIONS", "CorruptionMixin", "with_corruption", "Augment", "AugmentMixin",
    "CorruptedMNISTDataModule", "CorruptedFashionMNISTDataModule",
    "ModularArithmeticDataModule", "modular_table", "TextDataModule", "CharTokenizer", "BPETokenizer",
    "ShiftAugmentMixin", "ShiftedMNIST1DDataModule", "random_roll",
]
