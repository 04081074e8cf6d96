"""Magics split their arguments as a shell does, and what they show in widgets is escaped."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError

from tests.helpers import texts

SETTINGS = "--layer 2 --alpha 5 --lr 1e-3 --steering-coeff 8 --batch-size 2 --max-batches 2 --max-length 24 --retain-max-length 24"


@pytest.fixture(scope="module")
def ip():
    from IPython import get_ipython
    from IPython.testing.globalipapp import start_ipython

    shell = start_ipython() or get_ipython()
    shell.run_line_magic("load_ext", "rmu_lens")
    yield shell
    shell.run_line_magic("unload_ext", "rmu_lens")


@pytest.fixture
def notebook(ip, make_tiny):
    ip.user_ns.update(tiny=make_tiny(n_layers=4, seed=1), bio=texts("bio", 4), wiki=texts("retain", 4))
    return ip


@pytest.mark.parametrize("quoted", ["'{path}'", '"{path}"'])
def test_quoted_out_paths_lose_their_quotes(notebook, tmp_path, quoted):
    path = tmp_path / "my runs" / "x"
    out = quoted.format(path=path)
    notebook.run_line_magic("rmu_unlearn", f"--model tiny --forget bio --retain wiki {SETTINGS} --no-dashboard --out {out} -o run")
    assert (path / "run.json").is_file()
    assert notebook.user_ns["run"].out == path
    assert not any(p.name.startswith(("'", '"')) for p in tmp_path.rglob("*"))


def test_an_unclosed_quote_is_a_usage_error(notebook):
    with pytest.raises(UsageError, match="could not parse the arguments"):
        notebook.run_line_magic("rmu_unlearn", "--model tiny --forget bio --retain wiki --out 'runs/x")


def test_interrupted_status_escapes_the_out_path(notebook, tmp_path, monkeypatch):
    from rmu_lens.jupyter.dashboard import TrainingDashboard
    from rmu_lens.rmu.trainer import RMUTrainer

    shown = []
    original_init = TrainingDashboard.__init__

    def keep(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        shown.append(self)

    def interrupt(self):  # Ctrl-C during the first step
        raise KeyboardInterrupt

    monkeypatch.setattr(TrainingDashboard, "__init__", keep)
    monkeypatch.setattr(RMUTrainer, "train_step", interrupt)
    out = tmp_path / "<img src=x onerror=alert(1)>"
    with pytest.raises(KeyboardInterrupt):
        notebook.run_line_magic("rmu_unlearn", f"--model tiny --forget bio --retain wiki {SETTINGS} --out '{out}'")
    status = shown[-1].status.value
    assert status.startswith("<b>interrupted</b> at step 0")
    assert "<img" not in status and "&lt;img src=x onerror=alert(1)&gt;" in status
