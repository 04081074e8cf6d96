"""Model placement on the command line: the ``--device``, ``--dtype`` and ``--device-map`` flags every
command that loads a model shares, and their translation into :func:`rmu_lens.load_model` options.

Light on purpose (no torch import): the CLI builds its parser from here before any command runs.
docs/devices.md says what each placement does to training, evaluation and saving.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

DTYPE_CHOICES = ("float32", "bfloat16", "float16")
DEVICE_MAP_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")


def parse_device_map(text: str) -> str | dict[str, Any]:
    """``auto`` (or another accelerate strategy), a JSON object module -> device, or a path to a JSON file."""
    text = text.strip()
    if text in DEVICE_MAP_STRATEGIES:
        return text
    if not text.startswith("{"):
        path = Path(text).expanduser()
        if not path.is_file():
            raise argparse.ArgumentTypeError(
                f"--device-map {text!r}: give one of {', '.join(DEVICE_MAP_STRATEGIES)}, a JSON object such as "
                f"'{{\"model.embed_tokens\": 0, \"model.layers.0\": 0, \"lm_head\": \"cpu\"}}', or a JSON file"
            )
        text = path.read_text(encoding="utf-8")
    try:
        mapping = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"--device-map is not valid JSON ({error})") from error
    if not isinstance(mapping, dict) or not all(isinstance(v, (str, int)) for v in mapping.values()):
        raise argparse.ArgumentTypeError("--device-map JSON must map module names to a GPU index, 'cpu', 'disk' or a device")
    return mapping


def add_device_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--device``, ``--dtype`` and ``--device-map`` (read back with :func:`load_options`)."""
    group = parser.add_argument_group("placement (docs/devices.md)")
    group.add_argument("--device", default=None, help="torch device for the model(s), e.g. cuda, cuda:1, cpu [cuda if available, else cpu]")
    group.add_argument("--dtype", default=None, choices=DTYPE_CHOICES, help="model dtype [float32]")
    group.add_argument(
        "--device-map", default=None, type=parse_device_map, metavar="MAP",
        help="spread the model over devices with accelerate instead of --device: auto, balanced, sequential, "
             "or a JSON object / file mapping modules to a GPU index, cpu or disk",
    )


def load_options(args: argparse.Namespace) -> dict[str, Any]:
    """The :func:`rmu_lens.load_model` keyword options the placement flags in ``args`` ask for."""
    device, dtype, device_map = getattr(args, "device", None), getattr(args, "dtype", None), getattr(args, "device_map", None)
    if device is not None and device_map is not None:
        raise ValueError(f"--device {device} and --device-map both given: use one")
    options: dict[str, Any] = {}
    if device is not None:
        options["device"] = device
    if dtype is not None:
        options["dtype"] = dtype
    if device_map is not None:
        options["device_map"] = device_map
    return options
