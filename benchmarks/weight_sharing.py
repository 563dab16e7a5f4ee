"""Weight sharing for a microcontroller: clusters trained in tfjoint's one fit, shipped with TFLM's LUT compression.

    python benchmarks/weight_sharing.py --out=benchmarks/results [--seeds=0,1,2] [--tasks=digits,ds_cnn] [--tiny]

Per task and seed, from one float model trained here:

* plain:       tfjoint, 80% sparsity, no clusters: the int8 file TFLM stores dense (the reference);
* plain reduced: the same weights with `compression="tflm"` (TFLM's flatbuffer reduction: one zero point per
  weight tensor, no names; what --target=micro writes): the second reference. The LUT files are reduced too;
* tfjoint 16 / tfjoint 4: the same one fit with `clusters=16` / `clusters=4`, exported with
  `compression="lut"` (TFLM's LUT compression: 4-bit / 2-bit indices); the channels of a kernel share one table
  where a table each would not pay (`JointSchedule(shared_tables=None)`, the default);
* with --equal_total_epochs (weight_sharing_equal_total.*): plain, TF-MOT's chains, and tfjoint 16 / 4 given 3x
  the epochs in its one fit: as many as TF-MOT's three fits together (accuracy and wall both compared at that);
* with --shared_tables (weight_sharing_shared.*): plain, and tfjoint 16 / 4 with `shared_tables=True`: every
  convolution's channels share one table;
* TF-MOT 16 / TF-MOT 4: TF-MOT's three fits on tf_keras (prune_low_magnitude -> strip -> cluster_weights with
  preserve_sparsity -> strip -> PCQAT, `Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=True)`), each fit
  as many epochs as tfjoint's one, its QAT model put through the same export and LUT compression.

Every file is validated in TensorFlow Lite Micro (the accuracy is TFLM's on the validation split); the flash is
the file's size, the arena and the alternate decompression memory are TFLM's. Wall is the training time (fits)
of each method.

With --budget (weight_sharing_budget.*): at a flash budget of 30% of the plain file, per task and seed,

* channels plan: `plan_for_budget(flash_bytes=...)`, channels only (8-bit weights);
* bits plan: `plan_for_budget(flash_bytes=..., weight_bits=(8, 4, 2))`: channels or 2-/4-bit kernels per layer,
  whichever costs less loss, exported with `compression="lut"`;

each trained with `prepare(plan=plan)` for the same epochs and checked against the budget in TFLM.
"""

import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import tf_keras as keras  # noqa: E402
from absl import app, flags  # noqa: E402
from common import mean_text  # noqa: E402

import tfjoint  # noqa: E402  (selects tf_keras before TensorFlow loads)
from tfjoint.app import digits  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("out", "benchmarks/results", "Directory for the results (.json and .md).")
flags.DEFINE_string("seeds", "0,1,2", "Comma-separated seeds.")
flags.DEFINE_string("tasks", "digits,ds_cnn", "Comma-separated tasks: digits, ds_cnn.")
flags.DEFINE_boolean("tiny", False, "A smoke run: few samples and epochs.")
flags.DEFINE_string("render", None, "Print the table of a results .json and exit.")
flags.DEFINE_boolean("longer", False, "Only plain, TF-MOT's chains and tfjoint at 1.5x the epochs "
                                      "(weight_sharing_longer.*).")
flags.DEFINE_boolean("equal_total_epochs", False, "Only plain, TF-MOT's chains and tfjoint at 3x the epochs: as many "
                                                  "as TF-MOT's three fits together (weight_sharing_equal_total.*).")
flags.DEFINE_boolean("shared_tables", False, "Only plain and tfjoint with every convolution's channels sharing one "
                                             "table (weight_sharing_shared.*).")
flags.DEFINE_boolean("budget", False, "A flash budget of 30% of the plain file: channels-only plan against the plan "
                                      "with bits (weight_sharing_budget.*).")
flags.DEFINE_boolean("ram_curve", False, "A 16-cluster model exported with LUT under RAM budgets of 1.5x to 16x the "
                                         "plain arena (weight_sharing_ram_curve.*).")

