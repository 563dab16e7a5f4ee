"""The benchmarks run end to end on a tiny configuration, so they cannot rot (`make benchmark` runs these)."""

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT

pytestmark = pytest.mark.benchmark


def test_benchmark_tiny_run_writes_results_and_table(tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "joint_vs_sequential.py"), "--tiny",
         "--models=digits,conv1d_dense_head", "--quant_starts=0,0.5", f"--out={tmp_path}"],
        capture_output=True, text=True, timeout=1200, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads((tmp_path / "results.json").read_text())
    systems = {(row["model"], row["system"]) for row in data["summary"]}
    assert systems == {("digits", "tfmot_prune_qat"), ("digits", "tfmot_prune_ptq"), ("digits", "tfjoint_qs0.00"),
                       ("digits", "tfjoint_qs0.50"), ("conv1d_dense_head", "tfmot_prune_ptq"),
                       ("conv1d_dense_head", "tfjoint_qs0.00"), ("conv1d_dense_head", "tfjoint_qs0.50")}
    for row in data["runs"]:
        assert row["reference_unchanged"]  # no system may train the shared float reference
        assert row["fully_int8"]
        assert row["pruned_sparsity"] == pytest.approx(0.8, abs=0.005)  # read from the flatbuffer
        if row["dense_layers"]:  # the kernels left dense count in "all weights" only
            assert row["weight_sparsity"] < row["pruned_sparsity"] - 0.005
        else:
            assert row["weight_sparsity"] == pytest.approx(row["pruned_sparsity"])
        assert 0.0 <= row["int8_accuracy"] <= 1.0  # the shipped file on the test split
        assert row["gzip_over_bound"] >= 1.0  # gzip cannot beat the entropy bound
        assert row["float_step_s"] > 0 and row["fit_seconds"] > 0
        if row["system"].startswith("tfjoint"):  # auto: both files converted and validated, one shipped
            assert row["qat_file_accuracy"] is not None and row["ptq_file_accuracy"] is not None
            assert row["shipped"] in ("qat", "post_training")
    joint = next(r for r in data["runs"] if r["system"] == "tfjoint_qs0.00" and r["model"] == "digits")
    assert joint["joint_step_ratio"] > 0 and len(joint["joint_over_tfmot_qat_rounds"]) == 1
    assert len(joint["joint_over_tfmot_prune_rounds"]) == 1
    by_system = {e["system"]: e for e in data["summary"] if e["model"] == "digits"}
    assert by_system["tfjoint_qs0.50"]["tfmot_best"] in ("tfmot_prune_qat", "tfmot_prune_ptq")
    assert by_system["tfjoint_qs0.50"]["wall_over_best"] > 0
    assert "| digits | tfjoint_qs0.50 |" in (tmp_path / "table.md").read_text()
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tflite")]


def test_joint_step_profile_tiny_run(tmp_path):
    _run_benchmark("joint_step.py", "--models=digits", "--quantizer_ablation", f"--out={tmp_path}")
    data = json.loads((tmp_path / "joint_step.json").read_text())
    ablations = {"tfmot_qat_fixed_ranges", "tfmot_qat_weights_only", "tfmot_qat_activations_only"}
    for phase in ("steady", "ramp"):
        summary = data["results"]["digits"][phase]["summary"]
        assert set(summary) >= {"float", "tfmot_prune", "tfmot_qat", "tfjoint_float_phase", "tfjoint_qat_only",
                                "tfjoint_joint", "joint_over_tfmot_qat", "joint_over_tfmot_prune"}
        median, low, high = summary["tfjoint_joint"]
        assert 0 < low <= median <= high
        assert (set(summary) >= ablations) == (phase == "steady")  # the ablation times the steady step only
    assert "tfmot_qat_weights_only" in (tmp_path / "joint_step.md").read_text()
    assert data["fake_quant_kernel"]["unquantized_ms"] > 0 and "fused_ms" in data["fake_quant_kernel"]


def test_first_epoch_benchmark_tiny_run(tmp_path):
    _run_benchmark("first_epoch.py", "--models=digits", "--rounds=1", f"--out={tmp_path}")
    runs = json.loads((tmp_path / "first_epoch.json").read_text())["results"]["digits"]
    assert runs["tfjoint"][0]["traces"] == 1 and runs["tfjoint_two_traces"][0]["traces"] == 2
    assert all(run[0]["first_epoch_s"] > run[0]["later_epoch_s"] > 0 for run in runs.values())
    assert "| digits | tfmot_qat |" in (tmp_path / "first_epoch.md").read_text()


def _run_benchmark(script, *args, timeout=1200):
    result = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", script), "--tiny", *args],
                            capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=ROOT))
    assert result.returncode == 0, result.stderr[-3000:]


