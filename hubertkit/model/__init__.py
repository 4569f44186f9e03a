"""The HuBERT network (fairseq's ``HubertModel``), its presets and checkpoint conversion."""

from hubertkit.config import HubertConfig, preset
from hubertkit.model.disentangle import DisentangledHubert, build_hubert
from hubertkit.model.hubert import HubertModel

__all__ = ["DisentangledHubert", "HubertConfig", "HubertModel", "build_hubert", "preset"]
