"""Where and in what precision a run computes: one policy for generate, train and eval.

    rt = resolve_runtime(device="auto", precision="auto")
    rt.device                   torch.device("cuda:0") | torch.device("cpu") | torch.device("mps")
    rt.precision                "bf16" | "fp16" | "fp32"   (the autocast compute dtype)
    rt.reason                   why: "NVIDIA H100 80GB HBM3 supports bf16", "a bf16 matmul ran 0.018x as fast as fp32 ..."
    with rt.autocast(): ...     weights stay fp32; RoPE, modulation, norms and losses cast to fp32 themselves

The rules (README, "Devices and precision"):
- device "auto": CUDA if a GPU is visible, else Apple MPS, else the CPU.
- precision "auto":
  - CUDA: bf16 where the GPU supports it (Ampere and newer), else fp16 (training adds a GradScaler)
  - CPU: bf16 only where a bf16 matmul runs faster than an fp32 one, measured once per process
    (`cpu_bf16`): CPUs with AVX512_BF16 or AMX multiply bf16 about 2x faster than fp32, and
    the others emulate it, 3x to 100x slower
  - MPS: fp32
- explicit "fp32" / "bf16" work on every device; "fp16" needs a GPU.

KINEMA_CPU_BF16=1 or 0 skips the measurement and says whether this CPU's bf16 is fast.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import time
from dataclasses import dataclass

import torch

from kinema.errors import KinemaError

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")  # x86 AVX512_BF16 / AMX, Arm FEAT_BF16 ("bf16" in Features)


@dataclass(frozen=True)
class CPUBf16:
    """What the CPU's bf16 check found."""

    native: bool
    speedup: float | None  # fp32 time / bf16 time of the probe matmul; None when KINEMA_CPU_BF16 decided
    flags: tuple[str, ...]  # bf16 feature flags the OS reports (information only: the measurement decides)
    how: str  # one line: how `native` was decided


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("model name", "Model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_flags() -> tuple[str, ...]:
    """The bf16 flags among /proc/cpuinfo's flags (x86) or Features (Arm); () where there is none."""
    try:
        with open("/proc/cpuinfo") as f:
            words = set()
            for line in f:
                if line.startswith(("flags", "Features")):
                    words.update(line.split(":", 1)[1].split())
    except OSError:
        return ()
    return tuple(flag for flag in CPU_BF16_FLAGS if flag in words)


def matmul_seconds(dtype: torch.dtype, n: int = 256, reps: int = 3) -> float:
    """Best of `reps` timed n x n matmuls in `dtype` on the CPU, after one untimed warm-up."""
    a = torch.randn(n, n, generator=torch.Generator().manual_seed(0)).to(dtype)
    a @ a
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - t0)
    return best


def probe_cpu_bf16(timer=matmul_seconds, env: dict | None = None) -> CPUBf16:
    """Decide whether bf16 is fast on this CPU. `timer(dtype) -> seconds` and `env` are injectable.

    A 256^3 matmul costs about 0.1 ms in fp32; in emulated bf16 up to 10 ms, so the check costs
    at most a few tens of milliseconds, once per process (`cpu_bf16` caches it)."""
    env = os.environ if env is None else env
    flags = cpu_flags()
    forced = env.get("KINEMA_CPU_BF16", "").strip()
    if forced in ("0", "1"):
        return CPUBf16(forced == "1", None, flags, f"KINEMA_CPU_BF16={forced}")
    if forced:
        raise KinemaError(f"KINEMA_CPU_BF16={forced!r} must be 1 (bf16 is fast here) or 0; unset it to measure")
    speedup = timer(torch.float32) / timer(torch.bfloat16)
    native = speedup >= 1.0
    verdict = "faster" if native else "slower"
    return CPUBf16(native, speedup, flags, f"a bf16 matmul ran {speedup:.2g}x as fast as fp32 on this CPU ({verdict})")


@functools.lru_cache(maxsize=None)
def cpu_bf16() -> CPUBf16:
    return probe_cpu_bf16()


