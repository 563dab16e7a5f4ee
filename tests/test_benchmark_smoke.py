"""The benchmark runs end to end on a tiny configuration, so it cannot rot."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_benchmark_tiny_run_writes_results_and_table(tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "joint_vs_sequential.py"), "--tiny",
         "--models=digits,conv1d", f"--out={tmp_path}"],
        capture_output=True, text=True, timeout=1200, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads((tmp_path / "results.json").read_text())
    systems = {(row["model"], row["system"]) for row in data["summary"]}
    assert systems == {("digits", "tfmot_sequential"), ("digits", "tfjoint"), ("digits", "tfjoint_qat_late"),
                       ("conv1d", "tfmot_sequential"), ("conv1d", "tfjoint")}
    for row in data["runs"]:
        assert row["reference_unchanged"]  # no system may train the shared float reference
        assert row["fully_int8"]
        assert row["weight_sparsity"] == pytest.approx(0.8, abs=0.005)
        assert row["gzip_over_bound"] >= 1.0  # gzip cannot beat the entropy bound
        assert row["float_step_s"] > 0 and row["fit_seconds"] > 0
    joint = next(r for r in data["runs"] if r["system"] == "tfjoint" and r["model"] == "digits")
    sequential = next(r for r in data["runs"] if r["system"] == "tfmot_sequential" and r["model"] == "digits")
    assert joint["joint_step_ratio"] > 0 and sequential["prune_step_ratio"] > 0 and sequential["qat_step_ratio"] > 0
    conv1d = next(r for r in data["runs"] if r["system"] == "tfmot_sequential" and r["model"] == "conv1d")
    assert "post-training" in conv1d["notes"][0]
    assert "| digits | tfjoint |" in (tmp_path / "table.md").read_text()
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tflite")]
