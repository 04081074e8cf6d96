"""The notebook the browser test opens: a real RMU run on a tiny random model, a background run, an explorer."""

from __future__ import annotations

from pathlib import Path

import nbformat

SETTINGS = ("--layer 2 --steering-coeff 20 --alpha 50 --lr 2e-3 --batch-size 4 --max-length 64 "
            "--retain-max-length 64 --cycle")

CELLS = [
    # 0: set-up
    '''%load_ext rmu_lens
import random
import rmu_lens as rl
from rmu_lens.analysis import analyze_run
from rmu_lens.jupyter import LayerExplorer

WORDS = {
    "bio": "virus capsid host cell membrane genome protein enzyme replication immune antibody vaccine".split(),
    "retain": "river mountain empire painter harbour festival orchestra desert glacier castle harvest voyage".split(),
}

def texts(kind, n, seed=0):
    rng = random.Random(f"{kind}-{seed}")
    return [" ".join(rng.choice(WORDS[kind]) for _ in range(rng.randint(20, 60))) for _ in range(n)]

def tiny():
    model, tokenizer = rl.build_random_model("llama", n_layers=4, d_model=64, seed=0)
    return rl.load_model(model, tokenizer=tokenizer)

base, model = tiny(), tiny()
bio, wiki = texts("bio", 32), texts("retain", 32)
print("ready")''',
    # 1: training in the cell's own thread: the dashboard updates while the cell runs
    f"%rmu_unlearn --model model --forget bio --retain wiki {SETTINGS} --max-batches 150 -o first",
    # 2: training in a background thread: the Stop button works
    f"%rmu_unlearn --model model --forget bio --retain wiki {SETTINGS} --max-batches 100000 --background "
    "--out runs/browser --overwrite -o job",
    # 3: the stopped run
    '''run = job.result()
print("status:", run.status, "steps:", len(run.history))
print("files:", sorted(p.name for p in run.out.iterdir()))''',
    # 4: the layer explorer on an analysis of the run
    '''analysis = analyze_run(base, run, {"bio": (bio, "forget"), "wiki": (wiki, "retain")}, probes=False, progress=False)
explorer = LayerExplorer(analysis)
explorer''',
]


def write_notebook(path: Path) -> Path:
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in CELLS]
    nbformat.write(notebook, path)
    return path
