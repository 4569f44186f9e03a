"""hubertkit: HuBERT pretraining end to end, file-compatible with the fairseq recipe."""

from hubertkit.errors import HubertkitError

__version__ = "0.1.0"
__all__ = ["HubertkitError", "__version__", "units"]


def __getattr__(name):
    # hubertkit.units(...) without importing torch when the package is imported
    if name == "units":
        from hubertkit.recipes.discrete_units import units

        return units
    raise AttributeError(f"module 'hubertkit' has no attribute {name!r}")
