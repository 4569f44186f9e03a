"""HuBERT (Hsu et al., 2021) as fairseq defines it, in plain PyTorch.

waveform ─▶ FeatureExtractor (conv stack, 20 ms frames) ─▶ LayerNorm ─▶ projection
  ─▶ masking (learned mask embedding on spans) ─▶ Encoder (conv positional embedding +
  Transformer layers, post- or pre-LN) ─▶ final_proj ─▶ cosine similarity with the
  label embeddings / logit_temp ─▶ logits over the k-means classes.

Parameter names follow fairseq's, so fairseq state dicts load with a key rename only
where fairseq's module nesting is an artefact (see ``model/convert.py``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hubertkit.config.model import HubertConfig
from hubertkit.data.audio import standardize
from hubertkit.errors import HubertkitError
from hubertkit.model.gradient import scale_gradient
from hubertkit.model.masking import draw_masks, feat2tar_ratio, frame_padding, labelled_frames


class ConvLayer(nn.Module):
    """Conv1d → (GroupNorm | LayerNorm over channels | nothing) → GELU, in float32 norms."""

    def __init__(self, in_dim: int, out_dim: int, kernel: int, stride: int, norm: str, bias: bool):
        super().__init__()
        self.conv = nn.Conv1d(in_dim, out_dim, kernel, stride=stride, bias=bias)
        nn.init.kaiming_normal_(self.conv.weight)
        self.norm_kind = norm
        if norm == "group":
            self.norm = nn.GroupNorm(out_dim, out_dim, affine=True)
        elif norm == "layer":
            self.norm = nn.LayerNorm(out_dim, elementwise_affine=True)
        else:
            self.norm = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        n = self.norm
        if self.norm_kind == "group":
            y = F.group_norm(y.float(), n.num_groups, n.weight.float(), n.bias.float(), n.eps).type_as(y)
        elif self.norm_kind == "layer":
            z = F.layer_norm(y.float().transpose(1, 2), n.normalized_shape, n.weight.float(), n.bias.float(), n.eps)
            y = z.transpose(1, 2).type_as(y)
        return F.gelu(y)


class FeatureExtractor(nn.Module):
    """The waveform encoder: 7 strided convolutions, 320× downsampling for the standard stack."""

    def __init__(self, cfg: HubertConfig):
        super().__init__()
        layers, in_dim = [], 1
        for i, (dim, kernel, stride) in enumerate(cfg.conv_layers):
            if cfg.extractor_mode == "layer_norm":
                norm = "layer"
            else:
                norm = "group" if i == 0 else "none"
            layers.append(ConvLayer(in_dim, dim, kernel, stride, norm, cfg.conv_bias))
            in_dim = dim
        self.conv_layers = nn.ModuleList(layers)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        x = wav.unsqueeze(1)
        for layer in self.conv_layers:
            x = layer(x)
        return x  # [batch, channels, frames]


class PositionalConvEmbedding(nn.Module):
    """Grouped convolution over time with weight normalisation (norm over all dims but
    the kernel position, fairseq's ``weight_norm(dim=2)``), same padding, GELU."""

    def __init__(self, dim: int, kernel: int, groups: int, dropout: float):
        super().__init__()
        self.kernel, self.groups = kernel, groups
        std = math.sqrt(4 * (1.0 - dropout) / (kernel * dim))
        v = torch.randn(dim, dim // groups, kernel) * std
        self.weight_v = nn.Parameter(v)
        self.weight_g = nn.Parameter(v.norm(dim=(0, 1), keepdim=True))
        self.bias = nn.Parameter(torch.zeros(dim))

    def weight(self) -> torch.Tensor:
        return self.weight_g * self.weight_v / self.weight_v.norm(dim=(0, 1), keepdim=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: [batch, frames, dim] → the same shape."""
        y = F.conv1d(x.transpose(1, 2), self.weight().to(x.dtype), self.bias.to(x.dtype), padding=self.kernel // 2, groups=self.groups)
        if self.kernel % 2 == 0:
            y = y[:, :, :-1]
        return F.gelu(y).transpose(1, 2)


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = (p(x).view(b, t, self.heads, d // self.heads).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        mask = None if padding_mask is None else ~padding_mask[:, None, None, :]  # True = attend
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(y.transpose(1, 2).reshape(b, t, d))


class EncoderLayer(nn.Module):
    """Self-attention and feed-forward blocks with residuals; LayerNorm after each block
    (post-LN, Base) or before it (pre-LN, Large)."""

    def __init__(self, cfg: HubertConfig):
        super().__init__()
        d = cfg.encoder_embed_dim
        self.layer_norm_first = cfg.layer_norm_first
        self.self_attn = SelfAttention(d, cfg.encoder_attention_heads, cfg.attention_dropout)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, cfg.encoder_ffn_embed_dim)
        self.fc2 = nn.Linear(cfg.encoder_ffn_embed_dim, d)
        self.final_layer_norm = nn.LayerNorm(d)
        self.activation = F.gelu if cfg.activation_fn == "gelu" else F.relu
        self.dropout = nn.Dropout(cfg.dropout)
        self.activation_dropout = nn.Dropout(cfg.activation_dropout)

    def _ffn(self, x):
        return self.dropout(self.fc2(self.activation_dropout(self.activation(self.fc1(x)))))

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None) -> torch.Tensor:
        if self.layer_norm_first:
            x = x + self.dropout(self.self_attn(self.self_attn_layer_norm(x), padding_mask))
            return x + self._ffn(self.final_layer_norm(x))
        x = self.self_attn_layer_norm(x + self.dropout(self.self_attn(x, padding_mask)))
        return self.final_layer_norm(x + self._ffn(x))


class Encoder(nn.Module):
    def __init__(self, cfg: HubertConfig):
        super().__init__()
        self.pos_conv = PositionalConvEmbedding(cfg.encoder_embed_dim, cfg.conv_pos, cfg.conv_pos_groups, cfg.dropout)
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.encoder_layers))
        self.layer_norm = nn.LayerNorm(cfg.encoder_embed_dim)
        self.layer_norm_first = cfg.layer_norm_first
        self.dropout = nn.Dropout(cfg.dropout)
        self.layerdrop = cfg.encoder_layerdrop

    def forward(
        self, x: torch.Tensor, padding_mask: torch.Tensor | None = None, layer: int | None = None, return_all: bool = False
    ) -> torch.Tensor | list[torch.Tensor]:
        """Output of layer ``layer`` (1-based, as fairseq's ``output_layer``) or of the
        whole stack (then with the final LayerNorm in pre-LN models). With
        ``return_all``, the input to layer 1 and every layer's own output (no final
        LayerNorm: what ``extract_features(layer=L)`` gives for each L)."""
        if padding_mask is not None:
            x = x.masked_fill(padding_mask[..., None], 0.0)
        x = x + self.pos_conv(x)
        if not self.layer_norm_first:
            x = self.layer_norm(x)
        x = self.dropout(x)
        outputs = [x]
        for i, block in enumerate(self.layers, start=1):
            if not (self.training and self.layerdrop > 0 and torch.rand(()).item() < self.layerdrop):
                x = block(x, padding_mask)
            outputs.append(x)
            if layer is not None and i == layer:
                break
        if return_all:
            return outputs
        if layer is None and self.layer_norm_first:
            x = self.layer_norm(x)
        return x


class HubertModel(nn.Module):
    HEADS = False  # the disentangling variant (``model/disentangle.py``) adds heads to this model

    def __init__(self, cfg: HubertConfig):
        super().__init__()
        self.cfg = cfg.validate()
        conv_dim = cfg.conv_layers[-1][0]
        d = cfg.encoder_embed_dim
        final_dim = cfg.final_dim or d
        self.feature_extractor = FeatureExtractor(cfg)
        self.layer_norm = nn.LayerNorm(conv_dim)
        self.post_extract_proj = nn.Linear(conv_dim, d) if conv_dim != d else None
        # fairseq's dropout_features only acts on a tensor HuBERT's loss never uses.
        self.dropout_input = nn.Dropout(cfg.dropout_input)
        self.mask_emb = nn.Parameter(torch.empty(d).uniform_())
        self.encoder = Encoder(cfg)
        n_sets = len(cfg.num_classes)
        self.final_proj = nn.Linear(d, final_dim * n_sets if cfg.untie_final_proj else final_dim)
        if cfg.target_glu:
            raise HubertkitError("model.target_glu is not supported")
        self.label_embs_concat = nn.Parameter(torch.empty(sum(cfg.num_classes), final_dim).uniform_())
        self.apply(init_bert_params)
        if (cfg.speaker_layer or cfg.pitch_layer) and not self.HEADS:
            raise HubertkitError("model.speaker_layer / model.pitch_layer configure the disentangling variant: build it "
                                 "with hubertkit.model.build_hubert(cfg) (DisentangledHubert)")

    def compile_parts(self, backend: str) -> None:
        """``torch.compile`` the convolutional feature extractor and the Transformer in
        place, for any batch size and length (one graph each, no recompile per length);
        their weights keep their names, so checkpoints are the same as an eager model's.
        Masking, label selection and the loss stay eager: they depend on the data."""
        self.feature_extractor.compile(backend=backend, dynamic=True)
        self.encoder.compile(backend=backend, dynamic=True)

    def remove_pretraining_modules(self) -> None:
        """Drop what only pretraining uses (fairseq's method of the same name): a
        fine-tuned encoder has no label embeddings or projection to them."""
        self.final_proj = None
        self.label_embs_concat = None

    def prepare(self, wav: torch.Tensor) -> torch.Tensor:
        """One utterance's waveform (any shape holding one utterance, at ``SAMPLE_RATE``)
        as this model reads it: standardised if it was trained so, else as it is."""
        return standardize(wav) if self.cfg.normalize else wav

    # -- the pieces --------------------------------------------------------------------

    @property
    def feat2tar_ratio(self) -> float:
        """Label frames per feature frame: 2 for 100 Hz labels, 1 for 50 Hz."""
        return feat2tar_ratio(self.cfg)

    def check_input(self, wav: torch.Tensor) -> None:
        if not isinstance(wav, torch.Tensor) or wav.dim() != 2 or not wav.is_floating_point():
            raise HubertkitError(
                f"expected a float waveform batch [batch, samples], got "
                f"{tuple(wav.shape) if isinstance(wav, torch.Tensor) else type(wav).__name__}"
                f"{'' if not isinstance(wav, torch.Tensor) else ' of ' + str(wav.dtype)}"
            )
        if wav.shape[1] < self.cfg.receptive_field:
            raise HubertkitError(
                f"audio of {wav.shape[1]} samples is shorter than one frame's receptive field ({self.cfg.receptive_field} samples)"
            )
        if not torch.isfinite(wav).all():
            raise HubertkitError("the waveform contains NaN or infinite samples")

    def conv_features(self, wav: torch.Tensor) -> torch.Tensor:
        """``[batch, channels, frames]``; the gradient into the conv stack is scaled by
        ``feature_grad_mult`` (0 freezes it)."""
        mult = self.cfg.feature_grad_mult
        if mult == 0 or not torch.is_grad_enabled():
            with torch.no_grad():
                return self.feature_extractor(wav)
        feats = self.feature_extractor(wav)
        return feats if mult == 1.0 else scale_gradient(feats, mult)

    def align_targets(self, frames: int, targets: list[torch.Tensor]) -> tuple[int, list[torch.Tensor]]:
        """Cut features so each has a label, and pick the label of each frame
        (every ``feat2tar_ratio``-th label, as fairseq)."""
        frames = labelled_frames(self.cfg, frames, min(t.shape[1] for t in targets))
        idx = (torch.arange(frames).float() * self.feat2tar_ratio).long().to(targets[0].device)
        return frames, [t[:, idx] for t in targets]

    def apply_mask(self, x, padding_mask, generator=None, masks=None):
        """``x`` with masked frames replaced by the mask embedding and masked channels
        zeroed; ``masks``: drawn beforehand (``masking.batch_masks``, by a DataLoader
        worker), else drawn here from ``generator``."""
        b, t, _ = x.shape
        if masks is None:
            masks = draw_masks(self.cfg, b, t, padding_mask, generator)
        elif masks[0] is not None and tuple(masks[0].shape) != (b, t):
            raise HubertkitError(f"a mask drawn for {tuple(masks[0].shape)} frames was given for {(b, t)}")
        mask, channels = masks
        if mask is not None:
            mask = mask.to(x.device)
            x = torch.where(mask[..., None], self.mask_emb.to(x.dtype), x)
        if channels is not None:
            x = x.masked_fill(channels.to(x.device)[:, None, :], 0.0)
        return x, mask

    def logits(self, x: torch.Tensor, label_set: int) -> torch.Tensor:
        """Cosine similarity of the projected frames ``x`` [N, D] with every label
        embedding of ``label_set``, over ``logit_temp``: [N, classes], in float32.

        fairseq scores the target against all classes with the target's own column
        set to −inf and class 0 = the target; the cross-entropy is the same.
        """
        embs = self.label_embs_concat.split(self.cfg.num_classes, 0)[label_set]
        with torch.autocast(x.device.type, enabled=False):  # a 1/0.1 temperature needs float32
            cos = F.normalize(x.float(), dim=-1, eps=1e-8) @ F.normalize(embs.float(), dim=-1, eps=1e-8).T
        return cos / self.cfg.logit_temp

    # -- forward -------------------------------------------------------------------------

    def _project(self, feats: torch.Tensor, padding_mask: torch.Tensor | None):
        """Conv features [B, C, T] → LayerNorm → projection: the encoder's input [B, T, D]."""
        x = self.layer_norm(feats.transpose(1, 2))
        if padding_mask is not None:
            padding_mask = frame_padding(padding_mask, x.shape[1])
        if self.post_extract_proj is not None:
            x = self.post_extract_proj(x)
        return x, padding_mask

    def encode(self, feats: torch.Tensor, padding_mask: torch.Tensor | None = None, mask: bool = False,
               generator: torch.Generator | None = None, all_layers: bool = False, masks=None):
        """Conv features [B, C, T] → the encoder's output [B, T, D] (masked if asked), the
        frame padding mask, the mask, and (``all_layers``) every layer's output."""
        x, padding_mask = self._project(feats, padding_mask)
        x = self.dropout_input(x)
        mask_indices = None
        if mask:
            x, mask_indices = self.apply_mask(x, padding_mask, generator, masks)
        if not all_layers:
            return self.encoder(x, padding_mask), padding_mask, mask_indices, None
        layers = self.encoder(x, padding_mask, return_all=True)
        x = self.encoder.layer_norm(layers[-1]) if self.cfg.layer_norm_first else layers[-1]
        return x, padding_mask, mask_indices, layers

    def forward(
        self,
        wav: torch.Tensor,
        targets: list[torch.Tensor] | None = None,
        padding_mask: torch.Tensor | None = None,
        mask: bool = True,
        generator: torch.Generator | None = None,
        num_updates: int = 0,
        all_layers: bool = False,
        masks: tuple[torch.Tensor | None, torch.Tensor | None] | None = None,
    ) -> dict:
        """Pretraining forward. Returns per label set the logits of masked and unmasked
        frames (``logit_m_list``, ``logit_u_list``) with their targets
        (``target_m_list``, ``target_u_list``), and ``features_pen``; with ``all_layers``,
        every layer's output (``layers``) for heads that read inside the encoder.
        ``num_updates`` (completed updates) is for such heads' schedules; HuBERT's own
        loss does not depend on it. ``masks``: the time and channel masks, drawn
        beforehand from the batch's shapes (``masking.batch_masks``); else drawn here."""
        self.check_input(wav)
        feats = self.conv_features(wav)
        if targets is not None:
            frames, targets = self.align_targets(feats.shape[2], targets)
            feats = feats[..., :frames]
            for t, classes in zip(targets, self.cfg.num_classes):
                if t.numel() and (t.min() < 0 or t.max() >= classes):
                    raise HubertkitError(
                        f"labels range over {int(t.min())}..{int(t.max())} but the dictionary has {classes} classes"
                    )
        features_pen = feats.float().pow(2).mean()
        x, padding_mask, mask_indices, layers = self.encode(feats, padding_mask, mask, generator, all_layers, masks)
        out = {"x": x, "padding_mask": padding_mask, "features_pen": features_pen, "mask_indices": mask_indices}
        if all_layers:
            out["layers"] = layers
        if targets is None:
            return out
        valid = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device) if padding_mask is None else ~padding_mask
        masked = valid & mask_indices if mask_indices is not None else torch.zeros_like(valid)
        n_sets = len(targets)
        for kind, select, skip in (("m", masked, self.cfg.skip_masked), ("u", valid & ~masked, self.cfg.skip_nomask)):
            logits, labels = [], []
            if not skip:
                proj = self.final_proj(x[select])
                projs = proj.chunk(n_sets, dim=-1) if self.cfg.untie_final_proj else [proj] * n_sets
                for i, (p, t) in enumerate(zip(projs, targets)):
                    logits.append(self.logits(p, i))
                    labels.append(t[select])
            out[f"logit_{kind}_list"] = logits
            out[f"target_{kind}_list"] = labels
        return out

    @torch.no_grad()
    def extract_features(
        self,
        wav: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
        layer: int | None = None,
        max_chunk: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Frame representations ``[batch, frames, dim]`` of layer ``layer`` (1-based; None =
        the whole encoder), unmasked, as fairseq's ``extract_features(mask=False,
        output_layer=layer)``, and the frame padding mask.

        ``max_chunk`` (samples) encodes long audio in independent chunks whose frames
        are concatenated, as fairseq's ``dump_hubert_feature.py`` does. Unlike fairseq's
        (which loses the frames straddling each cut, one per chunk, so the labels of an
        utterance longer than ``max_chunk`` come out short of its audio), chunks start on
        frame boundaries and overlap by the receptive field less one hop: every frame of
        the whole utterance is computed exactly once.
        """
        self.check_input(wav)
        if layer is not None and not 1 <= layer <= self.cfg.encoder_layers:
            raise HubertkitError(f"layer must be in 1..{self.cfg.encoder_layers}, got {layer}")
        if max_chunk and wav.shape[1] > max_chunk:
            if padding_mask is not None:
                raise HubertkitError("max_chunk needs unpadded audio (one utterance, or equal lengths)")
            hop, overlap = self.cfg.downsample, self.cfg.receptive_field - self.cfg.downsample
            step = max(hop, (max_chunk - overlap) // hop * hop)  # whole frames per chunk
            starts = range(0, wav.shape[1] - self.cfg.receptive_field + 1, step)
            chunks = [wav[:, a : a + step + overlap] for a in starts]
            return torch.cat([self.extract_features(c, layer=layer)[0] for c in chunks], dim=1), None
        x, padding_mask = self._project(self.feature_extractor(wav), padding_mask)
        return self.encoder(x, padding_mask, layer=layer), padding_mask

    @torch.no_grad()
    def hidden_states(self, wav: torch.Tensor, padding_mask: torch.Tensor | None = None) -> list[torch.Tensor]:
        """The input to layer 1 and every layer's output, as ``transformers`` (≥ 5)
        returns ``hidden_states``; in pre-LN models the encoder's output adds the final
        LayerNorm to the last of them."""
        self.check_input(wav)
        x, padding_mask = self._project(self.feature_extractor(wav), padding_mask)
        return self.encoder(x, padding_mask, return_all=True)


def init_bert_params(module: nn.Module) -> None:
    """BERT initialisation of fairseq's encoder: N(0, 0.02) linear weights, zero biases."""
    if isinstance(module, nn.Linear):
        module.weight.data.normal_(0.0, 0.02)
        if module.bias is not None:
            module.bias.data.zero_()
