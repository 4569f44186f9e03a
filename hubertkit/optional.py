"""Optional dependencies, imported where they are used, with the extra to install named
when they are missing."""

from __future__ import annotations

from hubertkit.errors import HubertkitError


def require_transformers(*names: str) -> list:
    try:
        import transformers
    except ImportError:
        raise HubertkitError("unit-BART is built on transformers: pip install 'hubertkit[asr]'") from None
    return [getattr(transformers, n) for n in names]


def require(module: str, extra: str):
    """``import module``, or a message naming the extra that installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise HubertkitError(f"this needs {module}: pip install 'hubertkit[{extra}]'") from None
