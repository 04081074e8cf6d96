"""Which attention each decoder layer of an HF model uses, read from the model's own config.

transformers 5 records a per-layer kind in ``config.layer_types`` (Gemma-2/3, Qwen2/3, ...:
``"full_attention"`` or ``"sliding_attention"``); older-style configs (Mistral, Mixtral, Phi-3) give
one ``sliding_window`` that every layer uses. Decoder layers themselves carry no attention-type
attribute, so the config is the one source. The block runner and the scorer both read it here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rmu_lens.errors import RMULensError

FULL = "full_attention"
SLIDING = "sliding_attention"
SUPPORTED_KINDS = (FULL, SLIDING)


class UnsupportedAttentionError(RMULensError, NotImplementedError):
    """A layer uses an attention kind rmu_lens does not compute exactly."""


@dataclass(frozen=True)
class LayerAttention:
    """One layer's attention: its kind (``config.layer_types`` vocabulary) and window (sliding only)."""

    kind: str
    window: int | None = None


def layer_attention(config: Any) -> list[LayerAttention]:
    """Each layer's attention kind and window; raises UnsupportedAttentionError for another kind.

    Only full and sliding-window attention are supported; chunked, linear or recurrent layers are
    refused by name rather than computed with the wrong mask.
    """
    config = getattr(config, "text_config", None) or config
    n_layers = config.num_hidden_layers
    window = getattr(config, "sliding_window", None)
    kinds = getattr(config, "layer_types", None)
    if kinds is None:
        kinds = [SLIDING if window else FULL] * n_layers
    layers = []
    for index, kind in enumerate(kinds[:n_layers]):
        if kind not in SUPPORTED_KINDS:
            raise UnsupportedAttentionError(
                f"Layer {index} uses attention kind {kind!r} (config.layer_types), which rmu_lens does not "
                f"support (supported: {', '.join(SUPPORTED_KINDS)}). Choose a layer range without it or a "
                f"model family listed in docs/models.md."
            )
        if kind == SLIDING and not window:
            raise UnsupportedAttentionError(
                f"Layer {index} is a sliding-window layer but config.sliding_window is {window!r}; set it."
            )
        layers.append(LayerAttention(kind, window if kind == SLIDING else None))
    return layers
