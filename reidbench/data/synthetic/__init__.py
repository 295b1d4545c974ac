"""reidbench's own synthetic ReID sets: generated on any machine, byte-identical for the same settings.

Why a package: drawing a scene, laying out a dataset and caching it on disk
change for different reasons, and two datasets share the first and the last.

* :mod:`~reidbench.data.synthetic.scene`: the renderer, stylised pedestrians
  seen by stylised cameras; its public API is what a writer builds on.
* :mod:`~reidbench.data.synthetic.market`: the default set, in Market-1501
  layout (which identity each camera sees, query / gallery / distractors / junk).
* :mod:`~reidbench.data.synthetic.rgbnt`: the multi-modal set, an RGB, a
  near-infrared and a thermal image of each scene, in RGBNT201 layout.
* :mod:`~reidbench.data.synthetic.cache`: where sets live, building them once,
  publishing atomically, recognising a set and its version by its manifest.

The names below are what callers need; the modules hold the rest.
"""
from reidbench.data.synthetic.market import (
    DEFAULT_PARAMS, SyntheticParams, default_synthetic_root, ensure_synthetic, generate_synthetic, read_manifest,
    synthetic_version,
)
from reidbench.data.synthetic.rgbnt import (
    DEFAULT_MULTIMODAL_PARAMS, MODALITIES, MODALITY_FOLDERS, TEST_FOLDER, TRAIN_FOLDER, MultimodalParams,
    default_multimodal_root, ensure_multimodal_synthetic, generate_multimodal_synthetic, multimodal_version,
    read_multimodal_manifest,
)

__all__ = [
    "DEFAULT_MULTIMODAL_PARAMS",
    "DEFAULT_PARAMS",
    "MODALITIES",
    "MODALITY_FOLDERS",
    "TEST_FOLDER",
    "TRAIN_FOLDER",
    "MultimodalParams",
    "SyntheticParams",
    "default_multimodal_root",
    "default_synthetic_root",
    "ensure_multimodal_synthetic",
    "ensure_synthetic",
    "generate_multimodal_synthetic",
    "generate_synthetic",
    "multimodal_version",
    "read_manifest",
    "read_multimodal_manifest",
    "synthetic_version",
]
