"""The search space of a sweep: which RMUConfig settings Optuna varies, and how, from a dict or a YAML/JSON file.

Each key is an RMUConfig field or one of the sweep's own keys (``mode``, ``update_depth``); each value is

    {"low": 1e-4, "high": 1e-1, "log": true}     a float range (``step`` allowed; ints for integer fields)
    {"choices": [5, 7, 9]}                          a categorical choice (numbers, strings, booleans, null)
    2.5                                             a fixed value (not searched, written into every trial)

``mode`` (choices of ``plain`` / ``adaptive``) says whether a trial uses a fixed c (``steering_coeff``)
or adaptive RMU (``adaptive_beta``); ``update_depth`` d trains layers ``layer-d+1 .. layer`` (3 is the
published ``l-2..l``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rmu_lens.errors import RMULensError
from rmu_lens.rmu.config import RMUConfig

MODES = ("plain", "adaptive")
SWEEP_KEYS = ("mode", "update_depth")
INT_FIELDS = ("layer", "batch_size", "max_batches", "max_length", "retain_max_length", "seed",
              "checkpoint_every", "metrics_every", "update_depth")
NOT_SEARCHABLE = ("update_layers", "param_names", "experts")
"""List-valued fields: Optuna's choices must be scalars; ``update_depth`` covers the update layers."""

DEFAULT_SPACE: dict[str, Any] = {
    # Around the published settings (alpha 100s-1000s, c from a few to a few hundred, update l-2..l) and
    # the embedded default's first demo profile (lr 1e-2, alpha 100, beta 2.5, 40 steps, layer 7).
    "lr": {"low": 1e-3, "high": 5e-2, "log": True},
    "alpha": {"low": 10.0, "high": 1200.0, "log": True},
    "adaptive_beta": {"low": 1.0, "high": 6.0},
    "layer": {"choices": [5, 6, 7, 8, 9]},
    "update_depth": {"choices": [1, 2, 3]},
    "max_batches": {"choices": [20, 40, 60]},
}


class SweepSpaceError(RMULensError, ValueError):
    """A search space that cannot be used: the message names the key and the fix."""


