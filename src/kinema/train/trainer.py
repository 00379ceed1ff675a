"""One training loop for every stage: AdamW, warmup + cosine LR, grad clipping, EMA, autocast in the
runtime's precision (fp16 adds a GradScaler), tqdm progress, a plain-text log, atomic checkpoints
and exact resume.

Exact resume holds because a stage's `loss_fn(model, step)` draws its batch and noise from
generators seeded by (seed, step): restoring weights, EMA, optimizer and step restores the run.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from tqdm import tqdm

from kinema.errors import KinemaError, at_least, fractions, require
from kinema.io.weights import load_weights
from kinema.nn import sequence_parallel
from kinema.runtime import Runtime, cpu_runtime
from kinema.train import dist
from kinema.train.checkpoint import find_checkpoint, load_trainer_state, save_checkpoint
from kinema.train.ema import EMA

MAX_BAD_STEPS = 3  # non-finite losses in a row before a run stops


@dataclass
class OptimConfig:
    lr: float = 3e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.99)
    warmup: int = 100
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio at the last step
    grad_clip: float = 1.0
    # micro-batches per optimizer step: the global batch is cut into this many parts, run one
    # after another (the memory of one part), their gradients summed (kinema.train.dist.share)
    accumulate: int = 1

    def __post_init__(self):
        require(self.lr > 0, "lr", self.lr, "must be above 0")
        at_least(self, 0, "weight_decay", "warmup", "grad_clip")
        at_least(self, 1, "accumulate")
        fractions(self, "min_lr_ratio")
        require(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "betas", self.betas, "give two numbers in [0, 1)")


def param_groups(model: nn.Module) -> list[dict]:
    """AdamW's groups for `model`: all its parameters in one, but a submodule with an `lr_scale`
    attribute (a module new on a trained network, such as the VAE's carry head) gets a group of its
    own that learns at the stage's rate times that scale. Without one, one group as before, so
    checkpoints keep their layout."""
    scale = {id(p): m.lr_scale for m in model.modules() if getattr(m, "lr_scale", None) for p in m.parameters()}
    groups: dict[float, list] = {}
    for p in model.parameters():
        groups.setdefault(scale.get(id(p), 1.0), []).append(p)
    return [{"params": ps, "lr_scale": s} for s, ps in groups.items()]


def lr_at(cfg: OptimConfig, step: int, steps: int) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, steps - cfg.warmup)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


class StopRequest:
    """A stop asked for by a signal (kinema.cli's SIGINT / SIGTERM handler), honoured by `fit` between
    steps. Raising KeyboardInterrupt from the handler itself could land anywhere, e.g. inside
    tqdm.write while it holds its lock, and end in a traceback instead of a checkpoint. Signals are
    process-wide, so this is one object per process."""

    def __init__(self):
        self.armed = False  # a training loop is running and checks `requested` between steps
        self.requested = False

    def ask(self) -> bool:
        """Ask for a stop; False where no loop will see it (the caller then interrupts at once),
        or when a stop was already asked for (a second Ctrl-C does not wait for the step)."""
        if not self.armed or self.requested:
            return False
        self.requested = True
        return True

    @contextlib.contextmanager
    def between_steps(self):
        self.armed, self.requested = True, False
        try:
            yield
        finally:
            self.armed = False


STOP = StopRequest()


def seeded(seed: int, step: int, stream: int = 0) -> torch.Generator:
    """A generator that depends only on (seed, step, stream): the key to exact resume."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 17 + stream)


class Log:
    """Appends lines to a text file (and echoes them above the progress bar)."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path

    def __call__(self, line: str, echo: bool = True) -> None:
        if not dist.is_main():  # under torchrun, rank 0 speaks for all
            return
        with self.path.open("a") as f:
            f.write(line + "\n")
        if echo:
            tqdm.write(line)


class Metrics:
    """The logged figures of a stage, one JSON line per log step in `path` (metrics.jsonl, beside
    the checkpoints), and TensorBoard scalars under `path`'s folder / tensorboard when the
    `tensorboard` package is installed (`tensorboard --logdir RUN_DIR`). Rank 0 writes. A run
    resumed at step `start` first drops the figures it logged after that step (before it stopped),
    so each step appears once."""

    def __init__(self, path: Path, stage: str, start: int = 0):
        self.path, self.stage, self.writer = path, stage, None
        if not dist.is_main():
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_file():  # (a run killed mid-line leaves a partial last line: dropped too)
            kept = [line for line in path.read_text().splitlines() if _step_of(line) <= start]
            path.write_text("".join(line + "\n" for line in kept))
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard not installed: the JSON lines alone
            return
        self.writer = SummaryWriter(str(path.parent / "tensorboard"), purge_step=start + 1 if start else None)

    def __call__(self, step: int, values: dict[str, float]) -> None:
        if not dist.is_main():
            return
        with self.path.open("a") as f:
            f.write(json.dumps({"stage": self.stage, "step": step, **values}) + "\n")
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(f"{self.stage}/{k}", v, step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _step_of(line: str) -> float:
    """A metrics line's step; infinity for a line that is not one (cut by a kill)."""
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return math.inf


def accumulate_gradients(train_model, loss_fn, step: int, count: int, runtime: Runtime, scaler):
    """Run loss_fn on each of `count` micro-batches and backpropagate loss / count: -> (the step's
    mean loss, the last micro-batch's terms, whether every loss was finite). A non-finite loss is
    not backpropagated; the caller skips the step. Under DDP only the last micro-batch syncs."""
    total, finite, terms = 0.0, True, {}
    for index in range(count):
        sync = index == count - 1 or not hasattr(train_model, "no_sync")
        with dist.micro(index, count), (contextlib.nullcontext() if sync else train_model.no_sync()):
            with runtime.autocast():  # the forward only: the backward runs outside autocast
                loss, terms = loss_fn(train_model, step)
            if not torch.isfinite(loss):
                finite = False
            elif scaler is None:
                (loss / count).backward()
            else:
                scaler.scale(loss / count).backward()
        total = total + loss.detach() / count
    return total, terms, finite


class _Whole:
    """An EMA's gathered state, for sample_fn (which runs on process 0 alone)."""

    def __init__(self, state: dict):
        self.state = state

    def state_dict(self) -> dict:
        return self.state


def _full_options():
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True)


def model_state(model: nn.Module, sharded: bool) -> dict[str, torch.Tensor]:
    if not sharded:
        return model.state_dict()
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_full_options())


