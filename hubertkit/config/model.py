"""The HuBERT network's settings (``model.*``), with fairseq's key names and defaults.

The defaults are fairseq's ``HubertConfig``; the published architectures are the YAMLs
in ``configs/``, which ``hubertkit.config.preset()`` reads.
"""

from __future__ import annotations

import ast
import dataclasses
from dataclasses import dataclass, field

from hubertkit.config.keys import AT_LEAST_1, UNIT_INTERVAL, key
from hubertkit.errors import HubertkitError


@dataclass(frozen=True)
class HubertConfig:
    # label rate of the targets (Hz); 100 for MFCC labels, 50 for HuBERT-layer labels. fairseq's
    # is ${task.label_rate}; here the model holds it (checkpoints record it) and task.label_rate
    # -1 takes it
    label_rate: float = key(50.0, departs="the model records its label rate")
    # classes per label set: len(dictionary) including fairseq's 4 special symbols
    num_classes: list[int] = field(default_factory=lambda: [504])

    # convolutional feature extractor
    extractor_mode: str = "default"  # "default": group norm in layer 1; "layer_norm": every layer
    conv_feature_layers: str = "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2"
    conv_bias: bool = False
    feature_grad_mult: float = 1.0

    # transformer encoder
    encoder_layers: int = 12
    encoder_embed_dim: int = 768
    encoder_ffn_embed_dim: int = 3072
    encoder_attention_heads: int = 12
    activation_fn: str = "gelu"
    layer_norm_first: bool = False  # False: post-LN (Base); True: pre-LN (Large, X-Large)
    conv_pos: int = 128
    conv_pos_groups: int = 16

    # dropouts
    dropout: float = key(0.1, check=UNIT_INTERVAL)
    attention_dropout: float = key(0.1, check=UNIT_INTERVAL)
    activation_dropout: float = 0.0
    encoder_layerdrop: float = key(0.0, check=UNIT_INTERVAL)
    dropout_input: float = 0.0
    dropout_features: float = key(0.0, no_effect="fairseq's HuBERT applies it to a copy of the features that nothing reads")

    # masking over time
    mask_length: int = key(10, check=AT_LEAST_1)
    mask_prob: float = key(0.65, check=(lambda v: 0 <= v <= 1, "in [0, 1]"))
    mask_selection: str = key("static", only="only fixed-length spans (static) are implemented")
    mask_other: float = key(0.0, only="it only shapes mask_selection other than static")
    no_mask_overlap: bool = key(False, only="mask spans may overlap, as fairseq's default")
    mask_min_space: int = key(1, only="it only applies with no_mask_overlap")
    # masking over channels
    mask_channel_length: int = 10
    mask_channel_prob: float = 0.0
    mask_channel_selection: str = key("static", only="only fixed-length spans (static) are implemented")
    mask_channel_other: float = key(0.0, only="it only shapes mask_channel_selection other than static")
    no_mask_channel_overlap: bool = key(False, only="mask spans may overlap, as fairseq's default")
    mask_channel_min_space: int = key(1, only="it only applies with no_mask_channel_overlap")

    # prediction head
    final_dim: int = 0  # 0: encoder_embed_dim
    untie_final_proj: bool = False
    logit_temp: float = 0.1
    target_glu: bool = False
    skip_masked: bool = False
    skip_nomask: bool = False

    # disentangling variant (docs/disentangle.md); layers are 1-based, 0 = no head
    speaker_layer: int = 0  # the layer whose pooled output feeds the speaker adversary
    num_speakers: int = 0  # len(dict.spk.txt); the trainer sets it
    grl_scale: float = 1.0  # gradient-reversal strength after the warm-up
    grl_warmup_updates: int = 0  # linear ramp of the reversal from 0
    pitch_layer: int = 0  # the layer that feeds the pitch output

    @property
    def conv_layers(self) -> list[tuple[int, int, int]]:
        return parse_conv_layers(self.conv_feature_layers)

    @property
    def downsample(self) -> int:
        """Samples per output frame (320 for the standard stack: 20 ms at 16 kHz)."""
        out = 1
        for _, _, stride in self.conv_layers:
            out *= stride
        return out

    @property
    def receptive_field(self) -> int:
        """Samples needed for one output frame (400 for the standard stack)."""
        field_, jump = 1, 1
        for _, kernel, stride in self.conv_layers:
            field_ += (kernel - 1) * jump
            jump *= stride
        return field_

    def validate(self) -> "HubertConfig":
        if self.extractor_mode not in ("default", "layer_norm"):
            raise HubertkitError(f"model.extractor_mode must be 'default' or 'layer_norm', got {self.extractor_mode!r}")
        if self.encoder_embed_dim % self.encoder_attention_heads:
            raise HubertkitError(
                f"model.encoder_embed_dim={self.encoder_embed_dim} is not divisible by "
                f"model.encoder_attention_heads={self.encoder_attention_heads}"
            )
        if self.activation_fn not in ("gelu", "relu"):
            raise HubertkitError(f"model.activation_fn must be 'gelu' or 'relu', got {self.activation_fn!r}")
        if not self.num_classes or min(self.num_classes) < 1:
            raise HubertkitError(f"model.num_classes must list at least one positive class count, got {self.num_classes}")
        for name in ("speaker_layer", "pitch_layer"):
            if not 0 <= getattr(self, name) <= self.encoder_layers:
                raise HubertkitError(f"model.{name} must be in 0..{self.encoder_layers} (0: no head), got {getattr(self, name)}")
        self.conv_layers  # parses
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def without_heads(self) -> "HubertConfig":
        """The plain HuBERT part: what fairseq and transformers layouts can hold."""
        return dataclasses.replace(self, speaker_layer=0, pitch_layer=0, num_speakers=0)

    @classmethod
    def from_dict(cls, d: dict) -> "HubertConfig":
        """Known keys only; fairseq checkpoints carry many keys that do not shape the model."""
        known = {f.name: f.type for f in dataclasses.fields(cls)}
        for name, value in d.items():
            if name in known and not _of_type(value, known[name]):
                raise HubertkitError(f"model.{name} must be {_TYPE_NAMES[known[name]]}, got {value!r}")
        return cls(**{k: v for k, v in d.items() if k in known}).validate()


