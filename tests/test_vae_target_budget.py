"""benchmarks/vae_target_budget.py: the clip's PSNR from its frames' and the later frames' PSNR a
+4 dB clip needs, against hand-computed answers, and the committed figures reproduced."""

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("vae_target_budget", ROOT / "benchmarks" / "vae_target_budget.py")
budget = importlib.util.module_from_spec(spec)
spec.loader.exec_module(budget)


def test_clip_psnr_averages_squared_errors_not_decibels():
    assert budget.clip_psnr([20.0] * 17) == pytest.approx(20.0)
    # errors 0.01 and 0.0001 (20 and 40 dB): their mean 0.00505 is 22.97 dB, not the decibels' mean 30
    assert budget.clip_psnr([20.0, 40.0]) == pytest.approx(-10 * math.log10(0.00505))


def test_later_frames_needed_put_the_clip_on_target():
    assert budget.later_needed(25.0, 25.0) == pytest.approx(25.0)
    # frame 0 at 20 dB (error 0.01) and a 17-frame clip at 30 dB (0.001): the rest share 0.017 - 0.01
    assert budget.later_needed(20.0, 30.0) == pytest.approx(-10 * math.log10(0.007 / 16))
    for frame0 in (18.0, 24.57, 40.0):
        later = budget.later_needed(frame0, 24.97)
        assert budget.clip_psnr([frame0] + [later] * 16) == pytest.approx(24.97)
    assert budget.later_needed(10.0, 30.0) == math.inf  # frame 0 alone spends more than the clip's error


def test_the_committed_figures_are_what_the_script_gives(tmp_path):
    out = tmp_path / "budget.json"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "vae_target_budget.py"), "--json", str(out)],
                   check=True, capture_output=True)
    assert json.loads(out.read_text()) == json.loads((ROOT / "docs" / "vae_target_budget.json").read_text())
