"""The multi-modal synthetic set's former module path, kept for the importers that still name it.

The set's code is :mod:`reidbench.data.synthetic.rgbnt`; import its names from
:mod:`reidbench.data.synthetic` instead.
"""
from reidbench.data.synthetic.rgbnt import (
    DEFAULT_MULTIMODAL_PARAMS, MODALITIES, MODALITY_FOLDERS, TEST_FOLDER, TRAIN_FOLDER, MultimodalParams,
    default_multimodal_root, ensure_multimodal_synthetic, generate_multimodal_synthetic, multimodal_version,
    read_multimodal_manifest,
)

__all__ = [
    "DEFAULT_MULTIMODAL_PARAMS",
    "MODALITIES",
    "MODALITY_FOLDERS",
    "TEST_FOLDER",
    "TRAIN_FOLDER",
    "MultimodalParams",
    "default_multimodal_root",
    "ensure_multimodal_synthetic",
    "generate_multimodal_synthetic",
    "multimodal_version",
    "read_multimodal_manifest",
]
