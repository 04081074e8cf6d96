"""The RMU trainer: one model in memory, only layers first..l computed, frozen copies of trained tensors.

Each step (topic t = step mod n_topics; docs/rmu.md):

    forget  = MSE(h_l(forget batch), c_t·u_t)
    retain  = alpha_t · MSE(h_l(retain batch), h_l^frozen(retain batch))

``h_l`` is ``blocks.{l}.hook_resid_post``. The frozen activations come from the same blocks with
the frozen copies of the trained tensors swapped in; blocks below the first trained one are
frozen and shared (``BlockRunner.prefix``), and a retain batch that repeats (the official schedule
uses each twice with two topics) reuses its frozen activations.

Default mode averages losses over real tokens and keeps real positions 0..n-1 on every row;
``reference=True`` reproduces the official code (left padding with EOS, positions 0..T-1 on every
row pads included, means over all positions).
"""

from __future__ import annotations

import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from rmu_lens.errors import RMULensError
from rmu_lens.models import DTYPES, PlacementError, hf_model_of, offloaded_modules, readable_name, tokenizer_of
from rmu_lens.rmu.batches import Batcher, Source, TokenBatch, forget_sources, retain_sources, schedule, step_count
from rmu_lens.rmu.config import RMUConfig
from rmu_lens.rmu.control import check_control_vectors, draw_unit_vectors
from rmu_lens.rmu.optim import LegacyAdamW, MasterWeights
from rmu_lens.rmu.params import TrainedParameter, block_index, mask_untrained_experts, resolve_parameters
from rmu_lens.rmu.prefix import PrefixCache
from rmu_lens.rmu.record import RMURun
from rmu_lens.rmu.rundir import RunDirectory
from rmu_lens.rmu.runner import BlockInputs, BlockRunner, block_output_index

METRIC_TOKENS = "real tokens, the first real token of each row excluded (attention-sink outlier)"


class NonFiniteLossError(RMULensError, FloatingPointError):
    """A loss became NaN or inf; the run directory keeps the last good checkpoint."""


