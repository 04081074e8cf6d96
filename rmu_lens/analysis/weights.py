"""Which tensors an unlearning run changed: a per-tensor weight diff, grouped by block and module.

    diff = weight_diff("base_model_dir", "unlearned_model_dir")   # shard by shard, one tensor at a time
    diff = weight_diff(base_bridge, unlearned_bridge)             # or two models in memory (or one of each)
    diff.changed          # names of the tensors that differ, e.g. ["model.layers.7.mlp.down_proj.weight"]
    diff.blocks()         # {block: {module: [TensorChange, ...]}}

Two folders are read with safetensors' ``safe_open``, one tensor of each at a time, so neither model
is ever fully in memory. Every number is computed in float64 in row chunks: ``max_abs`` = max |Δ|,
``frobenius`` = ‖Δ‖_F, ``relative`` = ‖Δ‖_F / ‖W_base‖_F. Tensor names are the plain Hugging Face
names (``model.layers.5.mlp.down_proj.weight``); an in-memory model's tied aliases (``lm_head.weight``
sharing the embedding) are counted once, as ``save_pretrained`` writes them.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from rmu_lens.errors import RMULensError

BLOCK_NAME = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer)\.(\d+)\.(.+)$")
CHUNK_ELEMENTS = 1 << 22
WEIGHT_DIFF_FORMAT = "rmu_lens.weight_diff.v1"

__all__ = ["ModelMismatchError", "TensorChange", "WeightDiff", "weight_diff"]


class ModelMismatchError(RMULensError, ValueError):
    """Base and unlearned models that cannot be compared: different architectures, shapes or vocabularies."""


@dataclass(frozen=True)
class TensorChange:
    """The change of one tensor: where it sits (block, module) and how much it moved."""

    name: str
    block: int | None
    """Transformer block index, None for tensors outside the blocks (embedding, final norm, head)."""
    module: str
    """The module inside the block (``mlp.down_proj``, ``self_attn.q_proj``, ``input_layernorm``) or the top-level one."""
    shape: tuple[int, ...]
    max_abs: float
    frobenius: float
    relative: float
    """‖Δ‖_F / ‖W_base‖_F (inf when the base tensor is all zeros and the new one is not)."""

    @property
    def changed(self) -> bool:
        return self.max_abs > 0


def split_name(name: str) -> tuple[int | None, str]:
    """(block index, module) of an HF tensor name: ``model.layers.5.mlp.down_proj.weight`` -> (5, "mlp.down_proj")."""
    stem = re.sub(r"\.(weight|bias)$", "", name)
    match = BLOCK_NAME.search(stem + ".")
    if match:
        return int(match.group(1)), match.group(2).rstrip(".") or "block"
    return None, stem


@dataclass
class WeightDiff:
    """Per-tensor changes between two models (every tensor, changed or not), in file order."""

    tensors: list[TensorChange]
    base: str = ""
    unlearned: str = ""
    source: str = ""
    """How the tensors were read: "files, shard by shard", "memory", or "memory + files"."""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def changed(self) -> list[str]:
        """Names of the tensors that differ (any element)."""
        return [t.name for t in self.tensors if t.changed]

    @property
    def identical(self) -> bool:
        return not self.changed

    @property
    def changed_blocks(self) -> list[int]:
        return sorted({t.block for t in self.tensors if t.changed and t.block is not None})

    @property
    def last_changed_block(self) -> int | None:
        blocks = self.changed_blocks
        return blocks[-1] if blocks else None

    def blocks(self, changed_only: bool = True) -> dict[int | None, dict[str, list[TensorChange]]]:
        """``{block: {module: [TensorChange, ...]}}`` (block None: outside the blocks)."""
        grouped: dict[int | None, dict[str, list[TensorChange]]] = {}
        for t in self.tensors:
            if changed_only and not t.changed:
                continue
            grouped.setdefault(t.block, {}).setdefault(t.module, []).append(t)
        return grouped

    def grid(self) -> tuple[list[str], list[int | None], list[list[float | None]]]:
        """(modules, blocks, relative) for a module × block picture of the change.

        ``blocks``: every block of the diff in order, then None (tensors outside the blocks) when there
        are any; ``modules`` in file order; ``relative[i][j]``: the largest ``relative`` change among the
        changed tensors of module i in block j, None where none changed (or there is no such tensor).
        """
        modules = list(dict.fromkeys(t.module for t in self.tensors))
        blocks: list[int | None] = sorted({t.block for t in self.tensors if t.block is not None})
        if any(t.block is None for t in self.tensors):
            blocks.append(None)
        relative: list[list[float | None]] = [[None] * len(blocks) for _ in modules]
        for t in self.tensors:
            if t.changed:
                i, j = modules.index(t.module), blocks.index(t.block)
                relative[i][j] = t.relative if relative[i][j] is None else max(relative[i][j], t.relative)
        return modules, blocks, relative

    def summary(self) -> str:
        """One line per changed module (max |Δ| and the largest relative change), or "nothing changed"."""
        if self.identical:
            return f"nothing changed: all {len(self.tensors)} tensors are identical"
        lines = [f"{len(self.changed)} of {len(self.tensors)} tensors changed, in blocks {self.changed_blocks or 'none'}"]
        for block, modules in self.blocks().items():
            for module, changes in modules.items():
                where = f"block {block}" if block is not None else "outside the blocks"
                lines.append(f"  {where:>18} {module:<28} max|Δ| {max(c.max_abs for c in changes):.3g}  "
                             f"rel ‖Δ‖ {max(c.relative for c in changes):.3g}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"format": WEIGHT_DIFF_FORMAT, "base": self.base, "unlearned": self.unlearned, "source": self.source,
                "meta": self.meta, "changed": self.changed, "identical": self.identical,
                "tensors": [{**asdict(t), "shape": list(t.shape)} for t in self.tensors]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WeightDiff:
        if data.get("format") != WEIGHT_DIFF_FORMAT:
            raise ValueError(f"Not an rmu_lens weight diff (format {data.get('format')!r}, expected {WEIGHT_DIFF_FORMAT!r})")
        tensors = [TensorChange(**{**t, "shape": tuple(t["shape"])}) for t in data["tensors"]]
        return cls(tensors, data.get("base", ""), data.get("unlearned", ""), data.get("source", ""), data.get("meta", {}))


# --- tensor sources ----------------------------------------------------------------------


class _FolderTensors:
    """The tensors of an HF safetensors folder, opened one at a time (name -> shard file)."""

    def __init__(self, directory: Path):
        from safetensors import safe_open

        files = sorted(directory.glob("*.safetensors"))
        if not files:
            raise FileNotFoundError(
                f"{directory} holds no *.safetensors files: weights are read from safetensors only "
                f"(convert .bin checkpoints with transformers' save_pretrained(safe_serialization=True))"
            )
        self.directory = directory
        self.where: dict[str, Path] = {}
        for file in files:
            with safe_open(str(file), framework="pt", device="cpu") as handle:
                for key in handle.keys():
                    self.where[key] = file
        self.config = _read_config(directory)

    def names(self) -> list[str]:
        return list(self.where)

    def shape(self, name: str) -> tuple[int, ...]:
        from safetensors import safe_open

        with safe_open(str(self.where[name]), framework="pt", device="cpu") as handle:
            return tuple(handle.get_slice(name).get_shape())

    def get(self, name: str) -> torch.Tensor:
        from safetensors import safe_open

        with safe_open(str(self.where[name]), framework="pt", device="cpu") as handle:
            return handle.get_tensor(name)


class _MemoryTensors:
    """The tensors of an in-memory model (a bridge or an HF model) under plain HF names, aliases once."""

    def __init__(self, model: Any):
        from rmu_lens.models import materialized_state_dict, readable_name

        hf_model = getattr(model, "original_model", model)
        if not hasattr(hf_model, "state_dict") or not hasattr(hf_model, "config"):
            raise TypeError(f"weight_diff takes model folders or loaded models, not {type(model).__name__}")
        expected = _expected_names(hf_model)
        state = materialized_state_dict(hf_model, expected)
        seen: set[tuple[int, tuple[int, ...]]] = set()
        self.tensors: dict[str, torch.Tensor] = {}
        for key, value in state.items():
            key = readable_name(key)
            if expected is not None and key not in expected:
                continue  # bridge aliases (mlp.out beside mlp.down_proj) and placeholders
            marker = (value.data_ptr(), tuple(value.shape))
            if value.data_ptr() and marker in seen:
                continue  # a tied alias of a tensor already listed (lm_head.weight = embed_tokens.weight)
            seen.add(marker)
            self.tensors[key] = value
        self.config = hf_model.config.to_dict()

    def names(self) -> list[str]:
        return list(self.tensors)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.tensors[name].shape)

    def get(self, name: str) -> torch.Tensor:
        return self.tensors[name].detach()


def _expected_names(hf_model: Any) -> set[str] | None:
    """The tensor names the plain (unwrapped) model of this config has; None when it cannot be built."""
    try:
        from transformers import AutoModelForCausalLM

        with torch.device("meta"):
            clean = AutoModelForCausalLM.from_config(hf_model.config)
        return set(clean.state_dict())
    except Exception:  # an unregistered config: fall back to every tensor the module tree exposes
        return None


def _read_config(directory: Path) -> dict[str, Any]:
    path = directory / "config.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _source(model: Any) -> _FolderTensors | _MemoryTensors:
    if isinstance(model, (str, os.PathLike)):
        from rmu_lens.models import EMBEDDED_MODELS, embedded_model_dir

        text = os.fspath(model)
        directory = embedded_model_dir(text) if text in EMBEDDED_MODELS else Path(text)
        if not directory.is_dir():
            raise FileNotFoundError(f"{model} is not a model folder: weight_diff reads local safetensors folders "
                                    f"(download a hub model first) or loaded models")
        return _FolderTensors(directory)
    return _MemoryTensors(model)


def _label(model: Any) -> str:
    if isinstance(model, (str, os.PathLike)):
        return os.fspath(model)
    hf_model = getattr(model, "original_model", model)
    return str(getattr(hf_model, "name_or_path", "") or type(model).__name__)


def _chunks(a: torch.Tensor, b: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    a, b = a.reshape(a.shape[0], -1) if a.ndim > 1 else a.reshape(1, -1), b.reshape(b.shape[0], -1) if b.ndim > 1 else b.reshape(1, -1)
    rows = max(1, CHUNK_ELEMENTS // max(1, a.shape[1]))
    for start in range(0, a.shape[0], rows):
        yield a[start:start + rows].to(torch.float64), b[start:start + rows].to(torch.float64)


def tensor_change(name: str, base: torch.Tensor, new: torch.Tensor) -> TensorChange:
    """max |Δ|, ‖Δ‖_F and ‖Δ‖_F / ‖base‖_F of one tensor pair, in float64, in row chunks."""
    max_abs, delta_sq, base_sq = 0.0, 0.0, 0.0
    if base.numel():
        for b, n in _chunks(base, new):
            delta = n - b
            max_abs = max(max_abs, float(delta.abs().max()))
            delta_sq += float((delta * delta).sum())
            base_sq += float((b * b).sum())
    frob = delta_sq ** 0.5
    relative = frob / base_sq ** 0.5 if base_sq > 0 else (0.0 if frob == 0 else float("inf"))
    block, module = split_name(name)
    return TensorChange(name, block, module, tuple(base.shape), max_abs, frob, relative)


_ARCHITECTURE_KEYS = ("model_type", "architectures", "vocab_size", "hidden_size", "num_hidden_layers", "n_embd", "n_layer")


def check_same_architecture(base_config: Mapping[str, Any], new_config: Mapping[str, Any], base: str, new: str) -> None:
    """Raise ModelMismatchError naming both models when their architecture or vocabulary differ."""
    different = [k for k in _ARCHITECTURE_KEYS if k in base_config and k in new_config and base_config[k] != new_config[k]]
    if different:
        detail = "; ".join(f"{k}: {base_config[k]!r} vs {new_config[k]!r}" for k in different)
        raise ModelMismatchError(
            f"base model {base} and unlearned model {new} differ in architecture or vocabulary ({detail}): "
            f"compare an unlearned model with the model it was made from"
        )


def weight_diff(base: Any, unlearned: Any) -> WeightDiff:
    """Compare every tensor of ``base`` and ``unlearned`` (folders: shard by shard; or loaded models).

    Raises :class:`ModelMismatchError` naming both models when their configs (architecture, sizes,
    vocabulary), tensor names or shapes differ.
    """
    base_label, new_label = _label(base), _label(unlearned)
    a, b = _source(base), _source(unlearned)
    check_same_architecture(a.config, b.config, base_label, new_label)
    names_a, names_b = a.names(), b.names()
    only_a, only_b = sorted(set(names_a) - set(names_b)), sorted(set(names_b) - set(names_a))
    if only_a or only_b:
        raise ModelMismatchError(
            f"base model {base_label} and unlearned model {new_label} hold different tensors "
            f"(only in the base: {only_a[:5]}, only in the unlearned: {only_b[:5]}): they are not the same architecture"
        )
    for name in names_a:
        if a.shape(name) != b.shape(name):
            raise ModelMismatchError(
                f"base model {base_label} and unlearned model {new_label} differ in the shape of {name}: "
                f"{a.shape(name)} vs {b.shape(name)} (different architecture or vocabulary)"
            )
    changes = [tensor_change(name, a.get(name), b.get(name)) for name in names_a]  # one pair in memory at a time
    kinds = {type(a), type(b)}
    source = "files, shard by shard" if kinds == {_FolderTensors} else "memory" if kinds == {_MemoryTensors} else "memory + files"
    return WeightDiff(changes, base_label, new_label, source)
