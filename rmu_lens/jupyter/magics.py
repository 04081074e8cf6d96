"""IPython magics for the common steps: ``%rmu_unlearn``, ``%rmu_eval``, ``%rmu_compare``, ``%rmu_analyze``.

    %load_ext rmu_lens
    %rmu_unlearn --forget bundled:virology --retain bundled:retain --profile demo --out runs/demo
    %rmu_eval --model rmu_run --data bundled:virology -o after
    %rmu_unlearn?                      # the full argument list

Each magic stores its result in a user variable (``-o NAME``; defaults ``rmu_run``, ``rmu_result``,
``rmu_comparison``, ``rmu_analysis``) and shows a compact summary. Arguments that name a variable
of the notebook (a model, a run, a list of texts or questions) use that object; anything else is a
source string, as on the command line. Bad arguments raise ``UsageError`` with the reason.

``%%rmu_unlearn`` takes the RMU settings in the cell body as a YAML (or JSON) mapping of
:class:`~rmu_lens.rmu.config.RMUConfig` fields; flags on the line win over the body.
"""

from __future__ import annotations

import importlib.util
import json
import shlex
from html import escape
from pathlib import Path
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, argument_group, magic_arguments
from IPython.display import display

from rmu_lens.flags import (
    Flag,
    config_flags,
    config_overrides,
    eval_flags,
    int_list,
    model_flag,
    output_flags,
    profile_flag,
    run_flags,
)
from rmu_lens.rmu.config import PROFILES, RMUConfig

MAGIC_NAMES = {
    "line": ("rmu_unlearn", "rmu_eval", "rmu_compare", "rmu_analyze"),
    "cell": ("rmu_unlearn",),
}
CONFIG_FORMAT = "YAML" if importlib.util.find_spec("yaml") else "JSON"
"""Cell bodies and --config files: YAML when PyYAML is importable (transformers requires it), else JSON."""


def parse_settings(text: str, where: str) -> dict[str, Any]:
    """A mapping from YAML (when PyYAML is importable) or JSON text; UsageError naming ``where`` otherwise."""
    if not text.strip():
        return {}
    try:
        if CONFIG_FORMAT == "YAML":
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as error:  # yaml.YAMLError / json.JSONDecodeError
        raise UsageError(f"{where} is not valid {CONFIG_FORMAT}: {error}") from error
    if not isinstance(data, dict):
        raise UsageError(
            f"{where} must be a {CONFIG_FORMAT} mapping of RMUConfig fields (e.g. 'layer: 7'), not {type(data).__name__}"
        )
    return data


def locked_message(out: str, error: Exception) -> str:
    """One line for a run directory that another live process holds: the folder, the holder and what to do."""
    holder = str(error).partition(" is in use by ")[2].partition(" (lock file")[0] or "another process"
    return (f"--out {out} is in use by {holder}, which holds its lock: two runs cannot share a run directory. "
            f"Wait for that run to end (or stop it), then run this again with --resume to continue it; "
            f"or choose another --out")


def flag_arguments(flags: list[Flag], title: str | None = None) -> Any:
    """A decorator adding ``flags`` (rmu_lens.flags, shared with the CLI) as magic arguments."""

    def decorate(function: Any) -> Any:
        for flag in reversed(flags):
            function = argument(*flag.names, **flag.options)(function)
        return argument_group(title)(function) if title else function

    return decorate


_config_arguments = flag_arguments(config_flags(RMUConfig), "RMU settings (override the profile, --config file and cell body)")