def test_channel_benchmark_tiny_run(tmp_path):
    _run_benchmark("channels.py", "--models=digits", f"--out={tmp_path}")
    data = json.loads((tmp_path / "channels.json").read_text())
    by_config = {row["config"]: row for row in data["runs"]}
    assert set(by_config) == {"unstructured", "channels50", "channels50_weights50"}
    assert by_config["channels50"]["weight_params"] < 0.3 * by_config["unstructured"]["weight_params"]
    assert by_config["channels50"]["channels"]["conv1"] == {"original": 32, "keras": 16, "tflite": 16}
    assert all(row["fully_int8"] and row["latency_ratio_rounds"] for row in data["runs"])
    assert "| digits | channels50 |" in (tmp_path / "channels.md").read_text()
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tflite")]


def test_allocation_benchmark_tiny_run(tmp_path):
    _run_benchmark("allocation.py", "--models=digits", "--sparsities=0.9", "--methods=uniform,sensitivity",
                   f"--out={tmp_path}")
    data = json.loads((tmp_path / "allocation.json").read_text())
    assert {(r["method"], r["distill"]) for r in data["runs"]} == {
        ("uniform", False), ("uniform", True), ("sensitivity", False), ("sensitivity", True)}
    for row in data["runs"]:
        assert row["plan_mean"] == pytest.approx(0.9, abs=0.005)
        assert row["weight_sparsity_in_file"] == pytest.approx(0.9, abs=0.01)  # read back from the int8 file


def test_xla_benchmark_tiny_run(tmp_path):
    _run_benchmark("xla.py", "--models=digits", f"--out={tmp_path}")
    data = json.loads((tmp_path / "xla.json").read_text())
    median, low, high = data["results"]["digits"]["joint_xla_over_joint"]
    assert 0 < low <= median <= high


def test_budget_benchmark_tiny_run(tmp_path):
    _run_benchmark("budget.py", "--models=digits", "--seeds=1", f"--out={tmp_path}")
    data = json.loads((tmp_path / "budget.json").read_text())
    systems = {(row["level"], row["system"].split()[0]) for row in data["rows"]}
    assert {("50%", "planned"), ("30%", "planned")} <= systems
    trained = [row for row in data["rows"] if not row["refused"]]
    assert any(row["level"] == "50%" and row["system"] == "planned" for row in trained)
    for row in trained:
        assert set(row["measured"]) == {"flash_bytes", "ram_bytes", "macs"}  # measured on the file, in TFLM
        if row["system"] == "planned":
            assert row["met"] and all(row["measured"][k] <= row["budget"][k] for k in row["measured"])
    for row in data["rows"]:
        if row["refused"]:  # an unreachable level is refused before training, naming the smallest figure
            assert row["system"] == "planned" and "smallest reachable" in row["refused"]
    assert "| digits | 30% | planned |" in (tmp_path / "budget.md").read_text()
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tflite")]


def test_budget_kws_benchmark_tiny_run(tmp_path):
    _run_benchmark("budget.py", "--kws", f"--out={tmp_path}")
    rows = json.loads((tmp_path / "budget_kws.json").read_text())["rows"]
    assert {row["system"] for row in rows} == {"planned", "uniform", "planned_distill"}
    for row in rows:  # the command's report: measured on the file in TFLM
        assert row["exit"] == 0, row["error"]
        assert row["met"] and 0.0 <= row["tflm_accuracy"] <= 1.0
    planned = next(row for row in rows if row["system"] == "planned")
    assert isinstance(planned["channel_fractions"], dict) and planned["strategy"]["strategy"]
    assert "| planned_distill |" in (tmp_path / "budget_kws.md").read_text()


def test_transformers_benchmark_tiny_run(tmp_path):
    _run_benchmark("transformers.py", "--seeds=0", f"--out={tmp_path}")
    rows = json.loads((tmp_path / "transformers_tiny.json").read_text())["rows"]
    for model in ("vit_digits", "bert_tiny"):
        mine = {row["method"]: row for row in rows if row["model"] == model}
        for method in ("tfjoint", "tfjoint 50%", "tfjoint heads", "tfjoint heads (scan)"):
            assert "error" not in mine[method], mine[method]
            assert mine[method]["float_ops"] == 0  # counted in the written file
            assert 0.0 <= mine[method]["accuracy"] <= 1.0
        assert mine["tfjoint heads"]["size_bytes"] < mine["tfjoint"]["size_bytes"]  # heads physically removed
        assert mine["tfjoint 50%"]["weight_sparsity"] > 0.2
        assert mine["latency heads/unpruned (builtin)"]["ratio"] > 0
        assert "error" not in mine["tfjoint micro"] and mine["tfjoint micro"]["float_ops"] == 0  # GELU's stand-in
    assert "| bert_tiny | tfjoint heads |" in (tmp_path / "transformers_tiny.md").read_text()


