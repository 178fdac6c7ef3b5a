"""Image folders at scale: one trial on N generated 32×32 RGB images, streamed from
disk through DataLoader workers, with its peak memory.

The images come from the own-model example's generator (examples/own_model/
make_images.py: digits upsampled, coloured, augmented; no download). The trial is the
example's small ResNet (width 16, 2 blocks), 1 epoch, structured pruning + static
int8, run by `search.trial.pipeline.run_pipeline` in a fresh process, so its peak resident
memory (ru_maxrss) is the trial's alone: the process's own, and the largest of its
DataLoader worker processes. Beside it: what the decoded images would take if held
in memory as float32 (what an in-memory task would need).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import Table

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "own_model"

TRIAL = r'''
import json, resource, sys, time
from pathlib import Path
started = time.perf_counter()
from search.core.spec import from_dict
from search.tasks.data import load_task
from search.trial.pipeline import run_pipeline
root, model = sys.argv[1], sys.argv[2]
spec = from_dict({
    "name": "streaming", "task": {"images": root}, "model": {"factory": model},
    "budget": {"epochs": 1}, "measure": {"repeats": 20},
    "space": {"model": {"width": 16, "blocks": 2, "act": "relu"}},
    "resources": {"cpus_per_trial": 2},
})
loaded = time.perf_counter()
task = load_task(spec)
checked = time.perf_counter()
params = {"width": 16, "blocks": 2, "act": "relu", "optimizer": "adamw", "lr": 3e-3, "schedule": "cosine",
          "batch_size": 128, "weight_decay": 1e-4, "dropout": 0.0, "label_smoothing": 0.0,
          "prune_kind": "structured", "prune_ratio": 0.4, "quant_mode": "static"}
epoch = {}
result = run_pipeline(params, task, spec, seed=0, on_epoch=lambda e, a: epoch.setdefault("s", time.perf_counter()))
done = time.perf_counter()
print(json.dumps({
    "train": len(task.train), "val": len(task.val), "test": len(task.test),
    "check_s": checked - loaded, "trial_s": done - checked, "epoch_s": epoch["s"] - checked,
    "accuracy": result.metrics.accuracy, "workers": int(spec.resources.loader_workers or 2),
    "self_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "workers_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
}))
'''


def settings(quick: bool) -> dict:
    return {"images": 1_000} if quick else {"images": 50_000}


def run(quick: bool = False) -> list[Table]:
    size = settings(quick)
    rows = []
    with tempfile.TemporaryDirectory(prefix="paretune-images-") as scratch:
        folder = Path(scratch) / "glyphs"
        started = time.perf_counter()
        subprocess.run([sys.executable, str(EXAMPLE / "make_images.py"), "--count", str(size["images"]), "--out", str(folder)],
                       check=True, capture_output=True, text=True)
        write_s = time.perf_counter() - started
        disk_mb = sum(p.stat().st_size for p in folder.rglob("*.png")) / 2**20
        trial = subprocess.run([sys.executable, "-c", TRIAL, str(folder), f"{EXAMPLE / 'model.py'}:build"],
                               capture_output=True, text=True, cwd=ROOT)
        if trial.returncode != 0:
            raise RuntimeError(f"the streaming trial failed: {trial.stderr[-1500:]}")
        result = json.loads(trial.stdout.strip().splitlines()[-1])
    in_memory_mb = size["images"] * 3 * 32 * 32 * 4 / 2**20
    rows.append([
        size["images"], round(disk_mb, 1), round(write_s, 1), round(result["check_s"], 1),
        round(result["epoch_s"], 1), round(result["train"] / result["epoch_s"]),
        round(result["trial_s"], 1), round(result["self_mb"]), round(result["workers_mb"]), round(in_memory_mb),
        round(100 * result["accuracy"], 1),
    ])
    return [Table(
        "streaming",
        "One trial on an image folder streamed from disk (32×32 RGB PNGs)",
        ["images", "on disk MB", "write s", "header check s", "epoch s (train + val)", "train images/s",
         "trial s", "peak RSS trial MB", "peak RSS worker MB", "all decoded in memory MB", "val acc %"],
        rows,
        [
            "One fresh process runs the trial (search.trial.pipeline.run_pipeline): the example's ResNet, width 16, 2 blocks, "
            "1 epoch, batch 128, structured 40% + 1 fine-tune epoch, static int8, 2 DataLoader workers.",
            "Peak RSS: ru_maxrss of the trial process and of its largest DataLoader worker; the decoded images "
            "as float32 (N×3×32×32×4 bytes) are what an in-memory task would hold on top.",
            "The header check opens and verifies every file before anything starts (corrupt files stop the launch).",
        ],
    )]
