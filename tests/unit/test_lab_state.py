"""The lab's state file: parallel updates lose nothing (balancers boot in parallel)."""

import concurrent.futures
import multiprocessing
import os
from pathlib import Path

import pytest

from lab import state


def _record(name: str) -> None:
    with state.updating() as current:
        current.processes.append(state.ProcessRecord(name, os.getpid(), 1))


def test_parallel_updates_lose_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state, "LAB_DIR", tmp_path)
    monkeypatch.setattr(state, "STATE_FILE", tmp_path / "state.json")
    names = [f"p{i}" for i in range(40)]
    context = multiprocessing.get_context("fork")  # children see the patched paths
    with concurrent.futures.ProcessPoolExecutor(max_workers=8, mp_context=context) as pool:
        list(pool.map(_record, names))
    assert sorted(p.name for p in state.load().processes) == sorted(names)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")]
    assert leftovers == []


def test_each_balancer_keeps_its_pgpool_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lab reuses a running lab only if bal3 runs pgpool 4.1: the version must survive
    a save and load, and a state written before it was recorded loads as unknown ("")."""
    monkeypatch.setattr(state, "LAB_DIR", tmp_path)
    monkeypatch.setattr(state, "STATE_FILE", tmp_path / "state.json")
    nspawn = state.ProcessRecord("lab-bal3", 10, 1)
    state.save(state.LabState(containers=[state.ContainerRecord("lab-bal3", nspawn, 11, "4.1.4")]))
    assert [c.pgpool for c in state.load().containers] == ["4.1.4"]
    older = '{"containers": [{"name": "lab-bal1", "nspawn": {"name": "lab-bal1", "pid": 1,'
    (tmp_path / "state.json").write_text(older + ' "start_ticks": 2}, "pid1": 3}]}')
    assert [c.pgpool for c in state.load().containers] == [""]
