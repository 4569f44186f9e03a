"""hubertkit: HuBERT pretraining end to end, file-compatible with the fairseq recipe."""

from hubertkit.errors import HubertkitError

__version__ = "0.1.0"
__all__ = ["HubertkitError", "__version__", "abx", "units"]


def __getattr__(name):
    # hubertkit.units(...), hubertkit.abx(...) without importing torch when the package is imported
    if name == "units":
        from hubertkit.recipes.discrete_units import units

        return units
    if name == "abx":
        from hubertkit.recipes.abx import abx

        return abx
    raise AttributeError(f"module 'hubertkit' has no attribute {name!r}")
