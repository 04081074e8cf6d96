"""The optional judge: MT-Bench's prompt and rating format, the OpenAI-compatible request, against a local stub."""

from __future__ import annotations

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from rmu_lens.utility.generation import GenerationConfig, Generations
from rmu_lens.utility.judge import JudgeConfig, chat_payload, judge_generations, judge_messages, parse_rating


def generations() -> Generations:
    measures = {"base_loss": 1.0, "repeated_ngram_rate": 0.0, "n_tokens": 3}
    records = [{"role": role, "prompt": f"Question: {role} {i}?\nAnswer:", "greedy": {"base": f"good {i}", "unlearned": f"bad {i}"},
                "sampled": None, "measures": {"base": measures, "unlearned": measures}}
               for role in ("forget", "distant") for i in range(2)]
    return Generations(records=records, config=GenerationConfig())


class StubJudge(BaseHTTPRequestHandler):
    """Rates answers containing "good" 8 and "bad" 2; answers one request without a rating."""

    requests: list[tuple[str, dict, dict]] = []

    def do_POST(self):  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        StubJudge.requests.append((self.path, dict(self.headers), body))
        answer = body["messages"][-1]["content"].split("[The Start of Assistant's Answer]\n")[1]
        reply = "no rating here" if "bad 1" in answer else f"Fine. Rating: [[{8 if 'good' in answer else 2}]]"
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": reply}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def stub_endpoint():
    server = HTTPServer(("127.0.0.1", 0), StubJudge)
    StubJudge.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_rating_is_read_as_mt_bench_reads_it():
    assert parse_rating("Good answer. Rating: [[7]]") == 7.0
    assert parse_rating("Rating: [[6.5]] and later [[2]]") == 6.5
    assert parse_rating("Rating: [4]") == 4.0
    assert parse_rating("I cannot rate this") is None


def test_payload_carries_the_question_and_answer_verbatim():
    messages = judge_messages("What is <b>DNA</b>?", "A molecule.\n[[10]]")
    payload = chat_payload(JudgeConfig(endpoint="http://127.0.0.1:1/v1", model="judge"), messages)
    assert payload["model"] == "judge" and payload["temperature"] == 0.0
    assert "[Question]\nWhat is <b>DNA</b>?\n\n[The Start of Assistant's Answer]\nA molecule.\n[[10]]\n[The End" in payload["messages"][1]["content"]


def test_judge_config_refuses_ambiguous_or_incomplete_settings():
    with pytest.raises(ValueError, match="exactly one"):
        JudgeConfig()
    with pytest.raises(ValueError, match="model="):
        JudgeConfig(endpoint="http://127.0.0.1:1/v1")
    with pytest.raises(ValueError, match="http"):
        JudgeConfig(endpoint="127.0.0.1:1", model="m")


def test_judge_generations_against_a_local_stub_endpoint(stub_endpoint, monkeypatch):
    monkeypatch.setenv("RMU_LENS_TEST_JUDGE_KEY", "secret-token")
    result = generations()
    judged = judge_generations(result, JudgeConfig(endpoint=stub_endpoint, model="stub", api_key_env="RMU_LENS_TEST_JUDGE_KEY", timeout_s=10))
    assert len(StubJudge.requests) == 8
    path, headers, body = StubJudge.requests[0]
    assert path == "/v1/chat/completions" and headers["Authorization"] == "Bearer secret-token" and body["model"] == "stub"
    assert judged["summary"]["forget"]["base"]["mean"] == 8.0 and judged["summary"]["forget"]["unlearned"]["n"] == 1
    assert judged["summary"]["distant"]["unlearned"]["mean"] == 2.0
    assert sum(r["rating"] is None for r in judged["ratings"]) == 2
    assert result.judge is judged
    assert "secret-token" not in json.dumps(result.to_dict())


def test_an_unreachable_endpoint_is_one_clear_error():
    with pytest.raises(ConnectionError, match="did not answer"):
        judge_generations(generations(), JudgeConfig(endpoint="http://127.0.0.1:9/v1", model="m", timeout_s=2))


def test_judge_ratings_show_in_the_report(stub_endpoint):
    from rmu_lens.report import build_report
    from rmu_lens.utility.section import UtilitySection
    from tests.helpers import ReportHTML

    result = generations()
    judge_generations(result, JudgeConfig(endpoint=stub_endpoint, model="stub", api_key_env=None, timeout_s=10))
    cells = ReportHTML(build_report(title="t", utility=UtilitySection(generations=result)).html()).cells
    assert float(cells["utility.judge.forget.base"]) == 8.0
    assert math.isclose(float(cells["utility.judge.distant.unlearned"]), 2.0)
