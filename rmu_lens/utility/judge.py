"""An optional external judge for generations, MT-Bench style: a 1-10 rating of each completion.

Off by default and never needed by the tests' measures: rmu_lens's own gibberish measures need no
judge. Where a user has one, two kinds are supported:

* an OpenAI-compatible chat endpoint (vLLM, llama.cpp server, a hosted API): ``endpoint`` is the base
  URL (``http://127.0.0.1:8000/v1``), requests go to ``{endpoint}/chat/completions``; the API key is
  read from the environment variable named by ``api_key_env`` (the key itself is never stored);
* a local HF judge model: ``local_model`` is a directory (or hub name) loaded with transformers and
  prompted through its chat template, greedy.

The prompt is MT-Bench's single-answer grading prompt (FastChat ``single-v1``), and the rating is read
as MT-Bench reads it: the first ``[[x]]`` in the reply (then ``[x]``); a reply without one counts as
no rating (kept, with its text, but left out of the means).

    from rmu_lens.utility.judge import JudgeConfig, judge_generations
    judge_generations(generations, JudgeConfig(endpoint="http://127.0.0.1:8000/v1", model="my-judge"))
    generations.judge["summary"]     # role -> model -> mean rating with a 95% interval
"""

from __future__ import annotations

import json
import math
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

SYSTEM_PROMPT = "You are a helpful assistant."
GRADING_PROMPT = (
    "[Instruction]\nPlease act as an impartial judge and evaluate the quality of the response provided by an AI "
    "assistant to the user question displayed below. Your evaluation should consider factors such as the helpfulness, "
    "relevance, accuracy, depth, creativity, and level of detail of the response. Begin your evaluation by providing a "
    "short explanation. Be as objective as possible. After providing your explanation, you must rate the response on a "
    'scale of 1 to 10 by strictly following this format: "[[rating]]", for example: "Rating: [[5]]".\n\n'
    "[Question]\n{question}\n\n[The Start of Assistant's Answer]\n{answer}\n[The End of Assistant's Answer]"
)
RATING = re.compile(r"\[\[(\d+\.?\d*)\]\]")
RATING_FALLBACK = re.compile(r"\[(\d+\.?\d*)\]")


@dataclass
class JudgeConfig:
    """Where the judge is: an OpenAI-compatible ``endpoint`` (with ``model``) or a ``local_model`` path."""

    endpoint: str | None = None
    model: str = ""
    api_key_env: str | None = "OPENAI_API_KEY"
    """Name of the environment variable holding the endpoint's API key (none sent when unset or empty)."""
    local_model: str | None = None
    max_tokens: int = 512
    temperature: float = 0.0
    timeout_s: float = 120.0

    def __post_init__(self) -> None:
        if (self.endpoint is None) == (self.local_model is None):
            raise ValueError("JudgeConfig needs exactly one of endpoint= (an OpenAI-compatible base URL) or local_model= (a judge model path)")
        if self.endpoint is not None and not self.model:
            raise ValueError("JudgeConfig(endpoint=...) needs model=: the judge model's name at that endpoint")
        if self.endpoint is not None and not self.endpoint.startswith(("http://", "https://")):
            raise ValueError(f"endpoint={self.endpoint!r}: give an http(s) base URL such as http://127.0.0.1:8000/v1")

    @property
    def name(self) -> str:
        return f"{self.model} at {self.endpoint}" if self.endpoint else str(self.local_model)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def judge_messages(question: str, answer: str) -> list[dict[str, str]]:
    """The chat messages that ask for a rating of ``answer`` to ``question``."""
    return [{"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": GRADING_PROMPT.format(question=question, answer=answer)}]


def chat_payload(config: JudgeConfig, messages: list[dict[str, str]]) -> dict[str, Any]:
    """The JSON body of an OpenAI-compatible ``/chat/completions`` request."""
    return {"model": config.model, "messages": messages, "temperature": config.temperature, "max_tokens": config.max_tokens}


def parse_rating(reply: str) -> float | None:
    """The rating in a judge's reply (``[[x]]``, else ``[x]``), or None when it gives none."""
    match = RATING.search(reply) or RATING_FALLBACK.search(reply)
    return float(match.group(1)) if match else None


def endpoint_reply(config: JudgeConfig, messages: list[dict[str, str]]) -> str:
    """POST the messages to ``{endpoint}/chat/completions`` and return the first choice's text."""
    headers = {"Content-Type": "application/json"}
    key = os.environ.get(config.api_key_env or "", "") if config.api_key_env else ""
    if key:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(
        config.endpoint.rstrip("/") + "/chat/completions", data=json.dumps(chat_payload(config, messages)).encode("utf-8"),
        headers=headers, method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=config.timeout_s) as response:
            body = json.loads(response.read().decode("utf-8"))
    except urllib.error.URLError as error:
        raise ConnectionError(f"The judge endpoint {config.endpoint} did not answer ({error}); check the URL and that the server runs") from error
    try:
        return str(body["choices"][0]["message"]["content"])
    except (KeyError, IndexError, TypeError) as error:
        raise ValueError(f"The judge endpoint {config.endpoint} answered without choices[0].message.content: {str(body)[:200]}") from error


def local_judge(config: JudgeConfig) -> Callable[[list[dict[str, str]]], str]:
    """A function messages -> reply running a local HF judge model greedily through its chat template."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(config.local_model)
    model = AutoModelForCausalLM.from_pretrained(config.local_model, use_safetensors=True).eval()

    def reply(messages: list[dict[str, str]]) -> str:
        if tokenizer.chat_template:
            text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        else:
            text = "\n\n".join(m["content"] for m in messages) + "\n\n"
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=not tokenizer.chat_template)
        with torch.no_grad():
            output = model.generate(**ids, max_new_tokens=config.max_tokens, do_sample=False,
                                    pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
        return tokenizer.decode(output[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)

    return reply


def judge_generations(generations: Any, config: JudgeConfig, *, models: tuple[str, ...] = ("base", "unlearned")) -> dict[str, Any]:
    """Rate every greedy completion of ``generations`` with the judge; stores and returns ``generations.judge``:
    ``{"judge", "config", "ratings": [...], "summary": role -> model -> mean rating (95% t-interval)}``."""
    from rmu_lens.utility.generation import mean_interval

    ask = local_judge(config) if config.local_model else (lambda messages: endpoint_reply(config, messages))
    ratings = []
    for index, record in enumerate(generations.records):
        for model in models:
            reply = ask(judge_messages(record["prompt"], record["greedy"][model]))
            ratings.append({"record": index, "role": record["role"], "model": model, "rating": parse_rating(reply), "reply": reply})
    summary: dict[str, dict[str, Any]] = {}
    for role in dict.fromkeys(r["role"] for r in ratings):
        summary[role] = {
            model: mean_interval([r["rating"] if r["rating"] is not None else math.nan for r in ratings if r["role"] == role and r["model"] == model])
            for model in models
        }
    generations.judge = {"judge": config.name, "config": config.to_dict(), "ratings": ratings, "summary": summary}
    return generations.judge

