"""Command-line flags declared once, for the ``rmu-lens`` parsers and the Jupyter magics alike.

A config dataclass declares each setting's flag on its field with :func:`setting`: the ``help``
text (required), and optionally ``flag`` (default ``--field-name``), ``choices`` and ``metavar``.
:func:`config_flags` turns the fields into :class:`Flag` objects (type, list syntax and default
from the annotation); the option groups every command shares (:func:`model_flag`,
:func:`eval_flags`, :func:`output_flags`) are :class:`Flag` lists too. :func:`add_flags` adds them to
an argparse parser; ``rmu_lens.jupyter.magics`` adds the same objects as magic arguments.

Light on purpose (no torch import): the CLI builds its parsers from here before any command runs.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import types
import typing
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from rmu_lens.errors import RMULensError

DEFAULT_MODEL = "smollm2-135m"


class FlagDeclarationError(RMULensError, TypeError):
    """A config field cannot become a flag: no help metadata, or a type the builder does not know."""


def setting(default: Any, help: str, **metadata: Any) -> Any:
    """A dataclass field carrying its flag's ``help`` (and optional ``flag``, ``choices``, ``metavar``).

    A list default becomes a ``default_factory``, so instances never share it.
    """
    metadata = {"help": help, **metadata}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclass
class Flag:
    """One command-line option: ``add_argument(*names, **options)`` for argparse or an IPython magic."""

    names: tuple[str, ...]
    options: dict[str, Any]

    @property
    def dest(self) -> str:
        return self.options.get("dest") or self.names[-1].lstrip("-").replace("-", "_")


def add_flags(parser: argparse.ArgumentParser, flags: Sequence[Flag], title: str | None = None) -> None:
    """Add ``flags`` to ``parser`` (inside an argument group when ``title`` is given)."""
    target = parser.add_argument_group(title) if title else parser
    for flag in flags:
        target.add_argument(*flag.names, **flag.options)


# -- comma-separated values ---------------------------------------------------------------------


def split_items(text: str, item: Callable[[str], Any] = int) -> list[Any]:
    """``"1,2, 3"`` -> ``[1, 2, 3]`` (empty items skipped); ValueError naming the text otherwise."""
    try:
        return [item(v.strip()) for v in text.split(",") if v.strip()]
    except ValueError as error:
        raise ValueError(f"expected comma-separated {item.__name__} values, got {text!r}") from error


def int_list(text: str) -> list[int]:
    """An argparse ``type``: comma-separated integers (``"5,6,7"``)."""
    try:
        values = split_items(text, int)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    return values


class ItemsAction(argparse.Action):
    """A list setting: values after the flag, space- or comma-separated (``--update-layers 5,6,7`` or ``5 6 7``).

    ``one_or_many`` (per-topic settings such as ``steering_coeff``): a single value is stored as itself.
    """

    def __init__(self, *args: Any, item: Callable[[str], Any] = str, one_or_many: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.item, self.one_or_many = item, one_or_many

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        try:
            items = [v for text in values for v in split_items(text, self.item)]
        except ValueError as error:
            raise argparse.ArgumentError(self, str(error)) from error
        if not items:
            raise argparse.ArgumentError(self, "give at least one value")
        setattr(namespace, self.dest, items[0] if self.one_or_many and len(items) == 1 else items)


# -- flags from config fields -------------------------------------------------------------------


ITEM_METAVARS = {int: "N", float: "X", str: "NAME"}


def _show_default(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def _field_default(item: dataclasses.Field) -> Any:
    if item.default_factory is not dataclasses.MISSING:
        return item.default_factory()
    return None if item.default is dataclasses.MISSING else item.default


def _kind(annotation: Any) -> tuple[str, Any]:
    """(``"bool"`` | ``"scalar"`` | ``"list"`` | ``"one_or_many"``, item type) of a field annotation."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        lists = [a for a in args if typing.get_origin(a) is list]
        scalars = [a for a in args if typing.get_origin(a) is not list]
        if len(args) == 1:
            return _kind(args[0])
        if len(lists) == 1 and len(scalars) == 1 and typing.get_args(lists[0]) == (scalars[0],):
            return "one_or_many", scalars[0]
    elif typing.get_origin(annotation) is list and len(args) == 1 and args[0] in (int, float, str):
        return "list", args[0]
    elif annotation is bool:
        return "bool", bool
    elif annotation in (int, float, str):
        return "scalar", annotation
    raise FlagDeclarationError(f"no command-line flag for a field of type {annotation!r}")


def config_flags(cls: type, *, prefix: str = "", names: Sequence[str] | None = None) -> list[Flag]:
    """One flag per field of the dataclass ``cls`` (or of the fields ``names``), from its annotation and
    :func:`setting` metadata; ``prefix`` (``"finetune"``) makes ``--finetune-steps`` with dest ``finetune_steps``.

    Every flag's default is None ("not given"), so the profile or config file underneath keeps its
    value; the help shows the field's own default.
    """
    hints = typing.get_type_hints(cls)
    flags = []
    for item in dataclasses.fields(cls):
        if names is not None and item.name not in names:
            continue
        if "help" not in item.metadata:
            raise FlagDeclarationError(
                f"{cls.__name__}.{item.name} has no help: declare it with rmu_lens.flags.setting(default, help)"
            )
        try:
            kind, item_type = _kind(hints[item.name])
        except FlagDeclarationError as error:
            raise FlagDeclarationError(f"{cls.__name__}.{item.name}: {error}") from None
        text = item.metadata["help"]
        default = _field_default(item)
        if default is not None and kind != "bool":
            text += f" [default: {_show_default(default)}]"
        dest = f"{prefix}_{item.name}" if prefix else item.name
        options: dict[str, Any] = {"dest": dest, "default": None, "help": text.replace("%", "%%")}
        if kind == "bool":
            options["action"] = "store_true"
        elif kind == "scalar":
            options["type"] = item_type
        else:
            options.update(nargs="+", action=ItemsAction, item=item_type, one_or_many=kind == "one_or_many",
                           metavar=ITEM_METAVARS[item_type])
        for key in ("choices", "metavar"):
            if key in item.metadata:
                options[key] = item.metadata[key]
        flag = item.metadata.get("flag", "--" + item.name.replace("_", "-"))
        flags.append(Flag((f"--{prefix.replace('_', '-')}-{flag[2:]}" if prefix else flag,), options))
    return flags


def config_overrides(args: argparse.Namespace, cls: type, *, prefix: str = "") -> dict[str, Any]:
    """The fields of ``cls`` whose flags were given in ``args`` (parsed with :func:`config_flags`)."""
    values = {f.name: getattr(args, f"{prefix}_{f.name}" if prefix else f.name, None) for f in dataclasses.fields(cls)}
    return {name: value for name, value in values.items() if value is not None}


# -- option groups every command shares ----------------------------------------------------------


def model_flag(*, required: bool = False, default: str | None = DEFAULT_MODEL, help: str | None = None,
               name: str = "--model") -> Flag:
    """The model to load: the embedded default, an HF directory, a hub name or an rmu_lens run directory."""
    text = help or (f"{DEFAULT_MODEL}, a local HF directory, a hub name, or an rmu_lens run directory")
    if required:
        return Flag((name,), {"required": True, "help": text})
    if default is not None:
        text += f" [default: {default}]"
    return Flag((name,), {"default": default, "help": text})


def eval_flags(*, limit: str | None = "first N questions of each subject") -> list[Flag]:
    """``--mode``, ``--batch-size`` and (with a ``limit`` help) ``--limit``: how questions are scored."""
    from rmu_lens.eval.prompts import MODES

    flags = [
        Flag(("--mode",), {"choices": MODES, "default": "cloze",
                           "help": "letter: lm-eval's wmdp_*/mmlu_* tasks (scores ' A'..' D'); "
                                   "cloze: mmlu_*_continuation [default: cloze]"}),
        Flag(("--batch-size",), {"type": int, "default": 16, "help": "questions per forward pass [default: 16]"}),
    ]
    if limit:
        flags.append(Flag(("--limit",), {"type": int, "default": None, "help": limit}))
    return flags


