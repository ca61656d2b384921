"""Datamodules: one module per data family, all batching in-memory tensors by indexing."""

from whylearn.data.base import ChunkLoader, EvalLoader, InMemoryDataModule, Split, apply_label_noise
from whylearn.data.idx import FashionMNISTDataModule, MNISTDataModule
from whylearn.data.modular import ModularArithmeticDataModule, modular_table
from whylearn.data.text import BPETokenizer, CharTokenizer, TextDataModule
from whylearn.data.mnist1d import MNIST1DDataModule, make_mnist1d

__all__ = [
    "ChunkLoader", "EvalLoader", "InMemoryDataModule", "Split", "apply_label_noise",
    "MNIST1DDataModule", "make_mnist1d", "MNISTDataModule", "FashionMNISTDataModule",
    "ModularArithmeticDataModule", "modular_table", "TextDataModule", "CharTokenizer", "BPETokenizer",
]