def _yaml_number(value: Any) -> Any:
    """YAML 1.1 reads ``1e-4`` (no dot) as a string: take such strings as the numbers they spell."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


@dataclasses.dataclass(frozen=True)
class Dimension:
    """One searched or fixed setting."""

    name: str
    kind: str  # "float", "int", "categorical" or "fixed"
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple | None = None
    value: Any = None

    def suggest(self, trial: Any) -> Any:
        if self.kind == "fixed":
            return self.value
        if self.kind == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)

    def to_spec(self) -> Any:
        if self.kind == "fixed":
            return self.value
        if self.kind == "categorical":
            return {"choices": list(self.choices)}
        spec: dict[str, Any] = {"low": self.low, "high": self.high, "log": self.log}
        if self.step is not None:
            spec["step"] = self.step
        return spec


def _fields() -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(RMUConfig)}


def _dimension(name: str, spec: Any) -> Dimension:
    fix = ('write {"low": L, "high": H} (optionally "log": true, "step": S), {"choices": [...]}, '
           "or a single value to fix it")
    if not isinstance(spec, Mapping):
        if isinstance(spec, (list, tuple)):
            raise SweepSpaceError(f"search space key {name!r}: a bare list is ambiguous; write {{\"choices\": {list(spec)!r}}}")
        return Dimension(name, "fixed", value=spec)
    unknown = sorted(set(spec) - {"low", "high", "log", "step", "choices"})
    if unknown:
        raise SweepSpaceError(f"search space key {name!r}: unknown entries {unknown}; {fix}")
    if "choices" in spec:
        if set(spec) - {"choices"}:
            raise SweepSpaceError(f"search space key {name!r}: give either choices or low/high, not both")
        choices = spec["choices"]
        if not isinstance(choices, (list, tuple)) or not choices:
            raise SweepSpaceError(f"search space key {name!r}: choices must be a non-empty list")
        bad = [c for c in choices if not (c is None or isinstance(c, (bool, str)) or _number(c))]
        if bad:
            raise SweepSpaceError(f"search space key {name!r}: choices {bad} are not numbers, strings, booleans or null "
                                  f"(Optuna stores scalars only)")
        return Dimension(name, "categorical", choices=tuple(choices))
    if "low" not in spec or "high" not in spec:
        raise SweepSpaceError(f"search space key {name!r}: a range needs both low and high; {fix}")
    low, high, step = (_yaml_number(spec.get(k)) for k in ("low", "high", "step"))
    log = spec.get("log", False)
    if not (_number(low) and _number(high)) or low > high:
        raise SweepSpaceError(f"search space key {name!r}: low={low!r}, high={high!r} must be finite numbers with low <= high")
    if not isinstance(log, bool):
        raise SweepSpaceError(f"search space key {name!r}: log={log!r} must be true or false")
    if log and low <= 0:
        raise SweepSpaceError(f"search space key {name!r}: a log range needs low > 0 (got {low})")
    if step is not None and (not _number(step) or step <= 0 or log):
        raise SweepSpaceError(f"search space key {name!r}: step={step!r} must be a positive number, and not with log")
    if name in INT_FIELDS:
        if not all(float(v).is_integer() for v in (low, high, step or 1)):
            raise SweepSpaceError(f"search space key {name!r} is an integer setting: give integer low/high/step")
        return Dimension(name, "int", int(low), int(high), log, int(step) if step is not None else None)
    return Dimension(name, "float", float(low), float(high), log, float(step) if step is not None else None)


@dataclasses.dataclass
class SearchSpace:
    """Dimensions by name; ``suggest(trial, template)`` gives a trial's RMUConfig."""

    dimensions: dict[str, Dimension]

    @classmethod
    def parse(cls, spec: Mapping[str, Any] | SearchSpace | str | Path | None) -> SearchSpace:
        """From a dict, a ``.yaml``/``.yml``/``.json`` file, or None (:data:`DEFAULT_SPACE`)."""
        if isinstance(spec, SearchSpace):
            return spec
        if spec is None:
            spec = DEFAULT_SPACE
        if isinstance(spec, (str, Path)):
            spec = load_space_file(spec)
        if not isinstance(spec, Mapping) or not spec:
            raise SweepSpaceError(f"a search space is a non-empty mapping of setting -> range, choices or value, not {spec!r}")
        fields = _fields()
        dimensions = {}
        for name, value in spec.items():
            if name in NOT_SEARCHABLE:
                raise SweepSpaceError(
                    f"search space key {name!r} holds a list, which Optuna cannot search; fix it in the template "
                    f"config, or search 'update_depth' (update layers layer-d+1..layer) instead of update_layers"
                )
            if name not in fields and name not in SWEEP_KEYS:
                raise SweepSpaceError(f"search space key {name!r} is not an RMUConfig field; use one of "
                                      f"{sorted([*fields, *SWEEP_KEYS])}")
            dimensions[name] = _dimension(name, value)
        mode = dimensions.get("mode")
        modes = mode.choices if mode and mode.kind == "categorical" else (mode.value,) if mode else ()
        if any(m not in MODES for m in modes):
            raise SweepSpaceError(f"search space key 'mode': {list(modes)}; choose from {list(MODES)}")
        return cls(dimensions)

    def suggest(self, trial: Any, template: RMUConfig) -> RMUConfig:
        """The trial's config: the template with every dimension suggested (raises ValueError if invalid)."""
        values = {name: dim.suggest(trial) for name, dim in self.dimensions.items()}
        return self.config(values, template)

    def config(self, values: Mapping[str, Any], template: RMUConfig) -> RMUConfig:
        """The template with ``values`` (names as in the space) applied."""
        values = dict(values)
        mode = values.pop("mode", None)
        depth = values.pop("update_depth", None)
        settings = {**template.to_dict(), **values}
        if mode == "plain":
            settings["adaptive_beta"] = None
        elif mode == "adaptive" and settings.get("adaptive_beta") is None:
            raise SweepSpaceError("mode 'adaptive' needs adaptive_beta: put it in the space or the template config")
        layer = int(settings["layer"])
        if depth is not None:
            settings["update_layers"] = list(range(max(0, layer - int(depth) + 1), layer + 1))
        elif "layer" in values and "update_layers" not in values:
            # The template's update layers keep their offsets from its layer (l-2..l by default).
            offsets = [i - template.layer for i in template.update_layers]
            settings["update_layers"] = sorted({max(0, layer + o) for o in offsets})
        return RMUConfig.from_dict(settings)

    def to_dict(self) -> dict[str, Any]:
        return {name: dim.to_spec() for name, dim in self.dimensions.items()}

    def searched(self) -> list[str]:
        return [name for name, dim in self.dimensions.items() if dim.kind != "fixed"]

    def grid(self) -> dict[str, list] | None:
        """Every searched dimension's choices, when all are categorical (for a GridSampler), else None."""
        searched = {n: d for n, d in self.dimensions.items() if d.kind != "fixed"}
        if not searched or any(d.kind != "categorical" for d in searched.values()):
            return None
        return {n: list(d.choices) for n, d in searched.items()}

    def check_model(self, n_layers: int) -> None:
        """Layer choices and ranges must lie inside the model."""
        dim = self.dimensions.get("layer")
        if dim is None:
            return
        values = [dim.value] if dim.kind == "fixed" else list(dim.choices or ()) or [dim.low, dim.high]
        bad = [v for v in values if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < n_layers]
        if bad:
            raise SweepSpaceError(f"search space key 'layer': {bad} outside this model's layers 0..{n_layers - 1}; "
                                  f"give layers within that range")


def load_space_file(path: str | Path) -> dict[str, Any]:
    """A space from ``.json`` or ``.yaml``/``.yml``."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        elif path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            raise SweepSpaceError(f"{path}: a search space file ends in .yaml, .yml or .json")
    except (ValueError, ImportError) as error:
        if isinstance(error, SweepSpaceError):
            raise
        raise SweepSpaceError(f"{path}: not a readable search space ({error})") from error
    except Exception as error:  # yaml.YAMLError
        raise SweepSpaceError(f"{path}: not valid YAML ({' '.join(str(error).split())})") from error
    if not isinstance(data, Mapping):
        raise SweepSpaceError(f"{path}: a search space file holds a mapping of setting -> range, choices or value")
    return dict(data)
