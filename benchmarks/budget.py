"""Benchmark: budgets in, a planned model out, against uniform channel pruning that meets the same budgets.

    python benchmarks/budget.py --out=benchmarks/results       # full run
    python benchmarks/budget.py --tiny --out=/tmp/bench        # smoke run

For each model and seed, from the same pre-trained float model, two budget
levels, each with all three budgets: 50% of the unpruned int8 model's TFLM
arena and flash and 40% of its MACs ("50%"), then 30% / 30% / 40% ("30%"), and,
because a small model's arena cannot shrink to 30% (TFLM's tail and planning
memory do not shrink with channels), 30% flash with 40% arena and MACs.
Two systems trained with the same fine-tuning (epochs, schedule, QAT):

* planned: `tfjoint.plan_for_budget` -> `prepare(plan=...)`;
* uniform: the smallest single `channel_sparsity` (in 1/32 steps) whose file,
  built untrained and measured in TFLM (`plan.cost.measure_plan`), meets the
  budgets.

A level that no plan can reach (the arena's TFLM tail and planning memory do
not shrink with channels) is refused by the planner before training; the row
records the refusal and the smallest reachable figure.

Both files are exported with `budget=` and validated in TensorFlow Lite Micro;
the table shows accuracy in TFLM, whether every budget was met (measured on
the file, the arena in TFLM), and the planning time beyond the sensitivity
scan. MobileNetV2 trains on random data: budgets and time only.
"""

import json
import os
import sys
import tempfile
import time

import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tf_keras as keras  # noqa: E402
from common import TASKS, check_task_names, mean_spread, write_text  # noqa: E402

import tfjoint  # noqa: E402
from tfjoint.plan.cost import build_cost_model, measure_plan  # noqa: E402
from tfjoint.plan.for_budget import channel_groups_of  # noqa: E402

FLAGS = flags.FLAGS
LEVELS = {"50%": dict(flash=0.5, arena=0.5, macs=0.4), "30%": dict(flash=0.3, arena=0.3, macs=0.4),
          "30% (arena 40%)": dict(flash=0.3, arena=0.4, macs=0.4)}
flags.DEFINE_string("out", "benchmarks/results", "Directory for budget.json and budget.md.")
flags.DEFINE_list("models", ["digits", "residual", "mobilenet"], "Which models to run.")
flags.DEFINE_integer("seeds", 3, "Seeds for models whose accuracy is measured.", lower_bound=1)
flags.DEFINE_integer("epochs", 10, "Fine-tuning epochs (MobileNetV2: at most 2).", lower_bound=1)
flags.DEFINE_list("levels", list(LEVELS), "Budget levels to run (of: " + ", ".join(LEVELS) + ").")
flags.DEFINE_boolean("tiny", False, "Smoke-test sizes.")
flags.DEFINE_boolean("kws", False, "Run the keyword-spotting DS-CNN at 20 KB flash / 12 KB RAM through the command "
                     "(--target=micro --flash_kb=20 --ram_kb=12 --epochs=E), against the smallest uniform channel "
                     "sparsity that meets the same budgets.")
flags.DEFINE_boolean("kws_width_bound", False, "With --kws: instead of the command, train the DS-CNN at the width "
                     "the smallest uniform plan meeting 20 KB / 12 KB keeps, from scratch in float, for the float "
                     "model's epochs plus --epochs and for twice that: what that width reaches by itself.")
flags.DEFINE_float("kws_noise", 0.68, "Extra noise on the keyword features (a float DS-CNN keeps about 86%).")

_NO_TOLERANCE = dict(max_accuracy_drop=1.0, min_agreement=0.0, min_sqnr_db=-1e9, max_mse_increase=1e9)


def budget_for(full: dict, level: dict) -> tfjoint.Budget:
    return tfjoint.Budget(flash_bytes=int(full["flash_bytes"] * level["flash"]),
                          arena_bytes=int(full["arena_bytes"] * level["arena"]), macs=int(full["macs"] * level["macs"]))


def smallest_uniform(model, cost, budget: tfjoint.Budget, margin: float = 0.02) -> float | None:
    """The smallest channel_sparsity (1/32 steps) whose file, measured in TFLM, meets `budget`.

    The cost model proposes (with the planner's margin); the built file decides.
    """
    for step in range(0, 32):
        fraction = step / 32
        figures = cost.predict({group: fraction for group in cost.groups})
        if all(figures[name] <= getattr(budget, name) * (1 - margin) for name in budget.given):
            if not budget.misses(measure_plan(model, {group: fraction for group in cost.groups})):
                return fraction
    return None