SPARSITY = 0.8
RAM_FACTOR = 1.5  # the RAM budget of a compressed file: this times the plain file's arena
METHODS = ("plain", "tfjoint 16", "tfjoint 4", "TF-MOT 16", "TF-MOT 4")
# With --longer: tfjoint's one fit at 1.5x the epochs (half the epochs of TF-MOT's three fits together).
LONGER = ("tfjoint 16 x1.5", "tfjoint 4 x1.5")
# With --equal_total_epochs: tfjoint's one fit as many epochs as TF-MOT's three fits together (the issue's
# "equal total epochs"; its wall is then compared with theirs at that).
EQUAL_TOTAL = ("tfjoint 16 x3", "tfjoint 4 x3")
# With --shared_tables: every convolution's channels share one table.
SHARED = ("tfjoint 16 shared", "tfjoint 4 shared")


def _digits(seed: int, tiny: bool):
    data = digits.load_digits(seed=seed)
    model = digits.train_float_model(data, epochs=3 if tiny else 15, seed=seed)
    return model, data, (2 if tiny else 8)


def _ds_cnn(seed: int, tiny: bool):
    from what_you_keep import ds_cnn, keyword_features

    x, y = keyword_features(300 if tiny else 3000, seed)
    x_val, y_val = keyword_features(200 if tiny else 800, seed + 100)
    model = ds_cnn(seed)
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=2 if tiny else 12, batch_size=64, verbose=0)
    data = {"x_train": x, "y_train": y, "x_val": x_val, "y_val": y_val, "x_calib": x[:200]}
    return model, data, (1 if tiny else 6)


TASKS = {"digits": _digits, "ds_cnn": _ds_cnn}