def output_flags(*, quiet: bool = True) -> list[Flag]:
    """``--no-progress`` (no progress bars) and, for commands that print, ``--quiet`` (errors only)."""
    flags = [Flag(("--no-progress",), {"action": "store_true", "help": "no progress bars"})]
    if quiet:
        flags.append(Flag(("--quiet",), {"action": "store_true",
                                          "help": "print errors only: no progress bars, tables or log lines"}))
    return flags


def run_flags() -> list[Flag]:
    """``--min-chars``, ``--resume`` and ``--overwrite``: how ``unlearn`` reads corpora and treats ``--out``."""
    return [
        Flag(("--min-chars",), {"type": int, "default": 50, "help": "drop corpus texts of this many characters or "
                                                                    "fewer [default: 50, as the official code]"}),
        Flag(("--resume",), {"action": "store_true", "help": "continue a stopped or interrupted run in --out"}),
        Flag(("--overwrite",), {"action": "store_true", "help": "replace a run already in --out"}),
    ]


def profile_flag(profiles: Sequence[str]) -> Flag:
    """``--profile``: a named RMUConfig preset to start from (``profiles``: ``rmu_lens.rmu.config.PROFILES``)."""
    return Flag(("--profile",), {"default": None, "choices": sorted(profiles),
                                 "help": "start from a named preset (docs/rmu.md)"})


def show_progress(args: argparse.Namespace) -> bool:
    """Whether a command parsed with :func:`output_flags` shows progress bars."""
    return not (getattr(args, "no_progress", False) or getattr(args, "quiet", False))


def log_function(args: argparse.Namespace) -> Callable[..., None]:
    """``print``, or a no-op under ``--quiet``."""
    return (lambda *a, **k: None) if getattr(args, "quiet", False) else print


@contextlib.contextmanager
def library_progress_bars(enabled: bool) -> Iterator[None]:
    """Hide the Hugging Face libraries' own bars (model loading, downloads) too while ``enabled`` is False.

    The libraries read ``HF_HUB_DISABLE_PROGRESS_BARS`` when imported; ones imported already are
    switched off through their calls. Both are put back afterwards.
    """
    if enabled:
        yield
        return
    previous = os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS")
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    hub = sys.modules.get("huggingface_hub.utils")
    hub_was_on = hub is not None and not hub.are_progress_bars_disabled()
    if hub_was_on:
        hub.disable_progress_bars()
    hf_logging = sys.modules.get("transformers.utils.logging")
    transformers_was_on = hf_logging is not None and hf_logging.is_progress_bar_enabled()
    if transformers_was_on:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("HF_HUB_DISABLE_PROGRESS_BARS", None)
        else:
            os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = previous
        if hub_was_on:
            hub.enable_progress_bars()
        if transformers_was_on:
            hf_logging.enable_progress_bar()


# -- parsers that add heavy flags only when used ------------------------------------------------


class DeferredArgumentParser(argparse.ArgumentParser):
    """An argparse parser whose subcommands can add arguments on first use (:func:`add_when_used`).

    The config flags need the config class, whose package imports torch; deferring them keeps
    ``rmu-lens eval`` and the others from paying that import for a subcommand they do not run.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deferred: list[Callable[[argparse.ArgumentParser], None]] = []

    def _run_deferred(self) -> None:
        while self._deferred:
            self._deferred.pop(0)(self)

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        self._run_deferred()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self._run_deferred()
        return super().format_help()

    def format_usage(self) -> str:
        self._run_deferred()
        return super().format_usage()


def add_when_used(parser: argparse.ArgumentParser, setup: Callable[[argparse.ArgumentParser], None]) -> None:
    """Run ``setup(parser)`` when ``parser`` first parses or prints help (now, for a plain parser)."""
    if isinstance(parser, DeferredArgumentParser):
        parser._deferred.append(setup)
    else:
        setup(parser)


__all__ = [
    "DEFAULT_MODEL", "DeferredArgumentParser", "Flag", "FlagDeclarationError", "ItemsAction", "add_flags",
    "add_when_used", "config_flags", "config_overrides", "eval_flags", "int_list", "library_progress_bars", "log_function", "model_flag",
    "output_flags", "profile_flag", "run_flags", "setting", "show_progress", "split_items",
]
