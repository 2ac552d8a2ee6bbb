"""The GPU check runs on the CPU at tiny sizes, through its script, and reports every row it promises."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_script_runs_on_the_cpu_at_tiny_sizes(tmp_path):
    out = tmp_path / "check.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--tiny",
                          "--json", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "GPU check on cpu (tiny sizes)" in run.stdout
    rows = json.loads(out.read_text())["rows"]
    whats = [r["what"] for r in rows]
    for key in ("train steps/s", "sampling (Euler", "paired FID bootstrap", "training steps of the paper CelebA",
                "sample "):
        assert any(w.startswith(key) or key in w for w in whats), key
    assert {r["precision"] for r in rows if r["what"].startswith("train steps/s")} == {"fp32", "bf16"}
    assert all(r["value"] > 0 for r in rows if not math.isnan(r["value"]))
