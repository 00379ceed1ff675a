"""Plant realistic one-line bugs in a scratch copy of kinema, one at a time, and name the default
tests that catch each (issue 15: a suite of properties alone let 9 of 18 such bugs through).

    python tests/planted_bugs.py              # the nine bugs of issue 15 against the fast test files
    python tests/planted_bugs.py --all-tests  # against the whole default suite (slower)

Prints one line per bug: the bug, and the first failing test (or CAUGHT BY NOTHING). Exit 1 when
any bug goes uncaught. The working tree is never touched: each bug is planted in a copy.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# (what the bug is, file, the right line(s), the buggy line(s))
BUGS = [
    ("flow-matching target with its sign flipped", "src/kinema/flow/paths.py",
     "    return x1 - x0", "    return x0 - x1"),
    ("logit-normal sampling that ignores its std", "src/kinema/flow/timesteps.py",
     "torch.sigmoid(cfg.mean + cfg.std * torch.randn(", "torch.sigmoid(cfg.mean + torch.randn("),
    ("Euler evaluating the velocity at t_next", "src/kinema/flow/samplers.py",
     "        x = x + (t_next - t) * velocity_fn(x, t)\n    return x", "        x = x + (t_next - t) * velocity_fn(x, t_next)\n    return x"),
    ("Heun's corrector evaluated at t", "src/kinema/flow/samplers.py",
     "velocity_fn(x_pred, t_next)", "velocity_fn(x_pred, t)"),
    ("RoPE-3D with its axes reversed", "src/kinema/nn/rope.py",
     "parts.append(positions[:, i, None].double() * freqs)", "parts.append(positions[:, 2 - i, None].double() * freqs)"),
    ("RoPE with the frame axis dropped", "src/kinema/nn/rope.py",
     "parts.append(positions[:, i, None].double() * freqs)", "parts.append(positions[:, i, None].double() * freqs * (i > 0))"),
    ("AdaLN with shift and scale swapped", "src/kinema/nn/modulation.py",
     "(x.float() * (1 + mod.scale) + mod.shift)", "(x.float() * (1 + mod.shift) + mod.scale)"),
    ("patchify / unpatchify ordering tokens space-first", "src/kinema/dit/patchify.py",
     ["-> b (t h w) (c pt ph pw)\"", "\"b (t h w) (c pt ph pw) ->"], ["-> b (h w t) (c pt ph pw)\"", "\"b (h w t) (c pt ph pw) ->"]),
    ("a checkpoint written straight into its step directory", "src/kinema/train/checkpoint.py",
     ["    tmp = root / f\".tmp_step_{step:07d}\"\n    tmp.mkdir()", "    shutil.rmtree(final, ignore_errors=True)\n    os.replace(tmp, final)"],
     ["    tmp = final\n    tmp.mkdir(exist_ok=True)", "    pass"]),
]

FAST_TESTS = ["tests/test_flow.py", "tests/test_rope_patchify.py", "tests/test_dit.py", "tests/test_resume.py",
              "tests/test_known_answers.py", "tests/test_adapters.py", "tests/test_shipped_model.py"]


def plant(copy: Path, file: str, right, wrong) -> None:
    path = copy / file
    text = path.read_text()
    for a, b in zip([right] if isinstance(right, str) else right, [wrong] if isinstance(wrong, str) else wrong):
        if a not in text:
            raise SystemExit(f"{file}: the line to break is gone ({a!r}); update tests/planted_bugs.py")
        text = text.replace(a, b, 1)
    path.write_text(text)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--all-tests", action="store_true", help="run the whole default suite for each bug")
    args = p.parse_args()
    tests = ["tests"] if args.all_tests else FAST_TESTS
    missed = 0
    for what, file, right, wrong in BUGS:
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / "kinema"
            shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(".git", ".venv", "runs", "outputs", "__pycache__"))
            plant(copy, file, right, wrong)
            env_path = f"{copy / 'src'}"
            # (the test that checks these lines exist would fail for every bug: leave it out)
            out = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests, "--deselect",
                                  "tests/test_known_answers.py::test_the_planted_bugs_still_have_their_lines"],
                                 cwd=copy, capture_output=True, text=True, env={**_env(), "PYTHONPATH": env_path})
        failed = [line.split(" ")[1] for line in out.stdout.splitlines() if line.startswith("FAILED ")]
        if failed:
            print(f"{what}: caught by {failed[0].split(' - ')[0]}")
        else:
            missed += 1
            print(f"{what}: CAUGHT BY NOTHING")
    sys.exit(1 if missed else 0)


def _env() -> dict:
    import os

    return {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}


if __name__ == "__main__":
    main()
