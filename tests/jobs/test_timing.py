"""persam.jobs.timing: the one device-aware timer."""

from __future__ import annotations

import time

import pytest
import torch

from persam.jobs import timing


@pytest.fixture
def synced(monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(
        torch.cuda, "synchronize", lambda device=None: calls.append(f"cuda:{torch.device(device).index}")
    )
    monkeypatch.setattr(torch.mps, "synchronize", lambda: calls.append("mps"))
    return calls


@pytest.mark.parametrize(
    "device, expected",
    [
        ("cuda:1", ["cuda:1"]),
        (torch.device("cuda", 0), ["cuda:0"]),
        ("mps", ["mps"]),
        ("cpu", []),
        (None, []),
    ],
)
def test_synchronize_per_device(synced, device, expected):
    timing.synchronize(device)
    assert synced == expected


@pytest.mark.parametrize("device, per_call", [("mps", "mps"), ("cuda:0", "cuda:0")])
def test_seconds_synchronises_before_and_after(synced, device, per_call):
    order: list[str] = []
    t = timing.seconds(lambda: order.append(f"run after {len(synced)} syncs"), device)
    assert synced == [per_call, per_call] and order == ["run after 1 syncs"] and t >= 0


def test_seconds_measures_wall_time():
    assert timing.seconds(lambda: time.sleep(0.02)) >= 0.02


def test_stopwatch():
    with timing.stopwatch("cpu") as lap:
        time.sleep(0.01)
    assert lap.seconds >= 0.01


def test_median_seconds_warms_up_then_times(monkeypatch):
    calls = []
    ticks = iter([0.0, 1.0, 10.0, 13.0, 20.0, 22.0])  # timed calls of 1, 3 and 2 seconds
    monkeypatch.setattr(timing.time, "perf_counter", lambda: next(ticks))
    assert timing.median_seconds(lambda: calls.append(1), "cpu", runs=3, warmup=2) == 2.0
    assert len(calls) == 5


@pytest.mark.parametrize("runs, warmup", [(0, 1), (3, -1)])
def test_median_seconds_rejects_bad_counts(runs, warmup):
    with pytest.raises(ValueError, match="runs must be at least 1"):
        timing.median_seconds(lambda: None, runs=runs, warmup=warmup)
