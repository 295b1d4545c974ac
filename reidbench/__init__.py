"""reidbench: ablation and benchmarking harness for object re-identification backbones."""
from reidbench.variants import create_variant, load_grid

__version__ = "0.1.0"
__all__ = ["__version__", "create_variant", "load_cell", "load_grid", "load_run", "rerank", "run_grid"]


def __getattr__(name: str) -> object:
    """Load ``rerank`` and the run API (``reidbench.api``) on first use: every ``import reidbench.x`` runs this
    file, and most never need them."""
    if name == "rerank":
        from reidbench.evaluation.rerank import rerank

        return rerank
    if name in ("run_grid", "load_run", "load_cell"):
        from reidbench import api

        return getattr(api, name)
    raise AttributeError(f"module 'reidbench' has no attribute {name!r}")
