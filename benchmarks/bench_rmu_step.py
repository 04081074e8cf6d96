"""RMU step: the official recipe vs rmu_lens, on the same model and batches, measured side by side.

Official-style (as centerforaisafety/wmdp runs it): two full model copies, a full forward pass
(every layer and the LM head) with a forward hook on decoder layer l, all parameters of the updated
copy requiring grad, three forward passes per step (updated forget, updated retain, frozen retain).
rmu_lens: one model, frozen copies of the trained tensors, blocks first..l only, shared prefix.

    python benchmarks/bench_rmu_step.py                      # CPU: smollm2-135m, batch 4 x 256, layer 7
    python benchmarks/bench_rmu_step.py --device cuda        # GPU: Mistral-7B-shaped random model, 4 x 512 bf16

Timing: the two steps alternate in one process (same inputs), median ms/step of each. Peak memory:
each implementation runs in its own subprocess (model load + steps); CPU reports peak RSS, CUDA
reports both torch.cuda.max_memory_allocated (tensors) and max_memory_reserved (what the caching
allocator took from the card: what decides an out-of-memory). The 7B-shaped model is built in the
benchmark dtype directly on the device (no float32 copy first), so it fits cards under 48 GB.

What "first-step losses" compares: the official code computes its MSE in the model dtype (bf16 on a
GPU); rmu_lens computes it in float32 from the same bf16 activations. The two agree to bf16 rounding
(e.g. 0.65625 vs 0.65796 on a CPU bf16 run), not bit for bit; in float32 they are equal.
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import statistics
import subprocess
import sys
import time
import warnings

import torch

# The official loss broadcasts c·u of shape (1, 1, d) against (B, T, d), which torch warns about.
warnings.filterwarnings("ignore", message="Using a target size")


def build_models(args: argparse.Namespace):
    """(plain HF model for the official recipe, a second plain copy, an rmu_lens bridge) on the device."""
    import transformers

    from rmu_lens.models import embedded_model_dir, load_model

    dtype = getattr(torch, args.dtype)
    if args.model == "mistral-7b-shape":
        config = transformers.MistralConfig(
            hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
            num_key_value_heads=8, vocab_size=32000, max_position_embeddings=4096, attn_implementation="eager",
        )
        default_dtype = torch.get_default_dtype()
        torch.set_default_dtype(dtype)  # build in the benchmark dtype: no float32 copy of 7B weights
        try:
            with torch.device(args.device):
                hf = transformers.MistralForCausalLM(config)
        finally:
            torch.set_default_dtype(default_dtype)
        from transformers import PreTrainedTokenizerFast  # noqa: F401 - ids are synthetic below
        tokenizer = None
    else:
        directory = embedded_model_dir(args.model) if args.model == "smollm2-135m" else args.model
        hf = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=dtype, attn_implementation="eager").to(args.device)
        tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    return hf, tokenizer, load_model


def make_batches(args: argparse.Namespace, vocab_size: int) -> tuple[list[dict], list[dict]]:
    """Two forget batches (two topics) and two retain batches of random tokens, no padding."""
    generator = torch.Generator().manual_seed(0)
    shape = (args.batch_size, args.seq_len)

    def batch() -> dict:
        ids = torch.randint(10, vocab_size, shape, generator=generator)
        return {"input_ids": ids.to(args.device), "attention_mask": torch.ones(shape, dtype=torch.long, device=args.device)}

    return [batch(), batch()], [batch(), batch()]


def batches_of_step(step: int, forget: list[dict], retain: list[dict]) -> tuple[dict, dict]:
    """The official schedule with two topics: topic = step % 2, retain batch = step // 2 (each used twice)."""
    return forget[step % 2], retain[(step // 2) % 2]


class OfficialStep:
    """The official RMU step, verbatim in structure (forward_with_cache on model.model.layers[l])."""

    def __init__(self, model, layer: int, update_layers: list[int], steering_coeff: float, alpha: float, lr: float) -> None:
        from rmu_lens.rmu.optim import LegacyAdamW

        self.updated = model.train()
        self.frozen = copy.deepcopy(model).eval()
        for p in self.frozen.parameters():
            p.requires_grad_(False)
        for p in self.updated.parameters():
            p.requires_grad_(True)  # nothing frozen, as in the official code
        params = [self.updated.model.layers[i].mlp.down_proj.weight for i in update_layers]
        self.optimizer = LegacyAdamW(params, lr=lr)
        self.updated_module = self.updated.model.layers[layer]
        self.frozen_module = self.frozen.model.layers[layer]
        d_model = model.config.hidden_size
        raw = torch.rand(1, 1, d_model, generator=torch.Generator().manual_seed(42))
        self.control = (raw / raw.norm() * steering_coeff).to(model.device, model.dtype)
        self.alpha = alpha

    @staticmethod
    def forward_with_cache(model, inputs, module, no_grad):
        cache = []

        def hook(module, args, output):
            cache.append(output[0] if isinstance(output, tuple) else output)

        handle = module.register_forward_hook(hook)
        with torch.set_grad_enabled(not no_grad):
            model(**inputs)
        handle.remove()
        return cache[0]

    def __call__(self, forget: dict, retain: dict) -> tuple[float, float]:
        updated_forget = self.forward_with_cache(self.updated, forget, self.updated_module, no_grad=False)
        forget_loss = torch.nn.functional.mse_loss(updated_forget, self.control)
        updated_retain = self.forward_with_cache(self.updated, retain, self.updated_module, no_grad=False)
        frozen_retain = self.forward_with_cache(self.frozen, retain, self.frozen_module, no_grad=True)
        retain_loss = torch.nn.functional.mse_loss(updated_retain, frozen_retain) * self.alpha
        loss = forget_loss + retain_loss
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return forget_loss.item(), retain_loss.item()


class RMULensStep:
    """rmu_lens's trainer step on the same batches (reference mode: same loss definition)."""

    def __init__(self, bridge, forget: list[dict], retain: list[dict], args: argparse.Namespace) -> None:
        import rmu_lens as rl

        config = rl.RMUConfig(
            layer=args.layer, steering_coeff=args.steering_coeff, alpha=args.alpha, lr=args.lr,
            batch_size=args.batch_size, max_batches=10**6, cycle=True, reference=True, metrics_every=10**9,
            max_length=args.seq_len, retain_max_length=args.seq_len,
        )
        # Same schedule as batches_of_step: topics alternate, each retain batch serves two steps.
        self.trainer = rl.RMUTrainer(bridge, {"bio": [forget[0]], "cyber": [forget[1]]}, retain, config)

    def __call__(self, forget: dict, retain: dict) -> tuple[float, float]:
        record = self.trainer.train_step()
        return record["forget_loss"], record["retain_loss"]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timing(args: argparse.Namespace) -> dict:
    hf, tokenizer, load_model = build_models(args)
    forget, retain = make_batches(args, hf.config.vocab_size)
    official = OfficialStep(hf, args.layer, [args.layer - 2, args.layer - 1, args.layer], args.steering_coeff, args.alpha, args.lr)
    lens_model = copy.deepcopy(official.frozen)
    from rmu_lens.models import byte_tokenizer

    bridge = load_model(lens_model, tokenizer=tokenizer or byte_tokenizer(), device=args.device)
    ours = RMULensStep(bridge, forget, retain, args)
    times = {"official": [], "rmu_lens": []}
    first_losses = {}
    for step in range(args.warmup + args.steps):
        for name, step_fn in (("official", official), ("rmu_lens", ours)):
            sync(args.device)
            start = time.perf_counter()
            losses = step_fn(*batches_of_step(step, forget, retain))
            sync(args.device)
            if step == 0:
                first_losses[name] = losses
            if step >= args.warmup:
                times[name].append(1000 * (time.perf_counter() - start))
    return {name: statistics.median(values) for name, values in times.items()} | {"first_losses": first_losses}


def memory(args: argparse.Namespace, which: str) -> float:
    """Peak memory (GiB) of one implementation: model load plus a few steps, in this process."""
    hf, tokenizer, load_model = build_models(args)
    forget, retain = make_batches(args, hf.config.vocab_size)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    if which == "official":
        step = OfficialStep(hf, args.layer, [args.layer - 2, args.layer - 1, args.layer], args.steering_coeff, args.alpha, args.lr)
    else:
        from rmu_lens.models import byte_tokenizer

        step = RMULensStep(load_model(hf, tokenizer=tokenizer or byte_tokenizer(), device=args.device), forget, retain, args)
    for index in range(4):
        step(*batches_of_step(index, forget, retain))
    sync(args.device)
    if args.device.startswith("cuda"):
        return {"allocated": torch.cuda.max_memory_allocated() / 2**30, "reserved": torch.cuda.max_memory_reserved() / 2**30}
    return {"rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}  # KiB -> GiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default=None, help="smollm2-135m (CPU default), mistral-7b-shape (CUDA default), or an HF dir")
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=None)
    parser.add_argument("--layer", type=int, default=7)
    parser.add_argument("--steering-coeff", type=float, default=6.5)
    parser.add_argument("--alpha", type=float, default=1200.0)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--memory-only", choices=["official", "rmu_lens"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    gpu = args.device.startswith("cuda")
    args.model = args.model or ("mistral-7b-shape" if gpu else "smollm2-135m")
    args.dtype = args.dtype or ("bfloat16" if gpu else "float32")
    args.seq_len = args.seq_len or (512 if gpu else 256)
    torch.manual_seed(0)

    if args.memory_only:
        print(json.dumps({"peak_gib": memory(args, args.memory_only)}))
        return
    peaks = {}
    for which in ("official", "rmu_lens"):
        command = [sys.executable, __file__, "--memory-only", which] + sys.argv[1:]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:  # show why (an out-of-memory names itself) instead of a bare CalledProcessError
            sys.stderr.write(done.stderr)
            oom = "OutOfMemoryError" in done.stderr or "out of memory" in done.stderr
            peaks[which] = {"error": "out of memory" if oom else f"exit {done.returncode}"}
            continue
        peaks[which] = json.loads(done.stdout.strip().splitlines()[-1])["peak_gib"]
    result = timing(args)
    device = torch.cuda.get_device_name() if gpu else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {device}; model {args.model}, batch {args.batch_size} x {args.seq_len}, {args.dtype}, layer {args.layer}")
    print(f"first-step losses (forget, retain): official {result['first_losses']['official']}, rmu_lens {result['first_losses']['rmu_lens']}")
    kinds = [k for k in ("allocated", "reserved", "rss") if any(k in p for p in peaks.values())]
    print(f"{'':10} {'ms/step':>10} " + " ".join(f"{'peak ' + k + ' GiB':>20}" for k in kinds))
    for which in ("official", "rmu_lens"):
        cells = [f"{peaks[which][k]:20.2f}" if k in peaks[which] else f"{peaks[which].get('error', '-'):>20}" for k in kinds]
        print(f"{which:10} {result[which]:10.1f} " + " ".join(cells))
    ratios = "  ".join(f"{k} {peaks['rmu_lens'][k] / peaks['official'][k]:.2f}" for k in kinds
                       if k in peaks["official"] and k in peaks["rmu_lens"])
    print(f"speed-up: {result['official'] / result['rmu_lens']:.2f}x   memory ratio (rmu_lens / official): {ratios or 'n/a'}")


if __name__ == "__main__":
    main()