@magics_class
class RMULensMagics(Magics):
    """The rmu_lens magics; registered by ``%load_ext rmu_lens``."""

    # -- helpers ----------------------------------------------------------------------------------

    def _parse(self, magic: Any, line: str) -> Any:
        # IPython's parse_argstring splits with shlex in non-POSIX mode, which keeps the quotes:
        # `--out 'runs/x'` would name a folder "'runs/x'". POSIX splitting removes them as a shell does.
        try:
            argv = shlex.split(line, posix=True)
        except ValueError as error:  # an unclosed quote
            raise UsageError(f"could not parse the arguments: {error}") from error
        return magic.parser.parse_args(argv)

    def _lookup(self, name: str) -> Any:
        """The notebook variable ``name`` (dots allowed: ``job.run``), or None when there is none."""
        head, *rest = name.split(".")
        if not head.isidentifier() or head not in self.shell.user_ns:
            return None
        value = self.shell.user_ns[head]
        for attribute in rest:
            if not hasattr(value, attribute):
                raise UsageError(f"{name}: {head} has no attribute {attribute!r}")
            value = getattr(value, attribute)
        return value

    def _store(self, name: str, value: Any) -> None:
        if not name.isidentifier():
            raise UsageError(f"-o {name!r} is not a valid Python variable name")
        self.shell.user_ns[name] = value

    def _model(self, source: str, *, load: bool) -> Any:
        """A bridge from a notebook variable (bridge, RMURun, finished job), or a model source string.

        With ``load=False`` a source string is returned as it is (``evaluate`` loads it itself).
        """
        from rmu_lens.jupyter.dashboard import TrainingJob
        from rmu_lens.rmu.record import RMURun

        value = self._lookup(source)
        if isinstance(value, TrainingJob):
            if not value.done:
                raise UsageError(f"{source} is a training job that is still running: wait with {source}.result() first")
            value = value.result()
        if isinstance(value, RMURun):
            return value.model
        if isinstance(value, (str, Path)):
            source = str(value)  # a variable holding a model source
        elif value is not None:
            if not hasattr(value, "run_with_hooks"):
                raise UsageError(f"--model {source}: the variable holds a {type(value).__name__}, not a model (rmu_lens.load_model)")
            return value
        if not load:
            return source
        from rmu_lens.eval.evaluate import resolve_model_source
        from rmu_lens.models import ModelNotFoundError, load_model

        try:
            return load_model(resolve_model_source(source))
        except ModelNotFoundError as error:
            raise UsageError(f"--model {source}: {error}") from error

    def _corpora(self, sources: list[str], flag: str, min_chars: int) -> list[Any]:
        from rmu_lens.data.corpora import Corpus, CorpusError, load_corpus

        corpora = []
        for source in sources:
            value = self._lookup(source)
            if isinstance(value, Corpus):
                corpora.append(value)
            elif isinstance(value, (list, tuple)) and value and all(isinstance(t, str) for t in value):
                corpora.append(Corpus(name=source, texts=list(value), source=f"notebook variable {source}"))
            elif value is not None:
                raise UsageError(f"{flag} {source}: the variable holds a {type(value).__name__}; give a Corpus or a list of texts")
            else:
                try:
                    corpora.append(load_corpus(source, min_chars=min_chars))
                except (CorpusError, FileNotFoundError, ValueError) as error:
                    raise UsageError(f"{flag} {source}: {error}") from error
        return corpora

    def _questions(self, sources: list[str]) -> list[Any]:
        from rmu_lens.eval import Question, QuestionError, load_questions

        questions: list[Any] = []
        for source in sources:
            value = self._lookup(source)
            if isinstance(value, (list, tuple)) and value and all(isinstance(q, Question) for q in value):
                questions.extend(value)
            elif value is not None:
                raise UsageError(f"--data {source}: the variable holds a {type(value).__name__}; give a list of Question")
            else:
                try:
                    questions.extend(load_questions(source))
                except (QuestionError, FileNotFoundError, ValueError) as error:
                    raise UsageError(f"--data {source}: {error}") from error
        return questions

    def _config(self, args: Any, body: str | None) -> Any:
        settings: dict[str, Any] = {}
        if args.config:
            path = Path(args.config).expanduser()
            if not path.is_file():
                raise UsageError(f"--config {args.config}: no such file")
            loaded = parse_settings(path.read_text(encoding="utf-8"), f"--config {args.config}")
            settings.update(loaded.get("config", loaded))  # a run.json's config, or the fields themselves
        if body is not None:
            settings.update(parse_settings(body, "the %%rmu_unlearn cell"))
        settings.update(config_overrides(args, RMUConfig))
        try:
            if args.profile:
                return RMUConfig.profile(args.profile, **settings)
            return RMUConfig.from_dict(settings)
        except (TypeError, ValueError) as error:
            raise UsageError(str(error)) from error

    # -- %rmu_unlearn -------------------------------------------------------------------------------

    @magic_arguments()
    @flag_arguments([model_flag(help="a notebook variable holding a model (edited in place) or a run, or a source: "
                                     "smollm2-135m, an HF directory, a run directory, a hub name")])
    @argument("--forget", nargs="+", required=True, metavar="CORPUS",
              help="one per forget topic: a notebook variable (Corpus or list of texts) or bundled:NAME / a file")
    @argument("--retain", nargs="+", required=True, metavar="CORPUS", help="one retain set for all topics, or one per topic")
    @flag_arguments([profile_flag(PROFILES)])
    @argument("--config", default=None, help="start from a YAML/JSON file of RMUConfig fields (or a run.json)")
    @argument("--out", default=None, help="run directory to write (run.json, checkpoints, model/)")
    @flag_arguments(run_flags())
    @argument("-b", "--background", action="store_true",
              help="train in a background thread: the Stop button works and the notebook stays usable; "
                   "the variable then holds a TrainingJob (.result() waits for the run)")
    @argument("--no-dashboard", action="store_true", help="no live dashboard (a text progress bar instead)")
    @argument("-o", "--output", default="rmu_run", help="variable to store the RMURun (or TrainingJob) in [rmu_run]")
    @_config_arguments
    @line_cell_magic
    def rmu_unlearn(self, line: str, cell: str | None = None) -> None:
        """Run RMU (rmu_lens.unlearn) with a live dashboard; store the run in a variable."""
        from rmu_lens.errors import RunLockedError
        from rmu_lens.jupyter.dashboard import TrainingDashboard, start_training
        from rmu_lens.rmu.rundir import RunDirectory, RunExistsError
        from rmu_lens.rmu.trainer import RMUTrainer

        args = self._parse(self.rmu_unlearn, line)
        if not args.output.isidentifier():
            raise UsageError(f"-o {args.output!r} is not a valid Python variable name")
        config = self._config(args, cell)
        forget = self._corpora(args.forget, "--forget", args.min_chars)
        names = [c.name for c in forget]
        if len(set(names)) != len(names):
            raise UsageError(f"--forget corpora need distinct names, got {names}")
        retain_sets = self._corpora(args.retain, "--retain", args.min_chars)
        retain = retain_sets[0] if len(retain_sets) == 1 else retain_sets
        if args.resume and not args.out:
            raise UsageError("--resume needs --out: the run directory to resume from")
        model = self._model(args.model, load=True)
        options = dict(out=args.out, resume=args.resume, overwrite=args.overwrite)
        try:
            if args.background:
                job = start_training(model, forget, retain, config, dashboard=not args.no_dashboard, **options)
                self._store(args.output, job)
                if job.dashboard is not None:
                    display(job.dashboard)
                print(f"RMU is training in the background; {args.output} holds the job "
                      f"({args.output}.result() waits for the RMURun, {args.output}.stop() stops it).")
                return
            dashboard = None if args.no_dashboard else TrainingDashboard(stoppable=False)
            trainer = RMUTrainer(model, forget, retain, config, callbacks=[dashboard] if dashboard else [])
            run_dir = RunDirectory(args.out) if args.out else None
            if run_dir is not None:
                run_dir.open(trainer, resume=args.resume, overwrite=args.overwrite)
        except RunLockedError as error:
            raise UsageError(locked_message(args.out, error)) from None
        except (RunExistsError, FileNotFoundError, NotADirectoryError, ValueError) as error:
            raise UsageError(str(error)) from error
        if dashboard is not None:
            display(dashboard)
        try:
            run = trainer.train(run_dir, progress=dashboard is None)
        except KeyboardInterrupt:
            if dashboard is not None:
                saved = f"; checkpoint in {args.out} (resume with --resume)" if args.out else ""
                dashboard.status.value = f"<b>interrupted</b> at step {trainer.step}{escape(saved)}"
            raise
        self._store(args.output, run)
        display(run)

    # -- %rmu_eval ---------------------------------------------------------------------------------

    @magic_arguments()
    @flag_arguments([model_flag(help="a notebook variable (model, RMURun, finished job) or a source: "
                                     "smollm2-135m, an HF or run directory")])
    @argument("--data", nargs="+", required=True, metavar="QUESTIONS",
              help="question sets: notebook variables (lists of Question) or sources: bundled:NAME, a file, an HF dataset")
    @flag_arguments(eval_flags(limit=None))
    @argument("--save", default=None, metavar="FILE", help="also write the result as JSON")
    @flag_arguments(output_flags(quiet=False))
    @argument("-o", "--output", default="rmu_result", help="variable to store the EvalResult in [rmu_result]")
    @line_magic
    def rmu_eval(self, line: str) -> None:
        """Score a model on multiple-choice questions (rmu_lens.evaluate); store the EvalResult."""
        from rmu_lens.eval import evaluate

        args = self._parse(self.rmu_eval, line)
        if args.batch_size < 1:
            raise UsageError(f"--batch-size {args.batch_size} must be at least 1")
        if not args.output.isidentifier():
            raise UsageError(f"-o {args.output!r} is not a valid Python variable name")
        questions = self._questions(args.data)
        model = self._model(args.model, load=False)
        try:
            result = evaluate(model, questions, mode=args.mode, batch_size=args.batch_size, progress=not args.no_progress)
        except (ValueError, TypeError, FileNotFoundError) as error:
            raise UsageError(f"%rmu_eval: {error}") from error
        result.meta["data"] = " ".join(args.data)
        if args.save:
            result.save(args.save)
        self._store(args.output, result)
        display(result)

    # -- %rmu_compare -------------------------------------------------------------------------------

    @magic_arguments()
    @argument("base", help="the original model's EvalResult: a notebook variable or a results JSON file")
    @argument("new", help="the edited model's EvalResult: a notebook variable or a results JSON file")
    @argument("--forget-subjects", nargs="+", default=None, help="subjects or tasks meant to be forgotten")
    @argument("--metric", choices=("acc", "acc_norm"), default="acc", help="acc_norm needs cloze results")
    @argument("-o", "--output", default="rmu_comparison", help="variable to store the Comparison in [rmu_comparison]")
    @line_magic
    def rmu_compare(self, line: str) -> None:
        """Per-subject accuracy change between two evaluations (rmu_lens.compare); store the Comparison."""
        from rmu_lens.eval import EvalResult, ResultFileError, compare

        args = self._parse(self.rmu_compare, line)
        results = []
        for name in (args.base, args.new):
            value = self._lookup(name)
            if value is None:
                if not Path(name).expanduser().is_file():
                    raise UsageError(f"{name} is neither a notebook variable nor a results file")
                value = name
            elif not isinstance(value, EvalResult):
                raise UsageError(f"{name} holds a {type(value).__name__}, not an EvalResult (from %rmu_eval)")
            results.append(value)
        try:
            comparison = compare(*results, forget_subjects=args.forget_subjects, metric=args.metric)
        except (ValueError, ResultFileError) as error:
            raise UsageError(str(error)) from error
        self._store(args.output, comparison)
        display(comparison)

    # -- %rmu_analyze -------------------------------------------------------------------------------

    @magic_arguments()
    @argument("run", help="a notebook variable holding an RMURun (or a finished job) or an unlearned model, a run "
                          "directory, or an unlearned model folder / hub name (u, c and l are then estimated)")
    @argument("--base-model", default=None,
              help="the model before RMU: a notebook variable or a source [the model a run directory recorded]")
    @argument("--forget", nargs="+", default=[], metavar="CORPUS", help="forget sets, named after their topics")
    @argument("--retain", nargs="+", default=[], metavar="CORPUS", help="retain sets")
    @argument("--adjacent", nargs="+", default=[], metavar="CORPUS", help="sets near the forget domain")
    @argument("--distant", nargs="+", default=[], metavar="CORPUS", help="unrelated sets")
    @argument("--questions", nargs="+", default=None, metavar="QUESTIONS", help="questions for the knowledge probe")
    @argument("--comparison", default=None, help="a notebook variable holding a Comparison (%%rmu_compare): adds damage")
    @argument("--layers", type=int_list, default=None, help="comma-separated layers to analyse [all]")
    @argument("--max-texts", type=int, default=32, help="texts per dataset [32]")
    @argument("--no-probes", action="store_true", help="skip the probes (faster)")
    @argument("--save", default=None, metavar="DIR",
              help="also write analysis.json into DIR (and recovery.json, for a model without a run record)")
    @argument("-o", "--output", default="rmu_analysis", help="variable to store the Analysis in [rmu_analysis]")
    @argument("--recovery-output", default="rmu_recovery",
              help="variable to store the estimate of u, c and l in, for a model without a run record [rmu_recovery]")
    @line_magic
    def rmu_analyze(self, line: str) -> None:
        """Compare the model before and after RMU inside (analyze_run, or analyze_model for a model without a
        run record: u, c and l estimated, the Recovery stored too and shown with the explorers); store the Analysis."""
        from IPython.display import HTML

        from rmu_lens.analysis import analyze_model, analyze_run
        from rmu_lens.eval import Comparison
        from rmu_lens.rmu.record import RMURun
        from rmu_lens.jupyter.display import analysis_html

        args = self._parse(self.rmu_analyze, line)
        for flag, name in (("-o", args.output), ("--recovery-output", args.recovery_output)):
            if not name.isidentifier():
                raise UsageError(f"{flag} {name!r} is not a valid Python variable name")
        if args.max_texts < 2:
            raise UsageError(f"--max-texts {args.max_texts} must be at least 2")
        run = self._run(args.run, plain=True)
        plain = not isinstance(run, (Path, RMURun))
        datasets: dict[str, tuple[Any, str]] = {}
        for role in ("forget", "retain", "adjacent", "distant"):
            for corpus in self._corpora(getattr(args, role), f"--{role}", 0):
                if corpus.name in datasets:
                    raise UsageError(f"two datasets are named {corpus.name!r}: give each a distinct name")
                datasets[corpus.name] = (corpus, role)
        if not datasets:
            raise UsageError("name the datasets to read activations on: --forget / --retain / --adjacent / --distant")
        if plain and not args.base_model:
            raise UsageError(f"--base-model is needed for {args.run}: a model without a run record names no base")
        base_source = args.base_model or self._recorded_base(run, args.run)
        base = self._model(base_source, load=True)
        comparison = None
        if args.comparison:
            comparison = self._lookup(args.comparison)
            if not isinstance(comparison, Comparison):
                raise UsageError(f"--comparison {args.comparison}: not a Comparison (make one with %rmu_compare)")
        questions = self._questions(args.questions) if args.questions else None
        recovery = None
        try:
            options = dict(questions=questions, comparison=comparison, layers=args.layers, max_texts=args.max_texts,
                           probes=not args.no_probes)
            if plain:
                from rmu_lens.analysis.analyze import forget_and_retain
                from rmu_lens.analysis.recover import recover

                unlearned = self._model(run, load=True) if isinstance(run, str) else run
                if unlearned is base:
                    raise UsageError(f"%rmu_analyze: {args.run} and --base-model {base_source} are the same object: "
                                     f"unlearn edits its model in place, so load the original again for --base-model")
                forget, retain = forget_and_retain(datasets)
                recovery = recover(base, unlearned, forget, retain, layers=args.layers, max_texts=args.max_texts)
                analysis = analyze_model(base, unlearned, datasets, recovery=recovery, **options)
            else:
                analysis = analyze_run(base, run, datasets, **options)
        except (ValueError, FileNotFoundError) as error:
            raise UsageError(f"%rmu_analyze: {error}") from error
        if args.save:
            analysis.save(args.save)
            if recovery is not None:
                recovery.save(args.save)
        self._store(args.output, analysis)
        display(HTML(analysis_html(analysis)))
        if recovery is not None:
            self._store(args.recovery_output, recovery)
            for explorer in plain_model_explorers(analysis, recovery, comparison):
                display(explorer)

    def _run(self, name: str, plain: bool = False) -> Any:
        """An RMURun from a notebook variable (or finished job), or read from a run directory path; with
        ``plain``, also an unlearned model (a bridge variable, returned as is) or a model folder / hub name
        (returned as a str)."""
        from rmu_lens.errors import RMULensError
        from rmu_lens.jupyter.dashboard import TrainingJob
        from rmu_lens.rmu.record import RMURun

        value = self._lookup(name)
        if isinstance(value, TrainingJob):
            if not value.done:
                raise UsageError(f"{name} is still training: wait with {name}.result() first")
            value = value.result()
        if isinstance(value, RMURun):
            return value
        if plain and value is not None and hasattr(value, "hook_dict"):
            return value
        if value is not None:
            raise UsageError(f"{name} holds a {type(value).__name__}, not an RMURun (from %rmu_unlearn)")
        path = Path(name).expanduser()
        if not (path / "run.json").is_file():
            hub_like = not path.exists() and name.count("/") == 1 and not name.startswith((".", "/", "~"))
            if plain and ((path / "config.json").is_file() or hub_like):
                return name  # a model folder or a hub name: u, c and l are estimated
            raise UsageError(f"{name} is neither a notebook variable nor a run directory (no run.json)"
                             + (" nor a model folder (config.json) or hub name" if plain else ""))
        try:
            return RMURun.load(path)
        except RMULensError as error:
            raise UsageError(f"{name}: {error}") from error

    def _recorded_base(self, run: Any, name: str) -> str:
        """The base model a run read back from its directory recorded, when that is a local directory."""
        recorded = run.record.get("model", {}).get("name_or_path", "") if run.model is None else ""
        if recorded and Path(recorded).is_dir():
            return recorded
        raise UsageError(
            f"--base-model is needed for {name}: unlearn edits its model in place, so load the original again "
            f"(a notebook variable or a source such as smollm2-135m)"
        )


def plain_model_explorers(analysis: Any, recovery: Any, comparison: Any = None) -> list[Any]:
    """What %rmu_analyze shows for a model without a run record: the estimate (RecoveryExplorer), then the
    layers read against û (LayerExplorer), and the probes and damage when the analysis has them."""
    from rmu_lens.jupyter.explorers import DamageExplorer, LayerExplorer, ProbeExplorer, RecoveryExplorer

    explorers = [RecoveryExplorer(recovery), LayerExplorer(analysis)]
    if analysis.probes:
        explorers.append(ProbeExplorer(analysis))
    if analysis.damage is not None and analysis.damage.shift_map:
        explorers.append(DamageExplorer(analysis, comparison))
    return explorers


def register(ipython: Any) -> None:
    """Register the magics on an IPython shell."""
    ipython.register_magics(RMULensMagics)


def unregister(ipython: Any) -> None:
    """Remove the magics again (IPython has no public call for it)."""
    manager = ipython.magics_manager
    for kind, names in MAGIC_NAMES.items():
        for name in names:
            manager.magics[kind].pop(name, None)
    manager.registry.pop(RMULensMagics.__name__, None)


__all__ = ["RMULensMagics", "register", "unregister", "parse_settings"]
