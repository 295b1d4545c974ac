"""Datasets on disk -> records: the ReID formats reidbench reads and its synthetic default set.

Nothing here opens an image; transforms, samplers and data loaders build on
the :class:`ReidDataset` records.
"""
from reidbench.data.formats import (
    DATASET_KINDS, NATIVE_SIZES, load_dataset, load_dukemtmc, load_market1501, load_msmt17, load_synthetic, load_veri776,
    native_size, parse_dataset_spec,
)
from reidbench.data.multimodal import load_msvr310, load_rgbnt100, load_rgbnt201
from reidbench.data.records import DISTRACTOR_PID, JUNK_PID, PERSON_SIZE, ImageRecord, ReidDataset
from reidbench.data.synthetic import (
    DEFAULT_PARAMS, SyntheticParams, default_synthetic_root, ensure_synthetic, generate_synthetic, read_manifest,
)

__all__ = [
    "DATASET_KINDS",
    "DEFAULT_PARAMS",
    "DISTRACTOR_PID",
    "JUNK_PID",
    "ImageRecord",
    "NATIVE_SIZES",
    "PERSON_SIZE",
    "ReidDataset",
    "SyntheticParams",
    "default_synthetic_root",
    "ensure_synthetic",
    "generate_synthetic",
    "load_dataset",
    "load_dukemtmc",
    "load_market1501",
    "load_msmt17",
    "load_msvr310",
    "load_rgbnt100",
    "load_rgbnt201",
    "load_synthetic",
    "load_veri776",
    "native_size",
    "parse_dataset_spec",
    "read_manifest",
]
