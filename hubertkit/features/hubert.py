"""Features from a HuBERT layer, for the next iteration's labels: fairseq's
``dump_hubert_feature.py`` (unmasked, ``output_layer=LAYER``, long audio in chunks)."""

from __future__ import annotations

import os

import numpy as np
import torch

from hubertkit.errors import HubertkitError
from hubertkit.features.dump import DumpSummary, dump_features
from hubertkit.model.io import load_model

MAX_CHUNK = 1_600_000  # samples encoded at once (fairseq's dump_hubert_feature.py default)


class HubertLayerFeatures:
    """``(waveform) -> [frames, dim]`` of layer ``layer`` (1-based) of a checkpoint."""

    def __init__(self, ckpt: str | os.PathLike, layer: int, max_chunk: int = MAX_CHUNK, trust_pickle: bool = False,
                 device: str | None = None):
        self.model = load_model(ckpt, trust_pickle)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.to(self.device)
        self.layer, self.max_chunk = layer, max_chunk
        self.dim = self.model.cfg.encoder_embed_dim
        if not 1 <= layer <= self.model.cfg.encoder_layers:  # now, not at the first utterance
            raise HubertkitError(f"LAYER must be in 1..{self.model.cfg.encoder_layers} for {ckpt}, got {layer}")
        if max_chunk < self.model.cfg.receptive_field:  # a chunk shorter than one frame's window yields nothing
            raise HubertkitError(f"--max-chunk must be at least the model's receptive field, "
                                 f"{self.model.cfg.receptive_field} samples, got {max_chunk}")

    @torch.inference_mode()
    def __call__(self, wav: np.ndarray) -> np.ndarray:
        if len(wav) < self.model.cfg.receptive_field:  # no frame, as MFCC
            return np.zeros((0, self.dim), dtype=np.float32)
        x = self.model.prepare(torch.from_numpy(wav).to(self.device))
        feats, _ = self.model.extract_features(x[None], layer=self.layer, max_chunk=self.max_chunk)
        return feats[0].float().cpu().numpy()


def dump_hubert(tsv_dir, split, ckpt, layer: int, nshard: int, rank, feat_dir, max_chunk: int = MAX_CHUNK,
                jobs: int = 1, trust_pickle: bool = False, progress: bool = True) -> DumpSummary:
    """``dump-hubert TSV_DIR SPLIT CKPT LAYER NSHARD RANK FEAT_DIR``: same shard format as MFCC."""
    reader = HubertLayerFeatures(ckpt, layer, max_chunk, trust_pickle)
    return dump_features(tsv_dir, split, nshard, rank, feat_dir, reader, reader.dim, jobs, progress)
