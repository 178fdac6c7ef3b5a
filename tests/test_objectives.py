"""Objectives: latency is measured (positive, stable-ish, tracks model cost); energy
reads a RAPL powercap tree when there is one and otherwise estimates and says so."""

from __future__ import annotations

import inspect
import statistics
from pathlib import Path

import pytest
import torch
from torch import nn

from objectives import complexity, energy, latency


def test_latency_is_positive_and_stable_ish():
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))
    medians = [latency.measure(model, (1, 8, 8), repeats=50, warmup=5).value for _ in range(5)]
    assert all(m > 0 for m in medians)
    # Medians of repeated measurements agree within a factor that noise cannot explain away.
    assert max(medians) < 3 * min(medians)
    result = latency.measure(model, (1, 8, 8), repeats=50, warmup=5)
    assert result.detail["p90_ms"] >= result.value >= result.detail["min_ms"] > 0
    assert result.unit == "ms" and result.source == "wall-clock" and result.detail["threads"] == 1


def test_latency_sees_a_bigger_model():
    small = nn.Sequential(nn.Flatten(), nn.Linear(64, 8))
    big = nn.Sequential(nn.Flatten(), nn.Linear(64, 2048), nn.ReLU(), nn.Linear(2048, 2048), nn.Linear(2048, 10))
    fast = statistics.median(latency.measure(small, (1, 8, 8), repeats=30).value for _ in range(3))
    slow = statistics.median(latency.measure(big, (1, 8, 8), repeats=30).value for _ in range(3))
    assert slow > 2 * fast


def test_measurement_lock_is_exclusive(tmp_path):
    import fcntl

    lock = tmp_path / "measure.lock"
    with latency.exclusive(lock):
        with open(lock, "a+") as other:
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with open(lock, "a+") as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free again


def test_training_pauses_while_a_measurement_holds_the_lock(tmp_path, monkeypatch):
    import threading
    import time

    from search.core.spec import from_dict
    from search.tasks.data import load_task
    from search.tasks.plugins import Plugins
    from search.trial.pipeline import trial_context
    from spaces import architecture
    from tests.conftest import tiny_spec_dict, train

    monkeypatch.setattr(latency, "LOCK_PATH", tmp_path / "measure.lock")
    task = load_task(from_dict(tiny_spec_dict()))
    params = {"family": "mlp", "width": 8, "depth": 1, "batch_norm": False, "optimizer": "adam", "lr": 0.01,
              "schedule": "constant", "batch_size": 64, "weight_decay": 0.0, "dropout": 0.0, "label_smoothing": 0.0}
    model = architecture.build(params, task.input_shape, task.n_classes)
    held, released = threading.Event(), {}

    def measurement():
        with latency.exclusive():
            held.set()
            time.sleep(0.5)
            released["at"] = time.perf_counter()

    # A trial's training hooks pause on the node's measurement lock.
    spec = from_dict(tiny_spec_dict())
    # (Wrapped once to time the waits: search.trial.timing.)
    assert inspect.unwrap(trial_context(params, task, spec, 0, Plugins()).training.pause) is latency.wait_for_measurements
    pause = lambda: latency.wait_for_measurements()  # noqa: E731 - looked up per call (monkeypatched below)

    thread = threading.Thread(target=measurement)
    thread.start()
    held.wait()
    train(model, task, params, 1, pause=pause)
    finished = time.perf_counter()
    thread.join()
    assert finished > released["at"]  # no batch ran before the measurement let go

    calls = []
    monkeypatch.setattr(latency, "wait_for_measurements", lambda: calls.append(1))
    train(model, task, params, 1)  # a teacher's or test's training: no pause
    assert calls == []
    train(model, task, params, 1, pause=pause)
    assert len(calls) == -(-len(task.train.X) // 64)  # once per batch


def fake_powercap(root: Path, packages: dict[int, int], max_range: int = 10**9) -> Path:
    for index, value in packages.items():
        domain = root / f"intel-rapl:{index}"
        domain.mkdir(parents=True)
        (domain / "name").write_text(f"package-{index}\n")
        (domain / "energy_uj").write_text(f"{value}\n")
        (domain / "max_energy_range_uj").write_text(f"{max_range}\n")
        sub = root / f"intel-rapl:{index}:0"  # a sub-domain (core): must not be double counted
        sub.mkdir()
        (sub / "energy_uj").write_text("0\n")
    return root


def test_energy_reads_fake_rapl_tree(tmp_path):
    root = fake_powercap(tmp_path / "powercap", {0: 1_000, 1: 5_000})
    runs = []

    def run_once():  # each "inference" burns 30 uJ on package 0 and 10 uJ on package 1
        runs.append(1)
        for index, step in ((0, 30), (1, 10)):
            path = root / f"intel-rapl:{index}" / "energy_uj"
            path.write_text(str(int(path.read_text()) + step))

    result = energy.measure(
        run_once, latency_ms=1.0, macs_by_precision={"fp32": 1000}, weight_bytes=100, static_power_w=5, powercap_root=root
    )
    assert result.source == "rapl"
    assert result.detail["domains"] == ["intel-rapl:0", "intel-rapl:1"]
    assert result.value == pytest.approx(40 / 1000)  # 40 uJ per run = 0.04 mJ
    assert result.detail["runs"] == len(runs) > 0


def test_rapl_counter_wraparound():
    assert energy.counter_delta_uj(before=990, after=10, max_range_uj=1000) == 20
    assert energy.counter_delta_uj(before=10, after=990, max_range_uj=1000) == 980


def test_energy_estimates_without_counters_and_says_so(tmp_path):
    result = energy.measure(
        lambda: None,
        latency_ms=2.0,
        macs_by_precision={"fp32": 1_000_000},
        weight_bytes=4_000,
        static_power_w=5.0,
        powercap_root=tmp_path / "no-powercap",
    )
    assert result.source == "estimate"
    assert result.detail["static_mj"] == pytest.approx(10.0)
    assert result.detail["compute_mj"] == pytest.approx(1_000_000 * 4.6e-9)
    assert result.detail["memory_mj"] == pytest.approx(4_000 * 160e-9)
    assert result.value == pytest.approx(10.0 + 4.6e-3 + 6.4e-4)
    int8 = energy.estimate(2.0, {"int8": 1_000_000}, 4_000, 5.0)
    assert int8.detail["compute_mj"] < result.detail["compute_mj"] / 10


def test_macs_and_params_counted_per_layer_type():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 8 * 8, 10))
    macs = complexity.count_macs(model, torch.zeros(2, 1, 8, 8))
    assert macs["conv"] == 4 * 8 * 8 * 9 and macs["linear"] == 256 * 10
    assert complexity.count_params(model) == (4 * 9 + 4 + 2560 + 10,) * 2
    assert complexity.size_kb(model) > (4 * 9 + 4 + 2560 + 10) * 4 / 1024