def train_and_export(task, prepare_kwargs, epochs, budget, path):
    data = task.data
    steps = epochs * int(np.ceil(len(data["x_train"]) / task.batch))
    joint = tfjoint.prepare(task.model, end_step=max(1, steps // 2), frequency=max(1, steps // 32),
                            check_conversion=False, **prepare_kwargs)
    joint.compile(keras.optimizers.Adam(1e-3), task.loss, metrics=["accuracy"])
    started = time.perf_counter()
    joint.fit(data["x_train"], data["y_train"], batch_size=task.batch, epochs=epochs, verbose=0)
    fit_seconds = time.perf_counter() - started
    try:
        report = tfjoint.export_tflite(tfjoint.strip(joint), path, budget=budget, runtimes=("tflm",),
                                       validation_data=(data["x_val"], data["y_val"]), float_model=task.model,
                                       explain_layers=False, quantization="qat", **_NO_TOLERANCE)
    except tfjoint.ValidationError as error:  # a missed budget: recorded, not hidden
        report = error.report
    return report, fit_seconds


def run_model(name, seed, epochs, tiny, out):
    task = TASKS[name](seed, tiny)
    cost = build_cost_model(task.model, channel_groups_of(task.model), measure_floor=True)  # once per model
    full = cost.full
    rows = []
    for level_name in FLAGS.levels:
        level = LEVELS[level_name]
        budget = budget_for(full, level)
        started = time.perf_counter()
        try:
            plan = tfjoint.plan_for_budget(task.model, **budget.to_dict(),
                                           validation_data=(task.data["x_val"], task.data["y_val"]))
        except tfjoint.ConfigError as error:  # unreachable: refused before training, as a user would see it
            rows.append({"model": name, "seed": seed, "level": level_name, "system": "planned", "budget":
                         budget.to_dict(), "full": full, "refused": str(error), "measured": {}, "met": False,
                         "tflm_accuracy": None, "plan_seconds": time.perf_counter() - started,
                         "plan_seconds_beyond_scan": None})
            print(json.dumps({k: rows[-1][k] for k in ("model", "seed", "level", "refused")}), flush=True)
            continue
        plan_seconds = time.perf_counter() - started
        scan = plan.predicted["stage_seconds"].get("sensitivity scan", 0.0)
        uniform = smallest_uniform(task.model, cost, budget)
        systems = {"planned": dict(plan=plan)}
        if uniform is not None:
            systems[f"uniform {uniform:.3f}"] = dict(target_sparsity=0.0, channel_sparsity=uniform)
        for system, kwargs in systems.items():
            path = os.path.join(out, f"budget_{name}_{seed}_{''.join(c for c in level_name if c.isalnum())}_"
                                      f"{system.split()[0]}.tflite")
            report, fit_seconds = train_and_export(task, kwargs, epochs, budget, path)
            rows.append({
                "model": name, "seed": seed, "level": level_name, "system": system,
                "budget": budget.to_dict(), "full": full, "refused": None,
                "measured": {k: v["measured"] for k, v in report.budget.items()},
                "met": not any(f.startswith("budget") for f in report.failures),
                "tflm_accuracy": report.per_runtime.get("tflm", {}).get("int8_accuracy"),
                "float_accuracy": report.float_accuracy, "fit_seconds": fit_seconds,
                "plan_seconds": plan_seconds if system == "planned" else None,
                "plan_seconds_beyond_scan": plan_seconds - scan if system == "planned" else None,
                "channel_fractions": dict(plan.channel_fractions) if system == "planned" else uniform,
            })
            print(json.dumps({k: rows[-1][k] for k in ("model", "seed", "level", "system", "met", "tflm_accuracy",
                                                       "measured")}), flush=True)
    return rows


def markdown(rows, measured_accuracy) -> str:
    lines = ["| model | budgets | system | TFLM accuracy | every budget met in TFLM | arena / flash / MACs (% of "
             "the budget) | planning s (beyond the scan) |", "|---|---|---|---|---|---|---|"]
    keys = sorted({(r["model"], r["level"], r["system"].split()[0]) for r in rows},
                  key=lambda k: (k[0], k[1], k[2] != "planned"))
    for model, level, system in keys:
        group = [r for r in rows if (r["model"], r["level"], r["system"].split()[0]) == (model, level, system)]
        if all(r["refused"] for r in group):
            reason = group[0]["refused"].split(": ", 1)[-1].split(". Raise")[0]
            lines.append(f"| {model} | {level} | {system} | refused before training: {reason} | | | |")
            continue
        group = [r for r in group if not r["refused"]]
        mean, spread = mean_spread([r["tflm_accuracy"] for r in group])
        accuracy = f"{100 * mean:.2f} ± {100 * spread:.2f}" if model in measured_accuracy and mean else "n/a"
        used = " / ".join(f"{100 * np.mean([r['measured'].get(k, np.nan) / r['budget'][k] for r in group]):.0f}%"
                          for k in ("arena_bytes", "flash_bytes", "macs"))
        plan = [r["plan_seconds"] for r in group if r["plan_seconds"] is not None]
        beyond = [r["plan_seconds_beyond_scan"] for r in group if r["plan_seconds_beyond_scan"] is not None]
        planning = f"{np.mean(plan):.1f} ({np.mean(beyond):.1f})" if plan else ""
        label = group[0]["system"] if system == "uniform" and len({r["system"] for r in group}) == 1 else system
        lines.append(f"| {model} | {level} | {label} | {accuracy} | {sum(r['met'] for r in group)}/{len(group)} | "
                     f"{used} | {planning} |")
    return "\n".join(lines)


# --- The keyword-spotting DS-CNN at 20 KB flash / 12 KB RAM, through the command with its defaults -------------

KWS_FLAGS = ["--target=micro", "--flash_kb=20", "--ram_kb=12"]


def _kws_data(n: int, seed: int):
    """what_you_keep's keyword features, under more noise: a float DS-CNN then keeps about 86%."""
    import what_you_keep

    x, y = what_you_keep.keyword_features(n, seed)
    rng = np.random.default_rng(seed + 7)
    return (x + rng.normal(0, FLAGS.kws_noise, x.shape)).astype(np.float32), y


def _command(args: list[str], out: str) -> dict:
    import subprocess

    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "tfjoint", f"--out={out}", *args], capture_output=True, text=True,
                            env=dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(__file__))))
    path = os.path.join(out, "report.json")
    report = json.load(open(path)) if os.path.exists(path) else {}
    config = os.path.join(out, "run_config.json")
    resolved = json.load(open(config)).get("resolved", {}) if os.path.exists(config) else {}
    return {"exit": result.returncode, "seconds": time.perf_counter() - started, "report": report,
            "budget_plan": resolved.get("budget_plan") or {}, "stderr": result.stderr[-1500:] if not report else ""}


