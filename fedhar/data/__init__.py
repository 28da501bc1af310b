"""Data layer: raw readers, preprocessing, caching, protocols and label-rate splits."""

from fedhar.data.config import DatasetConfig
from fedhar.data.dataset import DatasetInfo, HARDataset, ModalitySpec

__all__ = ["DatasetConfig", "DatasetInfo", "HARDataset", "ModalitySpec"]
