"""hubertkit: HuBERT pretraining end to end, file-compatible with the fairseq recipe."""

from hubertkit.errors import HubertkitError

__version__ = "0.1.0"
__all__ = ["HubertkitError", "__version__"]