def _smallest_uniform_channels(model_path: str) -> float:
    """The smallest channel_sparsity (1/16 steps) whose untrained file meets 20 KB flash and 12 KB RAM in TFLM."""
    model = tfjoint.load_model(model_path)
    budget = tfjoint.Budget(flash_bytes=20 * 1024, ram_bytes=12 * 1024)
    groups = channel_groups_of(model).prunable_groups
    for count in range(1, 16):
        fraction = count / 16
        measured = measure_plan(model, {group: fraction for group in groups})
        if not budget.misses(measured):
            return fraction
    return 15 / 16


def run_kws(seed: int, epochs: int, tiny: bool, out: str) -> list[dict]:
    import what_you_keep

    work = tempfile.mkdtemp(prefix=f"tfjoint_kws_{seed}_")
    n_train, n_val = (600, 200) if tiny else (3000, 600)
    x, y = _kws_data(n_train, seed)
    x_val, y_val = _kws_data(n_val, 1000 + seed)
    model = what_you_keep.ds_cnn(seed)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=2 if tiny else 12, batch_size=32, verbose=0)
    float_accuracy = float(model.evaluate(x_val, y_val, verbose=0)[1])
    model_path, data_path = os.path.join(work, "ds_cnn.keras"), os.path.join(work, "kws.npz")
    model.save(model_path)
    np.savez(data_path, x_train=x, y_train=y, x_val=x_val, y_val=y_val, x_calib=x[:300])
    common = [f"--model={model_path}", f"--data={data_path}", f"--seed={seed}", f"--epochs={epochs}"]
    rows = []
    planned = _command(common + KWS_FLAGS, os.path.join(work, "planned"))
    uniform_fraction = _smallest_uniform_channels(model_path)
    uniform = _command(common + ["--target=micro", f"--channel_sparsity={uniform_fraction}"],
                       os.path.join(work, "uniform"))
    distilled = _command(common + KWS_FLAGS + ["--distill"], os.path.join(work, "planned_distill"))
    for system, run in (("planned", planned), ("uniform", uniform), ("planned_distill", distilled)):
        report = run["report"]
        memory = report.get("memory", {})
        plan = run["budget_plan"] if system.startswith("planned") else {}
        rows.append({"model": "kws_ds_cnn", "seed": seed, "system": system, "float_accuracy": float_accuracy,
                     "tflm_accuracy": (report.get("per_runtime", {}).get("tflm") or {}).get("int8_accuracy"),
                     "flash_bytes": memory.get("flash_bytes"), "ram_bytes": memory.get("ram_bytes"),
                     "met": (memory.get("flash_bytes") or 1e9) <= 20 * 1024 and (memory.get("ram_bytes") or 1e9)
                     <= 12 * 1024, "exit": run["exit"], "seconds": run["seconds"], "error": run["stderr"],
                     "channel_fractions": plan.get("channel_fractions") if plan else uniform_fraction,
                     "strategy": (plan.get("predicted") or {}).get("strategy") if plan else None,
                     "quantization": report.get("quantization")})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def kws_markdown(rows) -> str:
    lines = ["| system | float % | TFLM % | vs float (points) | flash KB | RAM KB | met 20 KB / 12 KB | "
             "plan (seed 0) |",
             "|---|---|---|---|---|---|---|---|"]
    for system in ("planned", "uniform", "planned_distill"):
        group = [r for r in rows if r["system"] == system]
        if not group:
            continue
        first = group[0]
        plan = first["channel_fractions"]
        described = (", ".join(f"{g} -{f:.0%}" for g, f in sorted(plan.items(), key=lambda kv: -kv[1]))
                     if isinstance(plan, dict) else f"every group -{plan:.0%}")
        if first.get("strategy"):
            described += f" ({first['strategy']['strategy']})"
        paired = [r["tflm_accuracy"] - r["float_accuracy"] for r in group if r["tflm_accuracy"] is not None]
        lines.append(
            f"| {system} | {_mean([r['float_accuracy'] for r in group], 100)} | "
            f"{_mean([r['tflm_accuracy'] for r in group], 100)} | {_mean(paired, 100)} | "
            f"{_mean([r['flash_bytes'] for r in group], 1 / 1024)} | {_mean([r['ram_bytes'] for r in group], 1 / 1024)}"
            f" | {sum(bool(r['met']) for r in group)}/{len(group)} | {described} |")
    return "\n".join(lines)