def test_weight_sharing_benchmark_tiny_run(tmp_path):
    _run_benchmark("weight_sharing.py", "--seeds=0", "--tasks=digits", f"--out={tmp_path}")
    rows = {row["method"]: row for row in json.loads((tmp_path / "weight_sharing_tiny.json").read_text())["rows"]}
    assert not [row for row in rows.values() if "error" in row], rows
    assert rows["tfjoint 16"]["flash_bytes"] < rows["plain"]["flash_bytes"]  # the files' sizes
    assert rows["plain reduced"]["flash_bytes"] < rows["plain"]["flash_bytes"]
    assert rows["plain reduced"]["ram_bytes"] == rows["plain"]["ram_bytes"]
    assert rows["tfjoint 4"]["flash_bytes"] < rows["tfjoint 16"]["flash_bytes"]
    for method in ("tfjoint 16", "TF-MOT 16"):
        assert rows[method]["alt_bytes"] > 0 and 0.0 <= rows[method]["tflm_accuracy"] <= 1.0
        # under the goal's RAM budget, measured in TFLM (arena + alternate memory)
        assert rows[method]["ram_limit"] == int(1.5 * rows["plain"]["arena_bytes"])
        assert rows[method]["ram_bytes"] <= rows[method]["ram_limit"]
    assert "| digits | tfjoint 4 |" in (tmp_path / "weight_sharing_tiny.md").read_text()


def test_weight_sharing_ram_curve_tiny_run(tmp_path):
    _run_benchmark("weight_sharing.py", "--ram_curve", "--seeds=0", "--tasks=digits", f"--out={tmp_path}")
    rows = json.loads((tmp_path / "weight_sharing_ram_curve_tiny.json").read_text())["rows"]
    budgeted = [row for row in rows if row["factor"]]
    assert len(budgeted) == 6 and not [row for row in budgeted if "error" in row]
    for row in budgeted:  # each file within its RAM budget, measured in TFLM
        assert row["ram_bytes"] <= row["ram_limit"] == int(row["factor"] * row["plain_arena"])
    unbounded = next(row for row in rows if row["compression"] == "lut" and not row["factor"])
    assert unbounded["flash_bytes"] < unbounded["plain_flash"] and unbounded["ram_bytes"] > budgeted[0]["ram_bytes"]


def test_what_you_keep_benchmark_tiny_run(tmp_path):
    _run_benchmark("what_you_keep.py", "--seeds=0", "--tasks=digits,conv1d_lstm", f"--out={tmp_path}")
    rows = json.loads((tmp_path / "what_you_keep_tiny.json").read_text())["rows"]
    assert {row["task"] for row in rows} == {"digits", "conv1d_lstm"}
    for row in rows:
        assert set(row["int8"]) == {"litert", "litert_reference", "tflm"}  # the written file in each runtime
        assert all(0.0 <= value <= 1.0 for value in row["int8"].values())
    assert "conv1d_lstm" in (tmp_path / "what_you_keep_tiny.md").read_text()


def test_weight_sharing_budget_benchmark_tiny_run(tmp_path):
    _run_benchmark("weight_sharing.py", "--budget", "--seeds=0", "--tasks=digits", f"--out={tmp_path}")
    data = json.loads((tmp_path / "weight_sharing_budget_tiny.json").read_text())
    rows = {row["method"]: row for row in data["rows"]}
    assert not [row for row in rows.values() if "error" in row], rows
    for method in ("channels plan", "bits plan"):  # both checked on the written file against 30% of the plain file
        assert rows[method]["met"] and rows[method]["flash_bytes"] <= rows[method]["budget_bytes"]
        assert rows[method]["budget_bytes"] == int(0.3 * rows["plain"]["flash_bytes"])
    assert rows["bits plan"]["clusters"] and not rows["channels plan"]["clusters"]
    assert "| digits | bits plan |" in (tmp_path / "weight_sharing_budget_tiny.md").read_text()


def test_sequences_benchmark_tiny_run(tmp_path):
    _run_benchmark("sequences.py", f"--out={tmp_path}", "--seeds=0", "--models=lstm,conv_lstm", "--whole_seeds=0")
    rows = json.loads((tmp_path / "sequences.json").read_text())["rows"]
    assert [row["model"] for row in rows] == ["lstm", "conv_lstm"]
    assert all(row["streaming"]["flash_bytes"] > 0 and row["streaming"]["arena_bytes"] > 0 for row in rows)
    assert "| conv_lstm | streaming (1 seed) |" in (tmp_path / "sequences.md").read_text()
