"""The HuBERT network (fairseq's ``HubertModel``), its presets and checkpoint conversion."""

from hubertkit.config import HubertConfig, preset
from hubertkit.model.hubert import HubertModel

__all__ = ["HubertConfig", "HubertModel", "preset"]
