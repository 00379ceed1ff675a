"""benchmarks/architectures.py end to end on the tiny recipe: a shared cache, two presets trained,
judged and timed; a second run reuses everything; equal FLOPs gives a cheaper preset more steps."""

import json
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import tiny_recipe_dict

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "architectures.py"


def bench(*args) -> str:
    proc = subprocess.run([sys.executable, str(BENCH), *map(str, args)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_architectures_benchmark_trains_judges_times_and_resumes(tmp_path, tiny_model_dir):
    recipe = tiny_recipe_dict(tmp_path / "unused", vae_steps=0, dit_steps=2)
    recipe.update(world="scenes")
    recipe["vae"].update(init_from=str(tiny_model_dir))
    recipe["vae_decoder"] = {"steps": 1, "batch_size": 1, "frames": 5, "ckpt_every": 1, "sample_every": 0}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    common = ("--recipe", tmp_path / "r.yaml", "--archs", "wan-tiny,sd3-tiny", "--root", tmp_path / "root", "--clips", 4)

    out = bench(*common, "--steps", 2, "--json", tmp_path / "b.json")
    result = json.loads((tmp_path / "b.json").read_text())
    assert [r["arch"] for r in result["rows"]] == ["wan-tiny", "sd3-tiny"]
    for r in result["rows"]:
        assert r["steps"] == 2 and r["eval"]["two_objects"]["clips"] == 2 and r["step_s"] > 0 and r["sample_s"] > 0
        assert (tmp_path / "root" / f"{r['arch']}-steps2" / "model" / "dit.safetensors").is_file()
    assert "| wan-tiny | 2 |" in out and "binding" in out
    assert "Each split has 2 clips" in out and "±69 points at 50%" in out  # 1.96 sqrt(0.25 / 2)
    log = (tmp_path / "root" / "wan-tiny-steps2" / "train_log.txt").read_text()
    assert "[cache]" not in log  # the shared cache, not a new one

    out = bench(*common, "--steps", 2, "--no-timing")  # everything is done: nothing trains again
    assert "| not timed | not timed |" in out
    assert (tmp_path / "root" / "wan-tiny-steps2" / "train_log.txt").read_text() == log

    bench(*common, "--steps", 4, "--match-flops", "sd3-tiny", "--time-only", "--json", tmp_path / "t.json")
    steps = {r["arch"]: r["steps"] for r in json.loads((tmp_path / "t.json").read_text())["rows"]}
    assert steps["sd3-tiny"] == 4 and steps["wan-tiny"] != 4  # cost differs, so the steps do
