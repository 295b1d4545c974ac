"""reidbench: ablation and benchmarking harness for object re-identification backbones."""
from reidbench.variants import create_variant, load_grid

__version__ = "0.1.0"
__all__ = ["__version__", "create_variant", "load_grid"]
