"""Data layer: raw readers, preprocessing, caching, protocols and label-rate splits."""

from fedhar.data.config import DatasetConfig
from fedhar.data.dataset import DatasetInfo, HARDataset, ModalitySpec
from fedhar.data.download import fetch_dataset
from fedhar.data.experiment import ExperimentData, prepare_experiment
from fedhar.data.federation import DataSummary, FederationData, build_client_partition, merge_summaries
from fedhar.data.loading import load_dataset, load_dataset_with_report
from fedhar.data.manifest import Manifest, VerifyReport, build_manifest, load_manifest, verify_folder
from fedhar.data.normalization import Normalizer, NormStats, fit_normalizer
from fedhar.data.partition import ClientPartition, partition_by_subject, partition_ids
from fedhar.data.protocol import Protocol, resolve_protocol
from fedhar.data.raw_io import LoadReport
from fedhar.data.splits import LabelSplit, make_label_split, split_sizes
from fedhar.data.synthetic import make_synthetic

__all__ = [
    "ClientPartition",
    "DataSummary",
    "DatasetConfig",
    "DatasetInfo",
    "ExperimentData",
    "FederationData",
    "HARDataset",
    "LabelSplit",
    "LoadReport",
    "Manifest",
    "ModalitySpec",
    "NormStats",
    "Normalizer",
    "Protocol",
    "VerifyReport",
    "build_client_partition",
    "build_manifest",
    "fetch_dataset",
    "fit_normalizer",
    "load_dataset",
    "load_dataset_with_report",
    "load_manifest",
    "make_label_split",
    "make_synthetic",
    "merge_summaries",
    "partition_by_subject",
    "partition_ids",
    "prepare_experiment",
    "resolve_protocol",
    "split_sizes",
    "verify_folder",
]