def available_devices() -> list[str]:
    out = ["cpu"]
    if torch.cuda.is_available():
        out += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if _mps_available():
        out.append("mps")
    return out


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(name: str = "auto") -> torch.device:
    """"auto" | "cpu" | "cuda" | "cuda:N" | "mps" -> torch.device; a clear error for anything else."""
    name = str(name).strip().lower()
    avail = ", ".join(available_devices())
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not _mps_available():
            raise KinemaError(f"device 'mps' is not available here (it needs Apple silicon and a torch built with MPS); "
                              f"available: {avail}")
        return torch.device("mps")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}, but no GPU is visible"
            raise KinemaError(f"device {name!r}: no CUDA GPU here (torch {torch.__version__} is {build}); "
                              f"available: {avail}. Use --device cpu or auto")
        index = name.partition(":")[2]
        if not index:
            return torch.device("cuda", torch.cuda.current_device())
        if not index.isdigit() or int(index) >= torch.cuda.device_count():
            raise KinemaError(f"device {name!r} does not exist; available: {avail}")
        return torch.device("cuda", int(index))
    raise KinemaError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps (available here: {avail})")


def _cuda_bf16_native() -> bool:
    """bf16 in hardware (compute capability 8.0+), not the emulation some torch versions count."""
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # torch < 2.4 has no including_emulation and counts hardware only
        return torch.cuda.is_bf16_supported()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple MPS"
    return f"{cpu_model()}, {os.cpu_count()} cores"


def choose_precision(device: torch.device, requested: str = "auto", bf16_native: bool | None = None) -> tuple[str, str]:
    """-> (precision, reason). `bf16_native` injects the hardware check (None: measure / ask the GPU)."""
    requested = str(requested).strip().lower()
    if requested not in PRECISIONS:
        raise KinemaError(f"unknown precision {requested!r}; use one of {', '.join(PRECISIONS)}")
    if device.type == "cuda":
        if bf16_native is None:
            bf16_native = _cuda_bf16_native()
        gpu = device_name(device) if torch.cuda.is_available() else "this GPU"
        if requested == "bf16" and not bf16_native:
            raise KinemaError(f"precision 'bf16' is not supported by {gpu}; use fp16 or fp32 (auto picks fp16)")
        if requested != "auto":
            return requested, "asked for"
        return ("bf16", f"{gpu} supports bf16") if bf16_native else ("fp16", f"{gpu} has no bf16; fp16 with loss scaling")
    if requested == "fp16":
        raise KinemaError(f"precision 'fp16' needs a GPU; on {device.type} use fp32 or bf16 (or auto)")
    if requested != "auto":
        return requested, "asked for"
    if device.type == "mps":
        return "fp32", "the MPS default"
    if bf16_native is not None:
        return ("bf16", "bf16 is fast on this CPU (given)") if bf16_native else ("fp32", "bf16 is slow on this CPU (given)")
    probe = cpu_bf16()
    return ("bf16" if probe.native else "fp32"), probe.how


def no_autocast(device: torch.device):
    """A region computed in fp32 whatever autocast is active outside it (modulation, text encoders).
    Devices without autocast (e.g. "meta", used to check that models are device-clean) need none."""
    if device.type in ("cpu", "cuda", "mps", "xpu"):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    precision: str  # resolved: bf16 | fp16 | fp32
    reason: str = "asked for"

    def __post_init__(self):
        if self.precision not in DTYPES:
            raise KinemaError(f"unknown precision {self.precision!r}; use one of {', '.join(DTYPES)}")

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.precision]

    def autocast(self):
        """Autocast to the compute dtype (nothing for fp32)."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def activate(self) -> "Runtime":
        """Process-wide backend settings for this runtime: TF32 tensor cores for fp32 matmuls and
        convolutions on CUDA (10-bit mantissa inputs, fp32 accumulation, as PyTorch recommends for
        training); nothing elsewhere."""
        if self.device.type == "cuda" and self.precision == "fp32":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        return self

    def synchronize(self) -> None:
        """Wait for the device's queued work (for timing); nothing on the CPU."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elif self.device.type == "mps":
            torch.mps.synchronize()

    def describe(self) -> str:
        return f"device {self.device} ({device_name(self.device)}), precision {self.precision}: {self.reason}"


def resolve_runtime(device: str | torch.device = "auto", precision: str = "auto") -> Runtime:
    """The one entry point: device and precision names (or "auto") -> an activated Runtime."""
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    chosen, reason = choose_precision(dev, precision)
    return Runtime(dev, chosen, reason).activate()


def cpu_runtime(precision: str = "fp32") -> Runtime:
    """The CPU in an explicit precision (tests, benchmarks)."""
    return Runtime(torch.device("cpu"), precision)


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host batch to `device`: through pinned memory and an asynchronous copy on CUDA."""
    if device.type == "cuda" and x.device.type == "cpu":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)
