"""The magics around the explorers: %rmu_analyze on a plain model shows them; a locked run directory is one line."""

from __future__ import annotations

import os

import pytest
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output

from tests.helpers import texts
from tests.test_jupyter_magics import SETTINGS, ip  # noqa: F401  (the shared IPython shell fixture)
from tests.test_recover import FORGET, LAYER, RETAIN, _planted_pair

WIDGET = "application/vnd.jupyter.widget-view+json"


def test_analyze_on_a_plain_model_stores_the_estimate_and_shows_the_explorers(ip, tmp_path):  # noqa: F811
    from rmu_lens.analysis import Analysis
    from rmu_lens.analysis.recover import Recovery
    from rmu_lens.models import load_model

    base, new, tok, _ = _planted_pair()
    ip.user_ns.update(base=load_model(base, tokenizer=tok), edited=load_model(new, tokenizer=tok), topic=FORGET, wiki=RETAIN)
    try:
        with capture_output() as captured:
            ip.run_line_magic("rmu_analyze", f"edited --base-model base --forget topic --retain wiki --no-probes -o a "
                                             f"--recovery-output est --save {tmp_path}")
        analysis, recovery = ip.user_ns.pop("a"), ip.user_ns.pop("est")
        assert isinstance(analysis, Analysis) and isinstance(recovery, Recovery)
        assert recovery.topics["topic"].collapsed and recovery.topics["topic"].layer == LAYER == analysis.collapse.layer
        assert Recovery.load(tmp_path).topics["topic"].layer == LAYER and (tmp_path / "analysis.json").is_file()
        html = "".join(o.data.get("text/html", "") for o in captured.outputs)
        assert "Analysis" in html
        widgets = [o for o in captured.outputs if WIDGET in o.data]
        assert len(widgets) == 2  # RecoveryExplorer, LayerExplorer (no probes, no damage asked for)
        with pytest.raises(UsageError, match="same object"):
            ip.run_line_magic("rmu_analyze", "edited --base-model edited --forget topic --retain wiki --no-probes")
        with pytest.raises(UsageError, match="--recovery-output '1x' is not a valid"):
            ip.run_line_magic("rmu_analyze", "edited --base-model base --forget topic --retain wiki --recovery-output 1x")
    finally:
        for name in ("base", "edited", "topic", "wiki"):
            ip.user_ns.pop(name, None)


def test_unlearn_on_a_locked_run_directory_is_one_usage_error(ip, make_tiny, tmp_path):  # noqa: F811
    from rmu_lens._io import DirectoryLock

    out = tmp_path / "run"
    out.mkdir()
    lock = DirectoryLock(out)
    lock.acquire(lambda pid: AssertionError(f"the lock is already held by {pid}"))  # as a live run elsewhere holds it
    ip.user_ns.update(tiny=make_tiny(n_layers=4, seed=1), bio=texts("bio", 8), wiki=texts("retain", 12))
    try:
        for background in ("", "--background"):
            line = f"--model tiny --forget bio --retain wiki --steering-coeff 8 {SETTINGS} --no-dashboard --out {out} {background}"
            with pytest.raises(UsageError) as info:
                ip.run_line_magic("rmu_unlearn", line)
            message = str(info.value)
            assert f"--out {out} is in use by process {os.getpid()}" in message
            assert "--resume" in message and "\n" not in message
            assert info.value.__cause__ is None  # one line: no chained traceback
        assert not (out / "run.json").exists()  # nothing written
    finally:
        lock.release()
        for name in ("tiny", "bio", "wiki"):
            ip.user_ns.pop(name, None)
