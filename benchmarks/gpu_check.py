"""One prepared GPU check: the published RMU shapes on one card, official recipe vs rmu_lens, one JSON out.

    python benchmarks/gpu_check.py --out gpu_check.json                      # one H100/H200, ~5-8 minutes
    python benchmarks/gpu_check.py --tiny --device cpu --out gpu_check.json  # the same code on tiny shapes

Random weights of the published shapes, synthetic tokens, no network. Models are built on the meta
device and materialised directly in bf16 on the target device (never fp32 first). Cases:

* ``zephyr``: Zephyr-7B (Mistral) shape, batch 4 x 512, layer 7, update 5-7. The official-style step
  (two full copies, whole forward with a hook on layer 7, every parameter requiring grad) against
  ``RMUTrainer.train_step`` in reference mode, alternating in one process on the same batches: median
  ms/step over the timed steps. Peak allocated and reserved memory of each in its own process.
  First-step losses of both, each computed in float32 from that step's activations (the official code
  computes its MSE in bf16: that value is reported too).
* ``yi``: Yi-34B shape, batch 2 x 512, layer 15: rmu_lens on one GPU, then the official recipe, whose
  out-of-memory error is caught and recorded.
* ``llama70b``: Llama-3-70B shape (80 layers, d 8192), layer 7: only the embeddings and layers 0-7 are
  materialised (on the device); layers 8-79, the final norm and the LM head stay on the meta device.
* ``eval``: a 1B-shaped Llama (16 layers, d 2048; byte tokenizer; float32, so that predictions can be
  compared exactly) on bundled questions: rmu_lens's evaluator against lm-evaluation-harness's HF
  backend, questions/s and differing predictions (must be 0).

Each case runs in its own subprocess (so peak-memory counters start from zero and an out-of-memory in
one case cannot poison another); its stderr passes through, its JSON comes back on stdout.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from bench_rmu_step import OfficialStep, RMULensStep, batches_of_step, make_batches  # noqa: E402

# Published shapes (random weights). ``tiny`` keeps each case's layer structure at toy width.
SHAPES = {
    "zephyr": dict(model_type="mistral", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                   num_attention_heads=32, num_key_value_heads=8, vocab_size=32000),
    "yi": dict(model_type="llama", hidden_size=7168, intermediate_size=20480, num_hidden_layers=60,
               num_attention_heads=56, num_key_value_heads=8, vocab_size=64000),
    "llama70b": dict(model_type="llama", hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
                     num_attention_heads=64, num_key_value_heads=8, vocab_size=128256),
    "eval": dict(model_type="llama", hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                 num_attention_heads=32, num_key_value_heads=8),
}
TINY = dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2)
TINY_LAYERS = {"zephyr": 10, "yi": 18, "llama70b": 12, "eval": 4}
# The published RMU settings of each case (WMDP paper): layer, c, alpha, batch.
SETTINGS = {
    "zephyr": dict(layer=7, steering_coeff=6.5, alpha=1200.0, batch_size=4, seq_len=512),
    "yi": dict(layer=15, steering_coeff=300.0, alpha=350.0, batch_size=2, seq_len=512),
    "llama70b": dict(layer=7, steering_coeff=6.5, alpha=1200.0, batch_size=4, seq_len=512),
}
TARGETS = {"zephyr_ms_per_step": 40.0, "zephyr_peak_allocated_gib": 17.0, "llama70b_peak_allocated_gib": 40.0}
CASES = ("zephyr-memory-official", "zephyr-memory-rmu_lens", "zephyr-timing", "yi", "llama70b", "eval")


def shape_of(name: str, tiny: bool) -> dict:
    shape = dict(SHAPES[name])
    if tiny:
        shape.update(TINY, num_hidden_layers=TINY_LAYERS[name])
        shape.setdefault("vocab_size", 512)
        shape["vocab_size"] = min(shape["vocab_size"], 512)
    return shape


def build_model(shape: dict, device: str, dtype: torch.dtype, keep_layers: int | None = None):
    """A random HF causal LM built on meta and materialised in ``dtype`` on ``device``.

    ``keep_layers``: materialise only the embeddings and the first ``keep_layers`` decoder layers;
    everything else stays on the meta device (RMU at layer l never runs it).
    """
    import transformers

    from rmu_lens.models import byte_tokenizer

    tokenizer = byte_tokenizer()
    settings = dict(shape)
    settings.setdefault("vocab_size", len(tokenizer))
    config = transformers.AutoConfig.for_model(
        settings.pop("model_type"), **settings, max_position_embeddings=4096, tie_word_embeddings=False,
        bos_token_id=0, eos_token_id=1, pad_token_id=1,
    )
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.eval()
    body = model.model
    parts = [model] if keep_layers is None else [body.embed_tokens, *body.layers[:keep_layers]]
    for part in parts:
        part.to_empty(device=device)
    generator = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.device.type == "meta":
                continue
            if parameter.ndim == 1:
                parameter.fill_(1.0)  # RMSNorm weights
            else:
                parameter.normal_(0.0, 0.02, generator=generator)
    # Rotary frequencies are computed at construction, not stored: build them again on the device.
    body.rotary_emb = type(body.rotary_emb)(config).to(device)
    return model, tokenizer


def step_args(name: str, args: argparse.Namespace) -> SimpleNamespace:
    settings = dict(SETTINGS[name])
    if args.tiny:
        settings.update(batch_size=2, seq_len=32)
    return SimpleNamespace(device=args.device, lr=5e-5, **settings)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def peak_memory(device: str) -> dict:
    if device.startswith("cuda"):
        return {"peak_allocated_gib": torch.cuda.max_memory_allocated() / 2**30,
                "peak_reserved_gib": torch.cuda.max_memory_reserved() / 2**30}
    return {"peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


class Float32LossOfficialStep(OfficialStep):
    """The official step, also reporting its first losses computed in float32 from the same activations."""

    def __call__(self, forget: dict, retain: dict) -> tuple[float, float]:
        updated_forget = self.forward_with_cache(self.updated, forget, self.updated_module, no_grad=False)
        forget_loss = torch.nn.functional.mse_loss(updated_forget, self.control)
        updated_retain = self.forward_with_cache(self.updated, retain, self.updated_module, no_grad=False)
        frozen_retain = self.forward_with_cache(self.frozen, retain, self.frozen_module, no_grad=True)
        retain_loss = torch.nn.functional.mse_loss(updated_retain, frozen_retain) * self.alpha
        with torch.no_grad():
            self.float32_losses = (
                torch.nn.functional.mse_loss(updated_forget.float(), self.control.float().expand_as(updated_forget)).item(),
                (torch.nn.functional.mse_loss(updated_retain.float(), frozen_retain.float()) * self.alpha).item(),
            )
        loss = forget_loss + retain_loss
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return forget_loss.item(), retain_loss.item()


def rmu_lens_step(model, tokenizer, forget, retain, settings: SimpleNamespace) -> RMULensStep:
    from rmu_lens.models import load_model

    return RMULensStep(load_model(model, tokenizer=tokenizer), forget, retain, settings)


def official_step(model, settings: SimpleNamespace) -> Float32LossOfficialStep:
    layer = settings.layer
    return Float32LossOfficialStep(model, layer, [layer - 2, layer - 1, layer], settings.steering_coeff, settings.alpha, settings.lr)


def timed_steps(step, forget, retain, device: str, warmup: int, steps: int) -> tuple[list[float], tuple]:
    times, first = [], None
    for index in range(warmup + steps):
        sync(device)
        start = time.perf_counter()
        losses = step(*batches_of_step(index, forget, retain))
        sync(device)
        first = first or losses
        if index >= warmup:
            times.append(1000 * (time.perf_counter() - start))
    return times, first


# -- cases ---------------------------------------------------------------------------------------

def case_zephyr_memory(args: argparse.Namespace, which: str) -> dict:
    settings = step_args("zephyr", args)
    model, tokenizer = build_model(shape_of("zephyr", args.tiny), args.device, args.dtype)
    forget, retain = make_batches(settings, model.config.vocab_size)
    step = official_step(model, settings) if which == "official" else rmu_lens_step(model, tokenizer, forget, retain, settings)
    for index in range(4):
        step(*batches_of_step(index, forget, retain))
    sync(args.device)
    return {"implementation": which, **peak_memory(args.device)}


def case_zephyr_timing(args: argparse.Namespace) -> dict:
    settings = step_args("zephyr", args)
    model, tokenizer = build_model(shape_of("zephyr", args.tiny), args.device, args.dtype)
    forget, retain = make_batches(settings, model.config.vocab_size)
    official = official_step(model, settings)
    ours = rmu_lens_step(copy.deepcopy(official.frozen), tokenizer, forget, retain, settings)
    times: dict[str, list[float]] = {"official": [], "rmu_lens": []}
    first: dict[str, tuple] = {}
    for index in range(args.warmup + args.steps):
        for name, step in (("official", official), ("rmu_lens", ours)):
            sync(args.device)
            start = time.perf_counter()
            losses = step(*batches_of_step(index, forget, retain))
            sync(args.device)
            if index == 0:
                first[name] = losses
                if name == "official":
                    first["official_float32"] = official.float32_losses
            if index >= args.warmup:
                times[name].append(1000 * (time.perf_counter() - start))
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {
        "batch": [settings.batch_size, settings.seq_len], "layer": settings.layer,
        "ms_per_step": medians, "speedup": medians["official"] / medians["rmu_lens"],
        "first_step_losses": {
            "official_float32": list(first["official_float32"]),
            "official_as_computed": list(first["official"]),
            "rmu_lens": list(first["rmu_lens"]),
            "note": "(forget, alpha x retain); float32 MSE of each step's own activations; the official code's "
                    "own MSE runs in the model dtype",
        },
        "timed_steps": args.steps, "warmup_steps": args.warmup,
    }


def case_yi(args: argparse.Namespace) -> dict:
    settings = step_args("yi", args)
    model, tokenizer = build_model(shape_of("yi", args.tiny), args.device, args.dtype)
    forget, retain = make_batches(settings, model.config.vocab_size)
    ours = rmu_lens_step(model, tokenizer, forget, retain, settings)
    times, first = timed_steps(ours, forget, retain, args.device, args.warmup, args.steps)
    result = {"batch": [settings.batch_size, settings.seq_len], "layer": settings.layer,
              "rmu_lens": {"ms_per_step": statistics.median(times), "first_step_losses": list(first), **peak_memory(args.device)}}
    del ours
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()
    try:
        official = official_step(model, settings)
        for index in range(2):
            official(*batches_of_step(index, forget, retain))
        sync(args.device)
        result["official"] = {"status": "ran", **peak_memory(args.device)}
    except torch.cuda.OutOfMemoryError as error:
        result["official"] = {"status": "out of memory", "error": str(error).splitlines()[0]}
    return result


def case_llama70b(args: argparse.Namespace) -> dict:
    settings = step_args("llama70b", args)
    shape = shape_of("llama70b", args.tiny)
    keep = settings.layer + 1
    model, tokenizer = build_model(shape, args.device, args.dtype, keep_layers=keep)
    on_meta = sum(p.numel() for p in model.parameters() if p.device.type == "meta")
    placed = sum(p.numel() for p in model.parameters() if p.device.type != "meta")
    forget, retain = make_batches(settings, model.config.vocab_size)
    ours = rmu_lens_step(model, tokenizer, forget, retain, settings)
    times, first = timed_steps(ours, forget, retain, args.device, args.warmup, args.steps)
    return {
        "batch": [settings.batch_size, settings.seq_len], "layer": settings.layer, "layers_materialised": keep,
        "n_layers": shape["num_hidden_layers"], "parameters_on_device": placed, "parameters_on_meta": on_meta,
        "ms_per_step": statistics.median(times), "first_step_losses": list(first), **peak_memory(args.device),
    }


def case_eval(args: argparse.Namespace) -> dict:
    from bench_eval import Timer, gather_questions, run_lm_eval
    from lm_eval.models.huggingface import HFLM

    from rmu_lens.eval import evaluate
    from rmu_lens.models import load_model

    # float32: predictions are compared exactly, and bf16 rounding flips near-ties of random weights.
    model, tokenizer = build_model(shape_of("eval", args.tiny), args.device, torch.float32)
    questions = gather_questions(None, 2 if args.tiny else 34)
    lm = HFLM(pretrained=copy.deepcopy(model), tokenizer=tokenizer, batch_size=16, device=args.device)
    bridge = load_model(model, tokenizer=tokenizer)
    result = {"questions": len(questions), "modes": {}}
    for mode in ("letter", "cloze"):
        for _ in range(1 + 1):  # one untimed warm-up round, one timed
            with tempfile.TemporaryDirectory() as folder:
                lm_timer, theirs, _ = run_lm_eval(lm, questions, mode, Path(folder))
            with Timer() as our_timer:
                ours = evaluate(bridge, questions, mode=mode, batch_size=16, progress=False)
        differing = sum(
            record["prediction"] != max(range(len(theirs[record["id"]])), key=theirs[record["id"]].__getitem__)
            for record in ours.records
        )
        largest = max(max(abs(a - b) for a, b in zip(r["loglikelihoods"], theirs[r["id"]])) for r in ours.records)
        result["modes"][mode] = {
            "lm_eval_questions_per_s": len(questions) / lm_timer.wall,
            "rmu_lens_questions_per_s": len(questions) / our_timer.wall,
            "speedup": lm_timer.wall / our_timer.wall,
            "differing_predictions": differing, "max_abs_loglikelihood_difference": largest,
        }
    return result | {"dtype": "float32"}


def run_case(name: str, args: argparse.Namespace) -> dict:
    if name.startswith("zephyr-memory-"):
        return case_zephyr_memory(args, name.removeprefix("zephyr-memory-"))
    return {"zephyr-timing": case_zephyr_timing, "yi": case_yi, "llama70b": case_llama70b, "eval": case_eval}[name](args)


def device_description(device: str) -> str:
    if device.startswith("cuda"):
        properties = torch.cuda.get_device_properties(torch.device(device))
        return f"{properties.name}, {properties.total_memory / 2**30:.0f} GiB"
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def targets_met(cases: dict) -> dict:
    met = {}
    timing = cases.get("zephyr-timing", {})
    memory = cases.get("zephyr-memory-rmu_lens", {})
    if "ms_per_step" in timing:
        met["zephyr_ms_per_step <= 40"] = timing["ms_per_step"]["rmu_lens"] <= TARGETS["zephyr_ms_per_step"]
        met["zephyr_speedup >= 6.4"] = timing["speedup"] >= 6.4
    if "peak_allocated_gib" in memory:
        met["zephyr_peak_allocated <= 17 GiB"] = memory["peak_allocated_gib"] <= TARGETS["zephyr_peak_allocated_gib"]
    if "rmu_lens" in cases.get("yi", {}):
        met["yi_on_one_gpu"] = True
    if "peak_allocated_gib" in cases.get("llama70b", {}):
        met["llama70b_peak_allocated <= 40 GiB"] = cases["llama70b"]["peak_allocated_gib"] <= TARGETS["llama70b_peak_allocated_gib"]
    return met


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--tiny", action="store_true", help="tiny shapes (a CPU run of the same code)")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    parser.add_argument("--steps", type=int, default=None, help="timed steps per case [10; tiny 2]")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first [3; tiny 1]")
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)  # run one case in this process
    args = parser.parse_args()
    args.steps = args.steps or (2 if args.tiny else 10)
    args.warmup = args.warmup or (1 if args.tiny else 3)
    dtype_name, args.dtype = args.dtype, getattr(torch, args.dtype)
    torch.manual_seed(0)
    if args.case:
        print(json.dumps(run_case(args.case, args)))
        return 0

    report = {
        "device": device_description(args.device), "dtype": dtype_name, "tiny": args.tiny,
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
        "command": " ".join(["python", "benchmarks/gpu_check.py", *sys.argv[1:]]), "cases": {},
    }
    try:
        import transformers

        report["versions"]["transformers"] = transformers.__version__
    except ImportError:
        pass
    failed = 0
    for name in args.cases:
        command = [sys.executable, __file__, "--case", name, "--device", args.device, "--dtype", dtype_name,
                   "--steps", str(args.steps), "--warmup", str(args.warmup)] + (["--tiny"] if args.tiny else [])
        started = time.perf_counter()
        print(f"[gpu_check] {name} ...", file=sys.stderr, flush=True)
        completed = subprocess.run(command, stdout=subprocess.PIPE, text=True)
        seconds = time.perf_counter() - started
        if completed.returncode == 0:
            report["cases"][name] = json.loads(completed.stdout.strip().splitlines()[-1]) | {"wall_s": seconds}
        else:
            failed += 1
            report["cases"][name] = {"status": "failed", "returncode": completed.returncode, "wall_s": seconds}
        print(f"[gpu_check] {name}: {json.dumps(report['cases'][name])}", file=sys.stderr, flush=True)
    report["targets_met"] = targets_met(report["cases"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
