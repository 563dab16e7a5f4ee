"""The benchmark runs end to end on a tiny configuration, so it cannot rot."""

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow


def test_benchmark_tiny_run_writes_results_and_table(tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "joint_vs_sequential.py"), "--tiny",
         "--models=digits,conv1d_dense_head", f"--out={tmp_path}"],
        capture_output=True, text=True, timeout=1200, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads((tmp_path / "results.json").read_text())
    systems = {(row["model"], row["system"]) for row in data["summary"]}
    assert systems == {("digits", "tfmot_sequential"), ("digits", "tfjoint"), ("digits", "tfjoint_qat_late"),
                       ("conv1d_dense_head", "tfmot_sequential"), ("conv1d_dense_head", "tfjoint")}
    for row in data["runs"]:
        assert row["reference_unchanged"]  # no system may train the shared float reference
        assert row["fully_int8"]
        assert row["pruned_sparsity"] == pytest.approx(0.8, abs=0.005)  # read from the flatbuffer
        if row["dense_layers"]:  # the kernels left dense count in "all weights" only
            assert row["weight_sparsity"] < row["pruned_sparsity"] - 0.005
        else:
            assert row["weight_sparsity"] == pytest.approx(row["pruned_sparsity"])
        assert 0.0 <= row["keras_accuracy"] <= 1.0
        assert row["gzip_over_bound"] >= 1.0  # gzip cannot beat the entropy bound
        assert row["float_step_s"] > 0 and row["fit_seconds"] > 0
    joint = next(r for r in data["runs"] if r["system"] == "tfjoint" and r["model"] == "digits")
    sequential = next(r for r in data["runs"] if r["system"] == "tfmot_sequential" and r["model"] == "digits")
    assert joint["joint_step_ratio"] > 0 and sequential["prune_step_ratio"] > 0 and sequential["qat_step_ratio"] > 0
    conv1d = next(r for r in data["runs"] if r["system"] == "tfmot_sequential" and r["model"] == "conv1d_dense_head")
    assert "post-training" in conv1d["notes"][0]
    assert "| digits | tfjoint |" in (tmp_path / "table.md").read_text()
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tflite")]