_TYPE_NAMES = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string",
               "list[int]": "a list of integers"}


def _of_type(value, type_name: str) -> bool:
    """Whether ``value`` (read from a checkpoint's config) has the field's declared type."""
    def integer(v):
        return isinstance(v, int) and not isinstance(v, bool)

    return {"int": integer, "float": lambda v: integer(v) or isinstance(v, float), "bool": lambda v: isinstance(v, bool),
            "str": lambda v: isinstance(v, str),
            "list[int]": lambda v: isinstance(v, (list, tuple)) and all(integer(x) for x in v)}[type_name](value)


# bounds that no real conv stack approaches (fairseq's has 7 layers of 512), so that a
# mistyped spec is refused instead of allocating without bound
MAX_CONV_LAYERS, MAX_CONV_DIM, MAX_CONV_KERNEL = 64, 65536, 4096


def parse_conv_layers(spec: str) -> list[tuple[int, int, int]]:
    """fairseq writes the conv stack as a Python expression (``[(512,10,5)] + [(512,3,2)] * 4``);
    evaluate literals, ``+`` and ``*`` only, never arbitrary code."""

    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [ev(e) for e in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            left, right = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Mult) and any(isinstance(v, int) and v > MAX_CONV_LAYERS for v in (left, right)):
                raise ValueError(f"a repeat count above {MAX_CONV_LAYERS} layers")  # before the list is built
            return left + right if isinstance(node.op, ast.Add) else left * right
        raise ValueError(ast.dump(node))

    try:
        layers = ev(ast.parse(spec, mode="eval"))
        layers = [tuple(int(v) for v in layer) for layer in layers]
        if not layers or any(len(layer) != 3 for layer in layers):
            raise ValueError("need (dim, kernel, stride) triples")
        if len(layers) > MAX_CONV_LAYERS:
            raise ValueError(f"{len(layers)} layers; at most {MAX_CONV_LAYERS}")
        for dim, kernel, stride in layers:
            if not (1 <= dim <= MAX_CONV_DIM and 1 <= kernel <= MAX_CONV_KERNEL and 1 <= stride <= MAX_CONV_KERNEL):
                raise ValueError(f"({dim}, {kernel}, {stride}): dims must be in 1..{MAX_CONV_DIM}, kernels and strides "
                                 f"in 1..{MAX_CONV_KERNEL}")
    except (SyntaxError, ValueError, TypeError) as e:
        raise HubertkitError(f"model.conv_feature_layers {spec!r} is not a list of (dim, kernel, stride): {e}") from None
    return layers
