"""One training per run directory, and a resumed run that is the run it resumes.

`locked(run_dir)` holds an exclusive lock (`run.lock`, with the holder's pid and host) for the
whole training: a second `kinema train` on the same directory fails at once instead of mixing its
stages with the first one's. The lock is an OS file lock, so a killed holder releases it; the
next run finds the dead holder's note in the file, says so and takes over.

`check_identity(run_dir, ...)` records what fixes a run's results (`run.json`: seed, worlds, model)
when it starts, and refuses `--resume` with a recipe that changed any of them.
"""

from __future__ import annotations

import json
import os
import socket
from contextlib import contextmanager
from pathlib import Path

from kinema.errors import KinemaError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks here
    fcntl = None


@contextmanager
def locked(run_dir: Path, log=print):
    """Hold run_dir/run.lock for the duration; KinemaError at once when another process holds it."""
    if fcntl is None:
        log(f"note: this platform has no file locks; nothing stops a second training in {run_dir}")
        yield
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    f = (run_dir / "run.lock").open("a+")
    try:
        _take(f, run_dir)
        f.seek(0)
        before = f.read().strip()
        if before:
            log(f"note: the training that held {run_dir} ({before}) ended without releasing it; taking it over")
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        f.flush()
        try:
            yield
        finally:
            f.seek(0)
            f.truncate()
            f.flush()
            fcntl.flock(f, fcntl.LOCK_UN)
    finally:
        f.close()


def check_free(run_dir: Path) -> None:
    """KinemaError at once when another process holds run_dir/run.lock; nothing happens otherwise.
    `kinema train` calls this before it imports torch (2 to 3 s), so a second training fails within
    a second; `locked` still takes the lock for the whole run."""
    path = run_dir / "run.lock"
    if fcntl is None or not path.is_file():
        return
    with path.open("a+") as f:
        _take(f, run_dir)
        fcntl.flock(f, fcntl.LOCK_UN)


def _take(f, run_dir: Path) -> None:
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        raise KinemaError(f"{run_dir} is in use by another training ({f.read().strip() or 'holder unknown'}); "
                          f"wait for it to end, or train in another --run-dir") from None


def check_identity(run_dir: Path, identity: dict, resume: bool, defaults: dict | None = None) -> None:
    """Record `identity` (what fixes the run's results) in run_dir/run.json at a fresh start; on
    --resume, refuse a recipe whose identity differs from the recorded one. `defaults`: the
    identity's default values (the same layout): a setting added to kinema after the run began is
    missing from its record, and reads as its default there."""
    path = run_dir / "run.json"
    identity = json.loads(json.dumps(identity))  # as it reads back (tuples become lists)
    if resume and path.is_file():
        fallback = _leaves(json.loads(json.dumps(defaults or {})))
        before, now = _leaves(json.loads(path.read_text())), _leaves(identity)
        before = {**{k: fallback[k] for k in now.keys() - before.keys() if k in fallback}, **before}
        changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
        if changed:
            shown = "; ".join(f"{k}: {before.get(k)} then, {now.get(k)} now" for k in changed[:3])
            more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
            raise KinemaError(f"--resume with another recipe than {run_dir} was started with ({shown}{more}); resume "
                              f"with the recipe (and --arch) it began with, or use a new --run-dir")
        return
    if path.is_file() and any(run_dir.glob("*/ckpt/step_*")):
        return  # a start over checkpoints fails in the trainer; the run they belong to keeps its record
    path.write_text(json.dumps(identity, indent=1, sort_keys=True))


def _leaves(d: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}"""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_leaves(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