def run_kws_width_bound(seed: int, epochs: int, tiny: bool) -> list[dict]:
    """The float accuracy of a DS-CNN only as wide as the RAM budget allows, trained from scratch."""
    import what_you_keep

    n_train, n_val = (600, 200) if tiny else (3000, 600)
    float_epochs = 2 if tiny else 12
    x, y = _kws_data(n_train, seed)
    x_val, y_val = _kws_data(n_val, 1000 + seed)
    rows = []
    model = what_you_keep.ds_cnn(seed)
    path = os.path.join(tempfile.mkdtemp(prefix=f"tfjoint_kws_width_{seed}_"), "ds_cnn.keras")
    model.save(path)
    fraction = _smallest_uniform_channels(path)
    width = int(round(64 * (1 - fraction)))
    for kept, total in ((64, float_epochs), (width, float_epochs + epochs), (width, 2 * (float_epochs + epochs))):
        model = what_you_keep.ds_cnn(seed, width=kept)
        model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        model.fit(x, y, epochs=total, batch_size=32, verbose=0)
        rows.append({"seed": seed, "width": kept, "epochs": total, "channel_sparsity": fraction,
                     "float_accuracy": float(model.evaluate(x_val, y_val, verbose=0)[1])})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def kws_width_markdown(rows) -> str:
    lines = ["| DS-CNN | channels | epochs | float % | vs the 64-channel float model (points) |",
             "|---|---|---|---|---|"]
    reference = {r["seed"]: r["float_accuracy"] for r in rows if r["width"] == 64}
    for width, epochs in dict.fromkeys((r["width"], r["epochs"]) for r in rows):
        group = [r for r in rows if (r["width"], r["epochs"]) == (width, epochs)]
        paired = [r["float_accuracy"] - reference[r["seed"]] for r in group]
        removed = group[0]["channel_sparsity"]
        which = "the float model" if width == 64 else f"as wide as the budget allows (-{removed:.0%})"
        lines.append(f"| {which} | {width} | {epochs} | {_mean([r['float_accuracy'] for r in group], 100)} | "
                     f"{_mean(paired, 100)} |")
    return "\n".join(lines)