def masked_mse(x: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean squared error over the d_model entries of the tokens where ``mask`` is 1 (all tokens if None)."""
    diff = (x.float() - target.float()).pow(2)
    if mask is None:
        return diff.mean()
    mask = mask.to(diff.device, diff.dtype).unsqueeze(-1)
    return (diff * mask).sum() / (mask.sum() * diff.shape[-1])


def metric_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Real tokens except the first real token of each row, where activations are outliers (docs/rmu.md)."""
    first = (attention_mask.cumsum(-1) == 1) & attention_mask.bool()
    return attention_mask.bool() & ~first


def token_norm_mean(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean L2 norm over the tokens where ``mask`` is true, as a 0-d tensor (NaN for no tokens; no host sync)."""
    mask = mask.to(h.device, torch.float32)
    return (h.float().norm(dim=-1) * mask).sum() / mask.sum()


def token_cosine_mean(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean cosine of ``a`` and ``b`` over the tokens where ``mask`` is true, as a 0-d tensor (no host sync)."""
    mask = mask.to(a.device, torch.float32)
    cos = torch.nn.functional.cosine_similarity(a.float(), b.to(a.device).float(), dim=-1)
    return (cos * mask).sum() / mask.sum()


def mean_token_norm(h: torch.Tensor, mask: torch.Tensor) -> float:
    return float(token_norm_mean(h, mask))


def mean_token_cosine(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    return float(token_cosine_mean(a, b, mask))


class RMUTrainer:
    """Runs RMU on a bridged model. Use :func:`unlearn` unless you need the steps one by one.

    ``prefix_cache``: a :class:`~rmu_lens.rmu.prefix.PrefixCache` shared by the runs of a sweep
    whose weights below the first trained layer are the same, so each batch's frozen prefix
    (the layers below the first trained one) is computed once across the sweep.
    """

    def __init__(
        self,
        model: Any,
        forget: Any,
        retain: Any,
        config: RMUConfig | None = None,
        *,
        control_vectors: dict[str, torch.Tensor] | Sequence[torch.Tensor] | None = None,
        callbacks: Sequence[Any] = (),
        prefix_cache: PrefixCache | None = None,
    ) -> None:
        self.model = model
        self.prefix_cache = prefix_cache
        self.config = config or RMUConfig()
        self.tokenizer = tokenizer_of(model)
        self.forget: list[Source] = forget_sources(forget)
        self.retain: list[Source] = retain_sources(retain, len(self.forget))
        self.topics = [s.name for s in self.forget]
        cfg = self.config
        n_layers, d_model = model.cfg.n_layers, model.cfg.d_model
        if cfg.layer >= n_layers:
            raise ValueError(f"layer={cfg.layer} is out of range: the model has layers 0..{n_layers - 1}")
        self.read_block = block_output_index(cfg.read_hook, n_layers)
        self.trained: list[TrainedParameter] = resolve_parameters(model, cfg.param_names, cfg.update_layers, cfg.experts)
        self.first = min(cfg.update_layers)
        if self.read_block < max(cfg.update_layers):
            raise ValueError(
                f"hook_point {cfg.read_hook!r} reads block {self.read_block}'s output, before update layer "
                f"{max(cfg.update_layers)}: those parameters could not change it"
            )
        # Reference mode matches the official loop bit for bit, which runs the bridge's eager attention;
        # otherwise the runner's layers use SDPA where the model allows it (same math, fused kernel).
        self.runner = BlockRunner(model, self.first, self.read_block, attention="eager" if cfg.reference else "auto")
        self._check_trained_inside_runner()
        self.alphas = dict(zip(self.topics, cfg.per_topic("alpha", len(self.topics))))
        self.max_lengths = dict(zip(self.topics, cfg.per_topic("max_length", len(self.topics))))
        self.unit_vectors = (
            check_control_vectors(control_vectors, self.topics, d_model)
            if control_vectors is not None
            else draw_unit_vectors(self.topics, d_model, cfg.seed)
        )
        self.explicit_control_vectors = control_vectors is not None
        self.steering_coeffs = dict(zip(self.topics, [float(c) for c in cfg.per_topic("steering_coeff", len(self.topics))]))
        self.batcher = Batcher(
            self.tokenizer, cfg.batch_size, "left" if cfg.reference else "right", pad_with_eos=cfg.reference
        )
        self.n_steps = step_count(self.forget, self.retain, cfg.batch_size, cfg.max_batches, cfg.cycle)
        self.callbacks = [c if hasattr(c, "on_step") or not callable(c) else _FunctionCallback(c) for c in callbacks]
        self.history: list[dict[str, Any]] = []
        self.step = 0
        self._stop_requested = False
        self.calibrated = cfg.adaptive_beta is None
        """Whether the steering coefficients are final (adaptive RMU calibrates them before the first step)."""
        self._updating = False
        """True from the optimizer step until the step counter and record agree with the new weights."""
        self.interrupted = False
        """Whether a Ctrl-C (SIGINT) asked training to stop."""
        self._retain_cache: tuple[tuple[int, int], BlockInputs, torch.Tensor, torch.Tensor] | None = None
        self._check_placement()
        self._prepare_parameters()

    # -- set-up ---------------------------------------------------------------------------

    def _check_trained_inside_runner(self) -> None:
        for p in self.trained:
            index = block_index(p.hf_name)
            if index is None or not self.first <= index <= self.read_block:
                raise ValueError(
                    f"Trained tensor {p.bridge_name} ({p.hf_name}) is not inside blocks "
                    f"{self.first}..{self.read_block}: RMU trains weights of the update layers only"
                )

    def _check_placement(self) -> None:
        """Trained tensors must hold their values in memory on a device: RMU updates them in place
        and keeps their frozen copies beside them. Meta tensors and accelerate's offloaded
        placeholders (disk, or a CPU weights map) are refused here, naming the tensor and the fix."""
        hf_model = hf_model_of(self.model)
        offloaded = {id(t): name for name, m in offloaded_modules(hf_model).items() for t in m.parameters(recurse=False)}
        device_map = getattr(hf_model, "hf_device_map", None) or {}
        for p in self.trained:
            if p.parameter.device.type != "meta" and id(p.parameter) not in offloaded:
                continue
            mapped = [k for k in device_map if not k or p.hf_name == k or p.hf_name.startswith(k + ".")]
            if mapped:
                key = max(mapped, key=len)
                where = f"offloaded by the device map (hf_device_map[{key!r}] = {device_map[key]!r})"
            elif id(p.parameter) in offloaded:
                where = "offloaded by accelerate (its values live in a weights map, not on the module)"
            else:
                where = "on the meta device, which holds no values (the model was loaded with device='meta')"
            last = self.read_block
            raise PlacementError(
                f"Trained tensor {p.bridge_name} ({readable_name(p.hf_name)}) is {where}. RMU updates it in place, "
                f"so it must sit in memory on a device: load the model with device='cuda' (or 'cpu'), or with a "
                f"device_map that keeps the embeddings and layers 0..{last} on a device and offloads only later "
                f"layers, e.g. {{'model.embed_tokens': 0, 'model.layers.0': 0, ..., 'model.layers.{last}': 0, "
                f"'model.layers.{last + 1}': 'cpu', ...}} (docs/devices.md)"
            )

    def _prepare_parameters(self) -> None:
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        # Frozen copies sit beside their tensors (same device and dtype): the frozen pass swaps them in.
        self.frozen = {p.hf_name: p.parameter.detach().clone() for p in self.trained}
        for p in self.trained:
            p.parameter.requires_grad_(True)
        cfg = self.config
        params = [p.parameter for p in self.trained]

        def make_optimizer(tensors: list[torch.Tensor]) -> torch.optim.Optimizer:
            if cfg.optimizer == "legacy_adamw":
                return LegacyAdamW(tensors, lr=cfg.lr, eps=cfg.adam_eps, weight_decay=cfg.weight_decay)
            return torch.optim.AdamW(tensors, lr=cfg.lr, eps=cfg.adam_eps, weight_decay=cfg.weight_decay)

        master = DTYPES[cfg.master_weights] if cfg.master_weights else None
        if master is not None and any(p.dtype != master for p in params):
            self.optimizer = MasterWeights(params, make_optimizer, master)
        else:
            self.optimizer = make_optimizer(params)

    def _positions(self, batch: TokenBatch) -> torch.Tensor | None:
        # The official forward passes no position ids, so positions are 0..T-1 on every row and
        # left-padded tokens sit at shifted positions; the default mode gives real tokens 0..n-1.
        if self.config.reference:
            return None
        return (batch.attention_mask.cumsum(-1) - 1).clamp(min=0)

    def _prefix(self, batch: TokenBatch) -> BlockInputs:
        if self.prefix_cache is None:
            return self.runner.prefix(batch.input_ids, batch.attention_mask, self._positions(batch))
        key = PrefixCache.key(self.first, self.config.reference, batch.input_ids, batch.attention_mask)
        inputs = self.prefix_cache.get(key)
        if inputs is None:
            inputs = self.runner.prefix(batch.input_ids, batch.attention_mask, self._positions(batch))
            self.prefix_cache.put(key, inputs)
        return inputs

    def _loss_mask(self, batch: TokenBatch) -> torch.Tensor | None:
        return None if self.config.reference else batch.attention_mask

    def calibrate_adaptive(self) -> dict[str, float]:
        """Adaptive RMU: c_t = beta · mean token norm of frozen layer-l activations on topic t's first batch."""
        beta = self.config.adaptive_beta
        for topic, source in zip(self.topics, self.forget):
            batch = self.batcher.get(source, 0, self.max_lengths[topic])
            with torch.no_grad():
                frozen = self.runner.run(self._prefix(batch), self.frozen)
            self.steering_coeffs[topic] = beta * mean_token_norm(frozen, metric_mask(batch.attention_mask))
        self.calibrated = True
        return self.steering_coeffs

    # -- state ----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """What resuming needs: step, history, coefficients, control vectors, trained tensors, optimizer state.

        Tensors are the live ones (no copies); :class:`~rmu_lens.rmu.rundir.RunDirectory` saves them.
        """
        return {
            "step": self.step,
            "history": self.history,
            "steering_coeffs": self.steering_coeffs,
            "calibrated": self.calibrated,
            "unit_vectors": {t: self.unit_vectors[t] for t in self.topics},
            "trained": {p.hf_name: p.parameter for p in self.trained},
            "optimizer": self.optimizer.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore (part of) a :meth:`state_dict`; keys left out keep their values.

        A run interrupted before its first checkpoint restores only its ``unit_vectors``.
        """
        if "unit_vectors" in state:
            self.unit_vectors = {t: state["unit_vectors"][t] for t in self.topics}
        if "trained" in state:
            missing = [p.hf_name for p in self.trained if p.hf_name not in state["trained"]]
            if missing:
                raise KeyError(f"the state has no values for the trained tensors {missing[:3]}")
            with torch.no_grad():
                for p in self.trained:
                    p.parameter.copy_(state["trained"][p.hf_name].to(p.parameter.device, p.parameter.dtype))
        if "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])
        for name in ("step", "history", "steering_coeffs", "calibrated"):
            if name in state:
                setattr(self, name, state[name])

    def run_facts(self) -> dict[str, Any]:
        """What run.json records about this run besides its progress: config, model, topics, data, tokens."""
        cfg, model = self.config, self.model
        size = cfg.batch_size
        return {
            "config": cfg.to_dict(),
            "model": {
                "name_or_path": str(getattr(model.original_model, "name_or_path", "")),
                "architecture": type(model.original_model).__name__,
                "n_layers": model.cfg.n_layers,
                "d_model": model.cfg.d_model,
                "dtype": str(next(model.parameters()).dtype),
            },
            "read_hook": cfg.read_hook,
            "topics": self.topics,
            "steering_coeffs": self.steering_coeffs,
            "alphas": self.alphas,
            "max_lengths": self.max_lengths,
            "control_vectors": "explicit (normalised to unit norm)" if self.explicit_control_vectors
            else f"torch.rand from seed {cfg.seed}, normalised",
            "trained_parameters": [
                {"bridge_name": p.bridge_name, "hf_name": p.hf_name, "shape": list(p.parameter.shape)} for p in self.trained
            ],
            "data": {"forget": [s.summary(size) for s in self.forget], "retain": [s.summary(size) for s in self.retain]},
            "steps_total": self.n_steps,
            "loss_tokens": "every position, pads included (reference)" if cfg.reference else "real tokens (pads excluded)",
            "positions": "0..T-1 on every row, left padding (reference)" if cfg.reference
            else "0..n-1 over real tokens, right padding",
            "metric_tokens": METRIC_TOKENS,
        }

    # -- the step -------------------------------------------------------------------------

    def _frozen_retain(self, key: tuple[int, int], batch: TokenBatch) -> tuple[BlockInputs, torch.Tensor]:
        if self._retain_cache is not None and self._retain_cache[0] == key:
            return self._retain_cache[1], self._retain_cache[2]
        inputs = self._prefix(batch)
        with torch.no_grad():
            frozen = self.runner.run(inputs, self.frozen)
        self._retain_cache = (key, inputs, frozen, batch.attention_mask)
        return inputs, frozen

    def train_step(self) -> dict[str, Any]:
        """One RMU step; returns its history record (adaptive RMU calibrates c before the first step).

        The step counter moves with the weights: from ``optimizer.step()`` until the record is
        complete and ``step`` counted, ``_updating`` is set, and no checkpoint is taken then.
        """
        cfg = self.config
        if not self.calibrated and self.step == 0:
            self.calibrate_adaptive()
        started = time.perf_counter()
        topic_index, forget_index, retain_set, retain_index = schedule(self.step, self.forget, self.retain, cfg.batch_size)
        topic = self.topics[topic_index]
        forget_batch = self.batcher.get(self.forget[topic_index], forget_index, self.max_lengths[topic])
        retain_batch = self.batcher.get(self.retain[retain_set], retain_index, cfg.retain_max_length)

        forget_inputs = self._prefix(forget_batch)
        updated_forget = self.runner.run(forget_inputs)
        target = (self.steering_coeffs[topic] * self.unit_vectors[topic]).to(updated_forget.device, updated_forget.dtype)
        forget_loss = masked_mse(updated_forget, target, self._loss_mask(forget_batch))

        retain_inputs, frozen_retain = self._frozen_retain((retain_set, retain_index), retain_batch)
        updated_retain = self.runner.run(retain_inputs)
        retain_loss = self.alphas[topic] * masked_mse(
            updated_retain, frozen_retain.to(updated_retain.device), self._loss_mask(retain_batch)
        )
        loss = forget_loss + retain_loss.to(forget_loss.device)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # One host sync for the three losses; a non-finite loss stops before the optimizer touches a weight.
        loss_value, forget_value, retain_value = torch.stack(
            [loss.detach(), forget_loss.detach(), retain_loss.detach().to(loss.device)]
        ).tolist()
        if not math.isfinite(loss_value):
            self.optimizer.zero_grad(set_to_none=True)
            raise NonFiniteLossError(
                f"Step {self.step}: loss is {loss_value} (forget {forget_value}, retain {retain_value}); "
                f"lower lr or steering_coeff and start again; a run directory keeps its last good checkpoint."
            )
        mask_untrained_experts(self.trained)
        self._updating = True
        self.optimizer.step()

        record: dict[str, Any] = {
            "step": self.step,
            "topic": topic,
            "loss": loss_value,
            "forget_loss": forget_value,
            "retain_loss": retain_value,
            "steering_coeff": self.steering_coeffs[topic],
        }
        with torch.no_grad():
            forget_tokens, retain_tokens = metric_mask(forget_batch.attention_mask), metric_mask(retain_batch.attention_mask)
            metrics = {
                "forget_norm": token_norm_mean(updated_forget, forget_tokens),
                "retain_norm": token_norm_mean(updated_retain, retain_tokens),
                "retain_cos": token_cosine_mean(updated_retain, frozen_retain, retain_tokens),
            }
            if self.step % cfg.metrics_every == 0:
                frozen_forget = self.runner.run(forget_inputs, self.frozen)
                metrics["forget_cos"] = token_cosine_mean(updated_forget, frozen_forget, forget_tokens)
                metrics["frozen_forget_norm"] = token_norm_mean(frozen_forget, forget_tokens)
            # One host sync for every metric of the step.
            values = torch.stack([m.to(updated_forget.device) for m in metrics.values()]).tolist()
            record.update(zip(metrics, values))
        record["seconds"] = time.perf_counter() - started
        self.step += 1
        self._updating = False
        return record

    # -- the loop -------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Stop after the current step; the run is checkpointed and can be resumed."""
        self._stop_requested = True

    def train(self, run_dir: RunDirectory | None = None, progress: bool = True) -> RMURun:
        """Train to the end (or until a stop request), checkpointing into ``run_dir`` if given.

        Ctrl-C (SIGINT, when training runs in the main thread) is a stop request taken between
        steps: the run is checkpointed as "interrupted" and KeyboardInterrupt is raised; a second
        Ctrl-C interrupts at once, keeping the last consistent checkpoint. Any error leaves the
        run directory resumable and marked failed (docs/robustness.md).
        """
        cfg = self.config
        if not self.calibrated and self.step == 0:
            self.calibrate_adaptive()
        for callback in self.callbacks:
            getattr(callback, "on_train_start", lambda trainer: None)(self)
        bar = tqdm(total=self.n_steps, initial=self.step, desc="RMU", unit="step", disable=not progress, dynamic_ncols=True)
        status = "finished"
        self.interrupted = False
        if run_dir is not None:
            run_dir.acquire()
        previous_handler = self._install_interrupt_handler()
        try:
            while self.step < self.n_steps:
                if self._stop_requested:
                    status = "stopped"
                    break
                record = self.train_step()
                self.history.append(record)
                bar.update(1)
                bar.set_postfix(
                    topic=record["topic"], forget=f"{record['forget_loss']:.3g}", retain=f"{record['retain_loss']:.3g}",
                    norm=f"{record['forget_norm']:.3g}",
                )
                for callback in self.callbacks:
                    callback.on_step(record)
                if run_dir is not None and cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and self.step < self.n_steps:
                    run_dir.checkpoint(self)
            if self.interrupted and status == "stopped":
                raise KeyboardInterrupt(f"interrupted after step {self.step}")
            run = self.result(status, run_dir)
            if run_dir is not None:
                run_dir.finish(self, run.status)
        except BaseException as error:
            if run_dir is not None:
                # Weights, optimizer state, step and history agree unless an update was cut short; a
                # non-finite loss leaves weights no resume could use, so only the last checkpoint stays.
                consistent = not self._updating and len(self.history) == self.step and not isinstance(error, NonFiniteLossError)
                run_dir.fail(self, "interrupted" if isinstance(error, KeyboardInterrupt) else "failed", error, consistent=consistent)
            raise
        finally:
            self._restore_interrupt_handler(previous_handler)
            bar.close()
            for p in self.trained:
                p.parameter.grad = None  # the gradients of the last step would hold memory the size of the trained tensors
            for parameter in self.model.parameters():
                parameter.requires_grad_(False)
            if run_dir is not None:
                run_dir.close()
        for callback in self.callbacks:
            getattr(callback, "on_train_end", lambda run: None)(run)
        return run

    def _install_interrupt_handler(self) -> Any:
        """Make Ctrl-C a stop request (signal handlers can only be set from the main thread)."""
        if threading.current_thread() is not threading.main_thread():
            return None

        def on_interrupt(signum: int, frame: Any) -> None:
            if self.interrupted:  # the second Ctrl-C: stop now
                raise KeyboardInterrupt
            self.interrupted = True
            self.request_stop()
            print(f"\nInterrupted: stopping after the current step ({self.step}) and saving a checkpoint "
                  f"(press Ctrl-C again to stop at once)", file=sys.stderr, flush=True)

        return signal.signal(signal.SIGINT, on_interrupt)

    @staticmethod
    def _restore_interrupt_handler(previous: Any) -> None:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)

    def result(self, status: str, run_dir: RunDirectory | None = None) -> RMURun:
        return RMURun(
            model=self.model,
            config=self.config,
            topics=list(self.topics),
            steering_coeffs=dict(self.steering_coeffs),
            control_vectors=dict(self.unit_vectors),
            history=self.history,
            trained_parameters=[p.bridge_name for p in self.trained],
            status=status,
            out=run_dir.path if run_dir else None,
            paths=run_dir.paths() if run_dir else {},
            n_layers=self.model.cfg.n_layers,
        )


class _FunctionCallback:
    """Adapts a plain callable to the callback protocol (it receives each step's record)."""

    def __init__(self, function: Callable[[dict], Any]) -> None:
        self.function = function

    def on_step(self, record: dict) -> None:
        self.function(record)


def unlearn(
    model: Any,
    forget: Any,
    retain: Any,
    config: RMUConfig | None = None,
    *,
    control_vectors: dict[str, torch.Tensor] | Sequence[torch.Tensor] | None = None,
    out: str | Path | None = None,
    callbacks: Sequence[Any] = (),
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    prefix_cache: PrefixCache | None = None,
) -> RMURun:
    """Run RMU on ``model`` (a bridge from :func:`rmu_lens.load_model`), editing it in place.

    ``forget``: one corpus/list of texts/token batches, a list of them (one per topic), or a mapping
    topic -> data. ``retain``: one set for all topics or one per topic. With ``out``, the run
    directory gets ``run.json``, ``control_vectors.safetensors``, checkpoints and ``model/``;
    ``resume=True`` continues an interrupted run there. Callbacks get each step's record
    (objects with ``on_step``/``on_train_start``/``on_train_end``, or plain callables).
    """
    trainer = RMUTrainer(
        model, forget, retain, config, control_vectors=control_vectors, callbacks=callbacks, prefix_cache=prefix_cache
    )
    return trainer.train(open_run_directory(trainer, out, resume=resume, overwrite=overwrite), progress=progress)


def open_run_directory(trainer: RMUTrainer, out: str | Path | None, *, resume: bool, overwrite: bool) -> RunDirectory | None:
    """The run directory at ``out`` opened for ``trainer`` (resumed or fresh), or None without ``out``."""
    if out is None:
        if resume:
            raise ValueError("resume=True needs out=: the run directory to resume from")
        return None
    run_dir = RunDirectory(out)
    run_dir.open(trainer, resume=resume, overwrite=overwrite)
    return run_dir


