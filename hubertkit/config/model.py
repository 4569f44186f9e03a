"""The HuBERT network's settings (``model.*``), with fairseq's key names and defaults.

The defaults are fairseq's ``HubertConfig``; the published architectures are the YAMLs
in ``configs/``, which ``hubertkit.config.preset()`` reads.
"""

from __future__ import annotations

import ast
import dataclasses
from dataclasses import dataclass

from hubertkit.config.keys import AT_LEAST_1, UNIT_INTERVAL, key
from hubertkit.errors import HubertkitError


@dataclass(frozen=True)
class HubertConfig:
    label_rate: float = key(50.0, "frame rate of the labels in Hz: 100 for MFCC labels, 50 for labels from a HuBERT layer",
                            departs="the model records its label rate (fairseq's is ${task.label_rate})")
    num_classes: list[int] = key(factory=lambda: [504], help="classes per label set, fairseq's 4 special symbols included; "
                                 "training sets it from the label dictionaries")

    # convolutional feature extractor
    extractor_mode: str = key("default", "'default': group norm in the first conv layer (Base); 'layer_norm': layer "
                              "norm in every conv layer (Large, X-Large)")
    conv_feature_layers: str = key("[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2",
                                   "the conv stack as a Python list of (channels, kernel, stride); its strides set "
                                   "the frame rate (320 samples: 50 Hz)")
    conv_bias: bool = key(False, "whether the conv layers have biases")
    feature_grad_mult: float = key(1.0, "scales the gradient that reaches the conv stack (0 freezes it)")

    # transformer encoder
    encoder_layers: int = key(12, "Transformer layers")
    encoder_embed_dim: int = key(768, "width of the Transformer")
    encoder_ffn_embed_dim: int = key(3072, "inner width of each layer's feed-forward block")
    encoder_attention_heads: int = key(12, "attention heads per layer")
    activation_fn: str = key("gelu", "activation of the feed-forward blocks: 'gelu' or 'relu'")
    layer_norm_first: bool = key(False, "false: LayerNorm after each block (post-LN, Base); true: before it (pre-LN, "
                                        "Large, X-Large)")
    conv_pos: int = key(128, "kernel width of the convolutional positional embedding, in frames")
    conv_pos_groups: int = key(16, "groups of the convolutional positional embedding")

    # dropouts
    dropout: float = key(0.1, "dropout in the Transformer layers", check=UNIT_INTERVAL)
    attention_dropout: float = key(0.1, "dropout of the attention weights", check=UNIT_INTERVAL)
    activation_dropout: float = key(0.0, "dropout after the feed-forward activation")
    encoder_layerdrop: float = key(0.0, "probability of skipping a whole Transformer layer in training", check=UNIT_INTERVAL)
    dropout_input: float = key(0.0, "dropout of the projected conv features before masking")
    dropout_features: float = key(0.0, "dropout of the unmasked conv features",
                                  no_effect="fairseq's HuBERT applies it to a copy of the features that nothing reads")

    # masking over time
    mask_length: int = key(10, "frames per masked span", check=AT_LEAST_1)
    mask_prob: float = key(0.65, "share of frames that start a masked span (spans may overlap, so fewer frames are "
                                 "masked)", check=(lambda v: 0 <= v <= 1, "in [0, 1]"))
    mask_selection: str = key("static", "how span lengths are drawn", only="only fixed-length spans (static) are implemented")
    mask_other: float = key(0.0, "a parameter of span-length distributions other than static",
                            only="it only shapes mask_selection other than static")
    no_mask_overlap: bool = key(False, "keep masked spans apart", only="mask spans may overlap, as fairseq's default")
    mask_min_space: int = key(1, "frames between spans with no_mask_overlap", only="it only applies with no_mask_overlap")
    # masking over channels
    mask_channel_length: int = key(10, "channels per masked channel span")
    mask_channel_prob: float = key(0.0, "share of channels that start a zeroed span (0: no channel masking)")
    mask_channel_selection: str = key("static", "how channel span lengths are drawn",
                                      only="only fixed-length spans (static) are implemented")
    mask_channel_other: float = key(0.0, "a parameter of channel span-length distributions other than static",
                                    only="it only shapes mask_channel_selection other than static")
    no_mask_channel_overlap: bool = key(False, "keep channel spans apart",
                                        only="mask spans may overlap, as fairseq's default")
    mask_channel_min_space: int = key(1, "channels between spans with no_mask_channel_overlap",
                                      only="it only applies with no_mask_channel_overlap")

    # prediction head
    final_dim: int = key(0, "width of the projection compared with the label embeddings (0: encoder_embed_dim)")
    untie_final_proj: bool = key(False, "one projection per label set instead of one shared")
    logit_temp: float = key(0.1, "temperature dividing the cosine similarities")
    target_glu: bool = key(False, "a GLU on the label embeddings before scoring", only="HuBERT's recipes do not use it")
    skip_masked: bool = key(False, "do not score masked frames")
    skip_nomask: bool = key(False, "do not score unmasked frames")

    # disentangling variant (docs/disentangle.md); layers are 1-based, 0 = no head
    speaker_layer: int = key(0, "layer whose pooled output feeds the speaker adversary (0: none)")
    num_speakers: int = key(0, "speakers the adversary tells apart; training sets it from dict.spk.txt")
    grl_scale: float = key(1.0, "strength of the gradient reversal after its warm-up")
    grl_warmup_updates: int = key(0, "updates over which the reversal ramps up from 0")
    pitch_layer: int = key(0, "layer that feeds the pitch output (0: none)")

    # how the network reads waveforms
    normalize: bool = key(False, "each waveform is standardised (zero mean, unit variance) before the network reads "
                          "it; training sets it from task.normalize",
                          departs="fairseq keeps it in task.normalize only; the model records it so that every reader "
                          "feeds the model as it was trained")

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

    def frames(self, samples: int) -> int:
        """Frames the convolutional stack makes of ``samples`` samples (no padding)."""
        for _, kernel, stride in self.conv_layers:
            samples = (samples - kernel) // stride + 1
        return samples

    @property
    def receptive_field(self) -> int:
        """Samples needed for one output frame (400 for the standard stack)."""
        field_, jump = 1, 1
        for _, kernel, stride in self.conv_layers:
            field_ += (kernel - 1) * jump
            jump *= stride
        return field_

    def validate(self) -> "HubertConfig":
        for name, (low, high) in SIZE_BOUNDS.items():
            value = getattr(self, name)
            if not all(low <= v <= high for v in (value if isinstance(value, list) else [value])):
                raise HubertkitError(f"model.{name} must be in {low}..{high}, got {value}: no HuBERT comes near the "
                                     "bound, so the value is mistyped or the file damaged")
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


# sizes no real model approaches (X-Large: 48 layers of 1280, FFN 5120, 16 heads), so that a
# mistyped or damaged value is refused instead of allocating without bound
SIZE_BOUNDS = {"encoder_layers": (1, 1024), "encoder_embed_dim": (1, 65536), "encoder_ffn_embed_dim": (1, 1 << 18),
               "encoder_attention_heads": (1, 1024), "conv_pos": (1, 4096), "conv_pos_groups": (1, 65536),
               "final_dim": (0, 65536), "num_classes": (1, (1 << 20) + 4), "num_speakers": (0, 1 << 20),
               "mask_length": (1, 1 << 20), "mask_channel_length": (1, 1 << 20)}

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
