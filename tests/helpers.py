"""Small text corpora, weight snapshots and a report reader for tests."""

from __future__ import annotations

import random
from html.parser import HTMLParser

import pytest
import torch

WORDS = {
    "bio": "virus capsid host cell membrane genome protein enzyme replication immune antibody vaccine bacteria".split(),
    "cyber": "attacker password encryption firewall malware network key certificate phishing patch exploit log".split(),
    "retain": "river mountain empire painter harbour festival orchestra desert glacier castle harvest voyage".split(),
}


def texts(kind: str, n: int, seed: int = 0, min_words: int = 4, max_words: int = 30) -> list[str]:
    """``n`` texts of varied length (so batches need padding) from a small vocabulary."""
    rng = random.Random(f"{kind}-{seed}")
    return [" ".join(rng.choice(WORDS[kind]) for _ in range(rng.randint(min_words, max_words))) for _ in range(n)]


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of every parameter and buffer, by name."""
    state = dict(model.named_parameters())
    state.update(dict(model.named_buffers()))
    return {name: tensor.detach().clone() for name, tensor in state.items()}


class ReportHTML(HTMLParser):
    """What a report shows: its data-key cells, <img> sources and figure ids (``figure-NAME``)."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.cells: dict[str, str] = {}
        self.images: list[str] = []
        self.figure_ids: list[str] = []
        self._key: str | None = None
        self.feed(html)

    @property
    def figures(self) -> list[str]:
        """Figure names, in order."""
        return [figure_id.removeprefix("figure-") for figure_id in self.figure_ids]

    @property
    def embedded_images(self) -> int:
        return sum(source.startswith("data:image/png;base64,") for source in self.images)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "data-key" in attrs:
            self._key = attrs["data-key"]
            self.cells[self._key] = ""
        if tag == "img":
            self.images.append(attrs["src"])
        if tag == "figure":
            self.figure_ids.append(attrs["id"])

    def handle_endtag(self, tag):
        if tag in ("td", "span"):
            self._key = None

    def handle_data(self, data):
        if self._key is not None:
            self.cells[self._key] += data


def edited_pair(n_layers: int = 2, scale: float = 3.0):
    """Two bridges over the same tiny random Llama; in the second, block 1's MLP output weight is scaled."""
    from rmu_lens.models import build_random_model, load_model

    def tiny():
        model, tokenizer = build_random_model("llama", n_layers=n_layers, d_model=32, seed=0)
        return load_model(model, tokenizer=tokenizer)

    base, unlearned = tiny(), tiny()
    with torch.no_grad():
        unlearned.blocks[1].mlp.out.weight.mul_(scale)
    return base, unlearned


@pytest.fixture(scope="module")
def single_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy CPU their spinning costs seconds.

    A module uses it with ``from tests.helpers import single_thread`` and
    ``pytestmark = pytest.mark.usefixtures("single_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