def _clone(model):
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def _steps(data, epochs, batch=32):
    return epochs * -(-len(data["x_train"]) // batch)


def _export(model, data, path, compression, ram_limit=None):
    budget = tfjoint.Budget(ram_bytes=ram_limit) if ram_limit else None
    report = tfjoint.export_tflite(model, path, validation_data=(data["x_val"], data["y_val"]),
                                   options=tfjoint.ExportOptions(quantization="qat", runtimes=("tflm",),
                                                                 compression=compression, budget=budget))
    split = report.compression.get("split", [])
    return {"flash_bytes": report.size_bytes, "tflm_accuracy": report.per_runtime["tflm"]["int8_accuracy"],
            "arena_bytes": report.memory.get("tflm_arena_bytes"), "ram_bytes": report.memory.get("ram_bytes"),
            "ram_limit": ram_limit, "split_tensors": sum(entry["groups"] > 1 for entry in split),
            "left_uncompressed": sum(entry["groups"] == 1 for entry in split),
            "alt_bytes": report.compression.get("alt_decompression_bytes", 0),
            "compressed_tensors": len(report.compression.get("tensors", [])),
            "max_values": max([t["values"] for t in report.compression.get("tensors", [])], default=None)}


def _tfjoint(model, data, epochs, clusters, path, ram_limit=None, shared_tables=None):
    started = time.perf_counter()
    joint = tfjoint.prepare(_clone(model),
                            tfjoint.JointSchedule(SPARSITY, end_step=_steps(data, epochs) // 2, frequency=10,
                                                  clusters=clusters, shared_tables=shared_tables),
                            check=False)
    joint.compile(keras.optimizers.Adam(5e-4), "sparse_categorical_crossentropy")
    joint.fit(data["x_train"], data["y_train"], epochs=epochs, batch_size=32, verbose=0)
    wall = time.perf_counter() - started
    stripped = tfjoint.strip(joint)
    row = _export(stripped, data, path, "lut" if clusters else "none", ram_limit if clusters else None)
    if not clusters:  # the same weights reduced for TFLM (what --target=micro writes): the second reference
        reduced = _export(stripped, data, path.replace(".tflite", "_reduced.tflite"), "tflm")
        row["reduced"] = dict(reduced, wall_s=wall)
    return dict(row, wall_s=wall)


def _tfmot_chain(model, data, epochs, clusters, path, ram_limit=None):
    import tensorflow_model_optimization as tfmot

    started = time.perf_counter()
    end = _steps(data, epochs) // 2
    pruned = tfmot.sparsity.keras.prune_low_magnitude(_clone(model), pruning_schedule=(
        tfmot.sparsity.keras.PolynomialDecay(0.0, SPARSITY, 0, end, frequency=10)))
    pruned.compile(keras.optimizers.Adam(5e-4), "sparse_categorical_crossentropy")
    pruned.fit(data["x_train"], data["y_train"], epochs=epochs, batch_size=32, verbose=0,
               callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    stripped = tfmot.sparsity.keras.strip_pruning(pruned)
    clustered = tfmot.clustering.keras.cluster_weights(
        stripped, number_of_clusters=clusters, preserve_sparsity=True,
        cluster_centroids_init=tfmot.clustering.keras.CentroidInitialization.KMEANS_PLUS_PLUS)
    clustered.compile(keras.optimizers.Adam(5e-4), "sparse_categorical_crossentropy")
    clustered.fit(data["x_train"], data["y_train"], epochs=epochs, batch_size=32, verbose=0)
    stripped = tfmot.clustering.keras.strip_clustering(clustered)
    scheme = tfmot.experimental.combine.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=True)
    pcqat = tfmot.quantization.keras.quantize_apply(tfmot.quantization.keras.quantize_annotate_model(stripped),
                                                    scheme)
    pcqat.compile(keras.optimizers.Adam(5e-4), "sparse_categorical_crossentropy")
    pcqat.fit(data["x_train"], data["y_train"], epochs=epochs, batch_size=32, verbose=0)
    wall = time.perf_counter() - started
    return dict(_export(pcqat, data, path, "lut", ram_limit), wall_s=wall)


BUDGET_METHODS = ("plain", "channels plan", "bits plan")
BUDGET_FRACTION = 0.3


def _planned(model, data, epochs, flash_bytes, weight_bits, path):
    started = time.perf_counter()
    val = (data["x_val"], data["y_val"])
    plan = tfjoint.plan_for_budget(_clone(model), flash_bytes=flash_bytes, validation_data=val,
                                   weight_bits=weight_bits)
    joint = tfjoint.prepare(_clone(model), plan=plan, end_step=_steps(data, epochs) // 2, frequency=10,
                            check_conversion=False)
    joint.compile(keras.optimizers.Adam(5e-4), "sparse_categorical_crossentropy")
    joint.fit(data["x_train"], data["y_train"], epochs=epochs, batch_size=32, verbose=0)
    wall = time.perf_counter() - started
    report = tfjoint.export_tflite(tfjoint.strip(joint), path, validation_data=val,
                                   options=tfjoint.ExportOptions(quantization="qat", runtimes=("tflm",),
                                                                 budget=plan.budget,
                                                                 compression="lut" if plan.clusters else "none"))
    row = {"flash_bytes": report.size_bytes, "tflm_accuracy": report.per_runtime["tflm"]["int8_accuracy"],
           "arena_bytes": report.memory.get("tflm_arena_bytes"),
           "alt_bytes": report.compression.get("alt_decompression_bytes", 0), "budget_bytes": flash_bytes,
           "met": report.budget["flash_bytes"]["measured"] <= flash_bytes,
           "channel_fractions": dict(plan.channel_fractions), "clusters": dict(plan.clusters),
           "predicted_accuracy": plan.predicted.get("accuracy_before_fine_tuning")}
    return dict(row, wall_s=wall)


def run_budget(task: str, seed: int, tiny: bool, work: str) -> list[dict]:
    """The plain file, then the channels-only and the bits plan at BUDGET_FRACTION of its flash."""
    model, data, epochs = TASKS[task](seed, tiny)
    rows = []
    plain = None
    for method in BUDGET_METHODS:
        path = os.path.join(work, f"{task}_{seed}_{method.replace(' ', '_')}.tflite")
        try:
            if method == "plain":
                row = _tfjoint(model, data, epochs, None, path)
                plain = row["flash_bytes"]
            else:
                budget = int(BUDGET_FRACTION * plain)
                row = _planned(model, data, epochs, budget, (8, 4, 2) if method == "bits plan" else (8,), path)
        except Exception as error:  # a method that fails is a row saying so, not a lost run
            row = {"error": f"{type(error).__name__}: {str(error).splitlines()[0][:300] if str(error) else ''}"}
        rows.append(dict(row, task=task, seed=seed, method=method, epochs=epochs))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def _fit_epochs(method: str, epochs: int) -> int:
    """The epochs a method trains in all: TF-MOT's three fits of `epochs` each; "tfjoint 16 x3" 3x `epochs`."""
    if method.startswith("TF-MOT"):
        return 3 * epochs
    return int(round(epochs * float(method.rsplit(" x", 1)[1]))) if " x" in method else epochs


def run(task: str, seed: int, tiny: bool, work: str, methods=METHODS) -> list[dict]:
    model, data, epochs = TASKS[task](seed, tiny)
    rows = []
    ram_limit = None  # the goal's: compressed files get a RAM budget of RAM_FACTOR x the plain file's arena
    for method in methods:
        path = os.path.join(work, f"{task}_{seed}_{method.replace(' ', '_')}.tflite")
        clusters = int(method.split()[1]) if " " in method else None
        try:
            if method.startswith("TF-MOT"):
                row = _tfmot_chain(model, data, epochs, clusters, path, ram_limit)
            else:
                row = _tfjoint(model, data, _fit_epochs(method, epochs), clusters, path, ram_limit,
                               shared_tables=True if method.endswith("shared") else None)
                if method == "plain" and row.get("arena_bytes"):
                    ram_limit = int(RAM_FACTOR * row["arena_bytes"])
        except Exception as error:  # a method that fails is a row saying so, not a lost run
            row = {"error": f"{type(error).__name__}: {str(error).splitlines()[0][:300] if str(error) else ''}"}
        reduced = row.pop("reduced", None)
        rows.append(dict(row, task=task, seed=seed, method=method, epochs=epochs,
                         fit_epochs=_fit_epochs(method, epochs)))
        print(json.dumps(rows[-1]), flush=True)
        if reduced is not None:
            rows.append(dict(reduced, task=task, seed=seed, method="plain reduced", epochs=epochs))
            print(json.dumps(rows[-1]), flush=True)
    return rows


def _groups(rows: list[dict], columns: int):
    """(task, method, successful rows, seed -> successful row of a method of the task) per task and method; a method
    that failed on every seed is a table line saying so instead."""
    by: dict = {}
    for row in rows:
        by.setdefault((row["task"], row["method"]), []).append(row)
    for (task, method), group in by.items():
        ok = [r for r in group if "error" not in r]
        if not ok:
            yield f"| {task} | {method} | failed: {group[0]['error'][:120]} |" + " |" * (columns - 3)
            continue

        def by_seed(other: str, task=task) -> dict:
            return {r["seed"]: r for r in rows if r["task"] == task and r["method"] == other and "error" not in r}

        yield task, method, ok, by_seed


def table(rows: list[dict]) -> str:
    lines = ["| task | method | TFLM accuracy | flash KB | flash / plain | flash / plain reduced | arena KB | "
             "alt. memory KB | RAM KB (arena + alt.) | RAM / plain arena | tensors split / left whole | fit wall s | "
             "wall / TF-MOT |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for group in _groups(rows, 13):
        if isinstance(group, str):
            lines.append(group)
            continue
        task, method, ok, by_seed = group
        plain = by_seed("plain")
        clusters = method.split()[1] if " " in method else None
        tfmot = by_seed(f"TF-MOT {clusters}")
        ratio = [r["flash_bytes"] / plain[r["seed"]]["flash_bytes"] for r in ok if r["seed"] in plain]
        reduced = by_seed("plain reduced")
        to_reduced = [r["flash_bytes"] / reduced[r["seed"]]["flash_bytes"] for r in ok if r["seed"] in reduced]
        wall = [r["wall_s"] / tfmot[r["seed"]]["wall_s"] for r in ok if r["seed"] in tfmot]
        ram = [r["ram_bytes"] / plain[r["seed"]]["arena_bytes"] for r in ok
               if r.get("ram_bytes") and r["seed"] in plain and plain[r["seed"]].get("arena_bytes")]
        lines.append(
            f"| {task} | {method} | {mean_text([100 * r['tflm_accuracy'] for r in ok], '.2f')} % | "
            f"{mean_text([r['flash_bytes'] / 1024 for r in ok], '.1f')} | {mean_text(ratio, '.3f')} | "
            f"{mean_text(to_reduced, '.3f')} | "
            f"{mean_text([r['arena_bytes'] / 1024 for r in ok if r['arena_bytes']], '.1f')} | "
            f"{mean_text([r['alt_bytes'] / 1024 for r in ok], '.1f')} | "
            f"{mean_text([r['ram_bytes'] / 1024 for r in ok if r.get('ram_bytes')], '.1f')} | "
            f"{mean_text(ram, '.2f')} | {mean_text([r.get('split_tensors', 0) for r in ok], '.0f')} / "
            f"{mean_text([r.get('left_uncompressed', 0) for r in ok], '.0f')} | "
            f"{mean_text([r['wall_s'] for r in ok], '.0f')} | "
            f"{mean_text(wall, '.2f') if method.startswith('tfjoint') and clusters else ''} |")
    return "\n".join(lines)


def budget_table(rows: list[dict]) -> str:
    lines = ["| task | method | TFLM accuracy | vs channels plan (points) | flash KB | budget KB | met | "
             "alt. memory KB | plan (seed 0) |", "|---|---|---|---|---|---|---|---|---|"]
    for group in _groups(rows, 9):
        if isinstance(group, str):
            lines.append(group)
            continue
        task, method, ok, by_seed = group
        channels = by_seed("channels plan")
        gain = [100 * (r["tflm_accuracy"] - channels[r["seed"]]["tflm_accuracy"]) for r in ok if r["seed"] in channels]
        first = ok[0]
        plan = ""
        if "channel_fractions" in first:
            plan = ", ".join([f"{g} -{f:.0%} ch" for g, f in first["channel_fractions"].items()]
                             + [f"{n} {c.bit_length() - 1}-bit" for n, c in first["clusters"].items()])
        met = f"{sum(bool(r.get('met')) for r in ok)}/{len(ok)}" if "budget_bytes" in first else ""
        lines.append(
            f"| {task} | {method} | {mean_text([100 * r['tflm_accuracy'] for r in ok], '.2f')} % | "
            f"{mean_text(gain, '.2f') if method == 'bits plan' else ''} | "
            f"{mean_text([r['flash_bytes'] / 1024 for r in ok], '.1f')} | "
            f"{mean_text([r['budget_bytes'] / 1024 for r in ok if 'budget_bytes' in r], '.1f')} | "
            f"{met} | "
            f"{mean_text([r['alt_bytes'] / 1024 for r in ok], '.1f')} | {plan} |")
    return "\n".join(lines)


def render(path: str) -> str:
    """The table of a results file written before (`python benchmarks/weight_sharing.py --render=<json>`)."""
    with open(path) as handle:
        rows = json.load(handle)["rows"]
    return budget_table(rows) if any(r["method"] == "bits plan" for r in rows) else table(rows)


RAM_CURVE_FACTORS = (1.5, 2.0, 3.0, 4.0, 8.0, 16.0)


def run_ram_curve(task: str, seed: int, tiny: bool, work: str) -> list[dict]:
    """One model trained with 16 clusters, exported with LUT under RAM budgets of RAM_CURVE_FACTORS x the plain
    file's arena and with none: what the export split or left whole, and the flash and RAM it measured."""
    model, data, epochs = TASKS[task](seed, tiny)
    steps = _steps(data, epochs)
    joint = tfjoint.prepare(_clone(model), tfjoint.JointSchedule(SPARSITY, end_step=steps // 2, frequency=10,
                                                                 clusters=16), check=False)
    joint.compile(keras.optimizers.Adam(5e-4), "sparse_categorical_crossentropy")
    joint.fit(data["x_train"], data["y_train"], epochs=epochs, batch_size=32, verbose=0)
    stripped = tfjoint.strip(joint)
    plain = _export(stripped, data, os.path.join(work, "plain.tflite"), "none")
    rows = [dict(plain, factor=None, compression="none")]
    for factor in (None,) + RAM_CURVE_FACTORS:
        limit = int(factor * plain["arena_bytes"]) if factor else None
        try:
            row = dict(_export(stripped, data, os.path.join(work, f"lut_{factor}.tflite"), "lut", limit),
                       factor=factor, compression="lut")
        except Exception as error:  # a budget the export refuses is a row saying so
            row = {"factor": factor, "compression": "lut",
                   "error": f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"}
        rows.append(row)
    for row in rows:
        row.update(task=task, seed=seed, plain_flash=plain["flash_bytes"], plain_arena=plain["arena_bytes"])
        print(json.dumps(row), flush=True)
    return rows


def ram_curve_table(rows: list[dict]) -> str:
    lines = ["| task | file | RAM budget | flash KB | flash / plain | RAM KB (arena + alt.) | RAM / plain arena | "
             "tensors split / left whole |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        limit_kb = (r["factor"] or 0) * r["plain_arena"] / 1024
        budget = f"{r['factor']:g}x plain arena ({limit_kb:.1f} KB)" if r["factor"] else "none"
        if "error" in r:
            lines.append(f"| {r['task']} | LUT 16 | {budget} | refused: {r['error'][:120]} | | | | |")
            continue
        name = "plain int8" if r["compression"] == "none" else "LUT 16"
        lines.append(f"| {r['task']} | {name} | {budget if name != 'plain int8' else ''} | "
                     f"{r['flash_bytes'] / 1024:.1f} | {r['flash_bytes'] / r['plain_flash']:.3f} | "
                     f"{r['ram_bytes'] / 1024:.1f} | {r['ram_bytes'] / r['plain_arena']:.2f} | "
                     f"{r.get('split_tensors', 0)} / {r.get('left_uncompressed', 0)} |")
    return "\n".join(lines)


def main(argv):
    del argv
    args = FLAGS
    if args.render:
        print(render(args.render))
        return
    os.makedirs(args.out, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for task in args.tasks.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                if args.budget:
                    rows += run_budget(task, seed, args.tiny, work)
                    continue
                if args.ram_curve:
                    rows += run_ram_curve(task, seed, args.tiny, work)
                    continue
                methods = (("plain", "TF-MOT 16", "TF-MOT 4") + LONGER if args.longer else
                           ("plain", "TF-MOT 16", "TF-MOT 4") + EQUAL_TOTAL if args.equal_total_epochs else
                           ("plain",) + SHARED if args.shared_tables else METHODS)
                rows += run(task, seed, args.tiny, work, methods)
    name = ("weight_sharing" + ("_longer" if args.longer else "")
            + ("_equal_total" if args.equal_total_epochs else "") + ("_shared" if args.shared_tables else "")
            + ("_budget" if args.budget else "")
            + ("_ram_curve" if args.ram_curve else "") + ("_tiny" if args.tiny else ""))
    with open(os.path.join(args.out, f"{name}.json"), "w") as handle:
        json.dump({"command": " ".join(sys.argv), "rows": rows}, handle, indent=2)
    text = budget_table(rows) if args.budget else ram_curve_table(rows) if args.ram_curve else table(rows)
    with open(os.path.join(args.out, f"{name}.md"), "w") as handle:
        handle.write(f"`{' '.join(sys.argv)}`\n\n{text}\n")
    print(text)


if __name__ == "__main__":
    app.run(main)
