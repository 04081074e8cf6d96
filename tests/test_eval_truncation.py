"""Over-long prompts are cut from the left as lm-eval's HFLM cuts them.

lm-eval (``HFLM._loglikelihood_tokens``, causal models) feeds each choice as
``(context_ids + continuation_ids)[-(max_length + 1):][:-1]`` and scores the last
``len(continuation_ids)`` positions. The reference below applies that rule with a plain HF forward.
"""

from __future__ import annotations

import pytest
import torch

from rmu_lens.eval import scoring
from rmu_lens.eval.prompts import TokenizedRequest
from rmu_lens.models import build_random_model

MAX_LENGTH = 24


def lm_eval_rule(model, request: TokenizedRequest, max_length: int) -> list[float]:
    scores = []
    with torch.no_grad():
        for continuation in request.continuation_ids:
            window = (request.context_ids + continuation)[-(max_length + 1):][:-1]
            assert len(window) <= max_length
            logprobs = model(input_ids=torch.tensor([window])).logits[0, -len(continuation):].float().log_softmax(-1)
            scores.append(float(logprobs[torch.arange(len(continuation)), continuation].sum()))
    return scores


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def tiny(request):
    model, _ = build_random_model(request.param, n_layers=2, d_model=32, seed=4)
    return model.eval()


def requests() -> list[TokenizedRequest]:
    context = [(7 * i) % 50 + 3 for i in range(40)]
    return [
        TokenizedRequest(context, [[11], [12], [13], [14]]),  # letter-like: one token per choice
        TokenizedRequest(context, [[20, 21, 22], [23], [24, 25, 26, 27, 28, 29], [30, 31]]),  # cloze-like
        TokenizedRequest(context[:10], [[20, 21], [22]]),  # fits: nothing cut
    ]


def test_over_long_prompts_score_as_lm_eval_cuts_them(tiny):
    batch = requests()
    assert all(len(r.context_ids) + max(map(len, r.continuation_ids)) > MAX_LENGTH + 1 for r in batch[:2])
    ours = scoring.score_requests(tiny, batch, batch_size=2, progress=False, max_length=MAX_LENGTH)
    for request, row in zip(batch, ours):
        torch.testing.assert_close(torch.tensor(row), torch.tensor(lm_eval_rule(tiny, request, MAX_LENGTH)),
                                   rtol=0, atol=1e-4)


def test_a_continuation_longer_than_the_model_is_a_clear_error(tiny):
    with pytest.raises(ValueError, match="maximum length"):
        scoring.score_requests(tiny, [TokenizedRequest([3, 4], [[5] * (MAX_LENGTH + 1)])], progress=False,
                               max_length=MAX_LENGTH)