def load_model_state(model: nn.Module, state: dict[str, torch.Tensor], sharded: bool) -> None:
    if not sharded:
        model.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    set_model_state_dict(model, state, options=_full_options())


def optimizer_state(model: nn.Module, opt: torch.optim.Optimizer, sharded: bool) -> dict:
    """The optimizer's state with whole tensors. Sharded, it is keyed by parameter name
    (torch.distributed.checkpoint's form), so FSDP checkpoints resume under FSDP."""
    if not sharded:
        return opt.state_dict()
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(model, opt, options=_full_options())


def load_optimizer_state(model: nn.Module, opt: torch.optim.Optimizer, state: dict, sharded: bool) -> None:
    """Either form, whatever this run's: a sharded run's checkpoint resumes in one process and back."""
    by_name = isinstance(next(iter(state.get("state", {})), None), str)
    if not sharded and not by_name:
        opt.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    set_optimizer_state_dict(model, opt, optim_state_dict=state, options=_full_options())


def _runtime_tag(runtime: Runtime) -> str:
    return f"{runtime.device.type} {runtime.precision}"


def fit(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, int], tuple[torch.Tensor, dict[str, float]]],
    *,
    steps: int,
    optim: OptimConfig,
    run_dir: Path,
    config: dict,
    log: Log,
    ema_decay: float | None = None,
    resume: bool = False,
    runtime: Runtime | None = None,
    log_every: int = 25,
    ckpt_every: int = 250,
    sample_fn: Callable[[nn.Module, EMA | None, int], None] | None = None,
    sample_every: int = 0,
    desc: str = "train",
    aux: nn.Module | None = None,
    shard: bool = False,
    sequence: bool = False,
    keep: int = 2,
) -> EMA | None:
    """Train `model` (already on runtime.device) for `steps` optimizer steps; returns the EMA (None
    when ema_decay is None). `loss_fn` returns its loss on that device.

    `aux`: a second module trained beside the model by the same loss and optimizer (a GAN's
    discriminator: loss_fn makes sure its gradients come from its own term only), with its own
    gradient clipping, checkpointed in aux.safetensors and restored on resume.

    Under torchrun the model is wrapped by DDP, or sharded with FSDP2 (`shard`); checkpoints hold
    whole tensors either way, so a run resumes on any number of processes. A sharded model's EMA
    is sharded like it; the returned EMA's state_dict() gives sharded tensors (dist.full gathers).
    `sequence`: every process takes the same samples and a share of each sample's tokens
    (kinema.nn.sequence_parallel); DDP still averages the gradients. `keep`: how many of the newest
    checkpoints stay on disk."""
    runtime = runtime or cpu_runtime("fp32")
    # fp16 overflows without loss scaling; bf16 and fp32 have fp32's range and need none
    scaler = torch.amp.GradScaler(runtime.device.type) if runtime.precision == "fp16" else None
    sharded = shard and dist.world() > 1
    if sharded and aux is not None:
        raise KinemaError("an auxiliary module (a discriminator) with FSDP is not supported yet; use DDP (parallel: ddp)")
    train_model = dist.wrap(model, shard)  # before the optimizer: FSDP2 swaps the parameters for shards
    split = sequence and dist.world() > 1
    if dist.world() > 1:
        kind = "FSDP2 (sharded)" if sharded else "DDP"
        log(f"[{desc}] {kind}{' with sequence parallelism' if split else ''} over {dist.world()} processes")
    # every parameter, frozen ones too (the decoder stage's encoder, AnimateDiff's image model):
    # AdamW skips a parameter without a gradient, and the optimizer state keeps one layout, so
    # checkpoints resume whichever parameters a stage freezes
    groups = param_groups(model) + ([{"params": list(aux.parameters())}] if aux is not None else [])
    opt = torch.optim.AdamW(groups, lr=optim.lr, betas=optim.betas, weight_decay=optim.weight_decay)
    ema = EMA(model, ema_decay) if ema_decay else None
    start = 0
    found = find_checkpoint(run_dir)
    if found.exists and not resume:
        raise KinemaError(f"{run_dir} already holds checkpoints; pass --resume to continue, or delete it to start over")
    if found.exists and found.path is None:
        why = "; ".join(f"{p.name}: {problem}" for p, problem in found.skipped)
        raise KinemaError(f"{run_dir} holds checkpoints but none is valid ({why}); delete {run_dir} to start over")
    for path, problem in found.skipped:
        log(f"[{desc}] skipped {path} ({problem}); resuming from the newest valid checkpoint before it")
    ckpt = found.path
    if ckpt is not None:
        try:
            load_model_state(model, load_weights(ckpt / "model.safetensors"), sharded)
        except RuntimeError as e:  # missing / unexpected keys, other shapes
            raise KinemaError(f"{ckpt} holds another model than this run builds ({str(e).splitlines()[0][:120]}); "
                              f"resume with the recipe (and --arch) it was started with, or use a new run_dir") from None
        if aux is not None:
            if not (ckpt / "aux.safetensors").is_file():
                raise KinemaError(f"{ckpt} was trained without the auxiliary module (e.g. a discriminator) this run has; "
                                  f"resume with the recipe it was started with")
            aux.load_state_dict(load_weights(ckpt / "aux.safetensors"))
        state = load_trainer_state(ckpt)
        load_optimizer_state(model, opt, state["optimizer"], sharded)
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        if ema is not None:
            ema.load_state_dict(dist.shaped_like(load_weights(ckpt / "ema.safetensors"), ema.state_dict()),
                                updates=int(state.get("ema_updates", start)))
        start = int(state["step"])
        log(f"[{desc}] resumed from {ckpt} at step {start}")
        before = state.get("runtime")
        if before and before != _runtime_tag(runtime):
            log(f"[{desc}] note: this run was trained on {before} and continues on {_runtime_tag(runtime)}; "
                f"it will not match an uninterrupted run bit for bit")

    def save(step: int) -> None:
        # whole tensors, gathered by every process (a collective under FSDP); process 0 writes them
        weights = {"model": model_state(model, sharded)}
        if aux is not None:
            weights["aux"] = aux.state_dict()
        if ema is not None:
            weights["ema"] = dist.full(ema.state_dict())
        optimizer = optimizer_state(model, opt, sharded)
        if not dist.is_main():
            dist.barrier()
            return
        state = {"step": step, "optimizer": optimizer, "ema_updates": ema.updates if ema is not None else 0,
                 "scaler": scaler.state_dict() if scaler is not None else {}, "runtime": _runtime_tag(runtime)}
        save_checkpoint(run_dir, step, weights, config, state, keep=keep)
        dist.barrier()

    model.train()
    if aux is not None:
        aux.train()
    bar = tqdm(range(start, steps), initial=start, total=steps, desc=desc, dynamic_ncols=True, mininterval=1.0,
               disable=not dist.is_main())
    t0, seen = time.time(), 0
    metrics = Metrics(run_dir.parent / "metrics.jsonl", desc, start)
    done = start  # optimizer steps completed
    bad = 0  # non-finite losses in a row
    scope = sequence_parallel.scope() if split else contextlib.nullcontext()
    with scope, STOP.between_steps():
        try:
            for step in bar:
                if dist.any_true(STOP.requested):  # every process stops at the same step
                    raise KeyboardInterrupt
                lr = lr_at(optim, step, steps)
                for group in opt.param_groups:
                    group["lr"] = lr * group.get("lr_scale", 1.0)
                loss, terms, finite = accumulate_gradients(train_model, loss_fn, step, optim.accumulate, runtime, scaler)
                if dist.any_true(not finite):  # every process skips together
                    bad += 1
                    log(f"[{desc}] step {step + 1}: the loss is {loss.item()} (on some process); step skipped "
                        f"({bad} in a row)")
                    if bad >= MAX_BAD_STEPS:
                        save(step)
                        raise KinemaError(f"[{desc}] the loss was not finite for {bad} steps in a row (last at step {step + 1}); "
                                          f"checkpoint saved: lower the learning rate and --resume")
                    opt.zero_grad(set_to_none=True)
                    done = step + 1
                    if done % ckpt_every == 0 or done == steps:  # a skipped step still ends where checkpoints fall
                        save(done)
                    continue
                bad = 0
                if scaler is not None:
                    scaler.unscale_(opt)  # clip the true gradients
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), optim.grad_clip) if optim.grad_clip else None
                if aux is not None:
                    dist.average_grads(aux)  # DDP averages the model's; the auxiliary module's here
                if aux is not None and optim.grad_clip:
                    torch.nn.utils.clip_grad_norm_(aux.parameters(), optim.grad_clip)
                if scaler is None:
                    opt.step()
                else:
                    scaler.step(opt)  # skipped when the scaled gradients overflowed
                    scaler.update()
                opt.zero_grad(set_to_none=True)
                if ema is not None:
                    ema.update(model)
                done, seen = step + 1, seen + 1
                bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
                if done % log_every == 0 or done == steps:
                    loss = dist.mean(loss.detach())  # every rank's share (all ranks reach this line together)
                    rate = seen / (time.time() - t0)
                    parts = " ".join(f"{k} {v:.4g}" for k, v in terms.items())
                    gn = f" grad_norm {float(grad_norm):.3g}" if grad_norm is not None else ""
                    log(f"[{desc}] step {done}/{steps} loss {loss.item():.5f} {parts} lr {lr:.2e}{gn} it/s {rate:.2f}")
                    figures = {"loss": loss.item(), **{k: float(v) for k, v in terms.items()}, "lr": lr, "it_s": rate}
                    metrics(done, figures if grad_norm is None else {**figures, "grad_norm": float(grad_norm)})
                if done % ckpt_every == 0 or done == steps:
                    save(done)
                if sample_fn is not None and sample_every and (done % sample_every == 0 or done == steps):
                    whole = _Whole(dist.full(ema.state_dict())) if sharded and ema is not None else ema  # all processes gather
                    if dist.is_main():
                        with sequence_parallel.off():
                            sample_fn(model, whole, done)
                    model.train()
            if dist.any_true(STOP.requested):  # asked for during the last step
                raise KeyboardInterrupt
        except KeyboardInterrupt:
            save(done)
            raise KinemaError(f"[{desc}] interrupted after step {done}; checkpoint saved, continue with --resume") from None
        finally:
            bar.close()
            metrics.close()
    return ema