def _mean(values, scale):
    mean, spread = mean_spread([None if v is None else v * scale for v in values])
    return "n/a" if mean is None else f"{mean:.1f} ± {spread:.1f}"


def main_kws_width_bound():
    os.makedirs(FLAGS.out, exist_ok=True)
    started, rows = time.perf_counter(), []
    for seed in range(1 if FLAGS.tiny else FLAGS.seeds):
        rows += run_kws_width_bound(seed, 1 if FLAGS.tiny else FLAGS.epochs, FLAGS.tiny)
    command = "python benchmarks/budget.py " + " ".join(sys.argv[1:])
    seconds = time.perf_counter() - started
    write_text(os.path.join(FLAGS.out, "budget_kws_width.json"),
               json.dumps({"command": command, "seconds": seconds, "rows": rows}, indent=1) + "\n")
    table = kws_width_markdown(rows)
    write_text(os.path.join(FLAGS.out, "budget_kws_width.md"), f"`{command}` ({seconds:.0f} s)\n\n{table}\n")
    print(table)


def main_kws():
    if FLAGS.kws_width_bound:
        return main_kws_width_bound()
    os.makedirs(FLAGS.out, exist_ok=True)
    started, rows = time.perf_counter(), []
    for seed in range(1 if FLAGS.tiny else FLAGS.seeds):
        rows += run_kws(seed, 1 if FLAGS.tiny else FLAGS.epochs, FLAGS.tiny, FLAGS.out)
    command = "python benchmarks/budget.py " + " ".join(sys.argv[1:])
    with open(os.path.join(FLAGS.out, "budget_kws.json"), "w") as handle:
        json.dump({"command": command, "seconds": time.perf_counter() - started, "rows": rows}, handle, indent=1)
    table = kws_markdown(rows)
    write_text(os.path.join(FLAGS.out, "budget_kws.md"), f"`{command}` ({time.perf_counter() - started:.0f} s)\n\n"
               + table + "\n")
    print(table)


def main(argv):
    del argv
    if FLAGS.kws:
        return main_kws()
    check_task_names(FLAGS.models)
    unknown = sorted(set(FLAGS.levels) - set(LEVELS))
    if unknown:
        raise app.UsageError(f"--levels: unknown {unknown}; choose from {list(LEVELS)}.")
    os.makedirs(FLAGS.out, exist_ok=True)
    started = time.perf_counter()
    rows = []
    for name in FLAGS.models:
        seeds = 1 if name == "mobilenet" else FLAGS.seeds
        epochs = min(FLAGS.epochs, 2) if name == "mobilenet" else FLAGS.epochs
        for seed in range(seeds):
            rows += run_model(name, seed, 1 if FLAGS.tiny else epochs, FLAGS.tiny, FLAGS.out)
    measured = {name for name in FLAGS.models if name != "mobilenet"}
    table = markdown(rows, measured)
    command = "python benchmarks/budget.py " + " ".join(sys.argv[1:])
    with open(os.path.join(FLAGS.out, "budget.json"), "w") as handle:
        json.dump({"command": command, "seconds": time.perf_counter() - started, "rows": rows}, handle, indent=1)
    write_text(os.path.join(FLAGS.out, "budget.md"), f"`{command}` ({time.perf_counter() - started:.0f} s)\n\n"
               + table + "\n")
    for name in os.listdir(FLAGS.out):
        if name.startswith("budget_") and name.endswith(".tflite"):
            os.remove(os.path.join(FLAGS.out, name))
    print(table)


if __name__ == "__main__":
    app.run(main)
