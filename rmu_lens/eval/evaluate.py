"""evaluate(): questions → lm-eval prompts → packed, batched scoring → an EvalResult.

Under ``torchrun`` (an initialised torch.distributed group) each rank scores every world_size-th
question and the records are gathered, so every rank returns the full result.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rmu_lens.eval.prompts import build_request, encode_requests, get_prompt_mode
from rmu_lens.eval.questions import Question, check_question, load_questions
from rmu_lens.eval.results import EvalResult
from rmu_lens.eval.scoring import score_requests

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

def resolve_model_source(source: str | os.PathLike) -> str:
    """A run directory (run.json + model/) means its model/; anything else is passed to load_model."""
    path = Path(source).expanduser()
    if path.is_dir() and (path / "run.json").is_file() and (path / "model").is_dir():
        return str(path / "model")
    return os.fspath(source)


def resolve_model(
    model: Any, tokenizer: PreTrainedTokenizerBase | None = None, device: str | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, str]:
    """(HF causal LM, its own tokenizer, a display name) from a bridge, an HF model or a source string."""
    from transformers import PreTrainedModel

    from rmu_lens.models import hf_model_of, input_device, load_model, same_device, tokenizer_of

    if isinstance(model, (str, os.PathLike)):
        source = resolve_model_source(model)
        bridge = load_model(source, device=device)
        return hf_model_of(bridge), tokenizer or tokenizer_of(bridge), os.fspath(model)
    if device is not None:
        # A loaded model is scored where it is (inputs go to its embedding's device); never move it silently.
        hf = hf_model_of(model) if hasattr(model, "original_model") else model
        placed = input_device(hf)
        if not same_device(placed, device):
            raise ValueError(
                f"evaluate(device={device!r}) got a model loaded on {placed}: device= applies when evaluate loads "
                f"the model from a source; load it with rmu_lens.load_model(..., device={device!r}) instead"
            )
    if isinstance(model, PreTrainedModel):
        if tokenizer is None:
            raise ValueError("evaluate(hf_model, ...) needs tokenizer=: pass the tokenizer that goes with the model")
        return model, tokenizer, getattr(model, "name_or_path", "") or type(model).__name__
    if hasattr(model, "original_model"):  # a TransformerBridge: run its HF model so bridge hooks apply
        hf_model = hf_model_of(model)
        name = getattr(hf_model, "name_or_path", "") or getattr(hf_model.config, "_name_or_path", "") or "bridge"
        return hf_model, tokenizer or tokenizer_of(model), name
    raise TypeError(
        f"evaluate needs a TransformerBridge (rmu_lens.load_model), an HF model with tokenizer=, or a model "
        f"source string, not {type(model).__name__}"
    )


def _gather(scores: dict[int, list[float]], world: int) -> dict[int, list[float]]:
    import torch.distributed as dist

    parts: list[dict[int, list[float]] | None] = [None] * world
    dist.all_gather_object(parts, scores)
    merged: dict[int, list[float]] = {}
    for part in parts:
        merged.update(part or {})
    return merged


def _argmax(values: Sequence[float]) -> int:
    """Index of the first maximum (numpy.argmax's tie rule, which lm-eval uses)."""
    best = 0
    for i, value in enumerate(values):
        if value > values[best]:
            best = i
    return best


def question_record(question: Question, loglikelihoods: list[float], mode: str) -> dict[str, Any]:
    """One question's record: log-likelihoods, prediction(s) and correctness, as lm-eval scores them."""
    prediction = _argmax(loglikelihoods)
    record = {
        "id": question.id,
        "task": question.task,
        "subject": question.group,
        "answer": question.answer,
        "loglikelihoods": loglikelihoods,
        "prediction": prediction,
        "correct": prediction == question.answer,
    }
    if get_prompt_mode(mode).acc_norm:
        # lm-eval's acc_norm divides by len(choice): characters of the choice text, the leading space
        # not counted (its acc_bytes divides by UTF-8 bytes instead).
        normalised = [ll / len(c) if c else -math.inf for ll, c in zip(loglikelihoods, question.choices)]
        record["pred_norm"] = _argmax(normalised)
        record["correct_norm"] = record["pred_norm"] == question.answer
    return record


def evaluate(
    model: Any,
    questions: Sequence[Question] | str | os.PathLike,
    mode: str = "cloze",
    batch_size: int = 16,
    progress: bool = True,
    *,
    tokenizer: PreTrainedTokenizerBase | None = None,
    device: str | None = None,
) -> EvalResult:
    """Score multiple-choice questions the way lm-evaluation-harness does (0-shot), faster.

    ``model``: a TransformerBridge (hooks added to it apply), an HF causal LM with ``tokenizer=``,
    or a source for :func:`rmu_lens.load_model` (a run directory means its ``model/``).
    ``questions``: from :func:`load_questions`, or a source for it. ``mode``: ``letter`` (lm-eval's
    ``wmdp_*``/``mmlu_*``: scores " A".." D") or ``cloze`` (``mmlu_*_continuation``: scores each
    choice's text; adds ``acc_norm``).
    """
    prompt = get_prompt_mode(mode)
    if isinstance(questions, (str, os.PathLike)):
        data_source = os.fspath(questions)
        questions = load_questions(questions)
    else:
        data_source = ", ".join(sorted({q.task for q in questions}))
    questions = list(questions)
    if not questions:
        raise ValueError("evaluate got no questions")
    for question in questions:
        check_question(question)
    duplicates = len(questions) - len({q.id for q in questions})
    if duplicates:
        raise ValueError(f"{duplicates} question id(s) occur more than once; ids must be unique (records and compare() pair by id)")
    hf_model, tokenizer, model_name = resolve_model(model, tokenizer, device)
    started = time.perf_counter()
    from rmu_lens.distributed import rank_and_world

    rank, world = rank_and_world()
    mine = list(range(rank, len(questions), world))
    requests = encode_requests(tokenizer, [build_request(questions[i], mode) for i in mine])
    pad_id = next((t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id) if t is not None), 0)
    scores = score_requests(hf_model, requests, batch_size=batch_size, progress=progress and rank == 0, pad_id=pad_id)
    by_index = dict(zip(mine, scores))
    if world > 1:
        by_index = _gather(by_index, world)
    records = [question_record(q, by_index[i], mode) for i, q in enumerate(questions)]
    meta = {
        "model": model_name,
        "data": data_source,
        "mode": mode,
        "lm_eval_tasks": prompt.lm_eval_tasks,
        "num_fewshot": 0,
        "n_questions": len(questions),
        "batch_size": batch_size,
        "dtype": str(next(hf_model.parameters()).dtype).replace("torch.", ""),
        "tokenizer_adds_bos": _adds_bos(tokenizer),
        "world_size": world,
        "seconds": round(time.perf_counter() - started, 3),
        "versions": _versions(),
    }
    return EvalResult(mode=mode, records=records, meta=meta)


def _adds_bos(tokenizer: PreTrainedTokenizerBase) -> bool:
    ids = tokenizer("a")["input_ids"]
    return bool(ids) and tokenizer.bos_token_id is not None and ids[0] == tokenizer.bos_token_id


def _versions() -> dict[str, str]:
    from importlib import metadata

    versions = {}
    for name in ("rmu-lens", "torch", "transformers", "transformer-lens"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions
