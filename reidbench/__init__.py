"""reidbench: ablation and benchmarking harness for object re-identification backbones."""
from reidbench.variants import create_variant, load_grid

__version__ = "0.1.0"
__all__ = ["__version__", "create_variant", "load_grid", "rerank"]


def __getattr__(name: str) -> object:
    """Load ``rerank`` on first use: every ``import reidbench.x`` runs this file, and most never need it."""
    if name == "rerank":
        from reidbench.evaluation.rerank import rerank

        return rerank
    raise AttributeError(f"module 'reidbench' has no attribute {name!r}")
