"""GPTQ's calibration handed to the pack as a function (the exported script's rank 0): called
once, where the pack would calibrate, with the CPU's size estimates already running, and the
artifact the same as with the calibration made beforehand."""

from __future__ import annotations

import dataclasses
import threading

from pgolf.checkpoint import load_checkpoint, save_checkpoint
from pgolf.config import resolve
from pgolf.pack import api, gptq
from pgolf.pack.synthetic import random_state


def test_a_calibration_function_runs_once_while_the_estimates_run(tmp_path, monkeypatch):
    run = resolve("tiny")
    save_checkpoint(tmp_path / "ck", random_state(run.model, seed=3), run)
    cfg = dataclasses.replace(
        run.pack, gptq="on", gptq_samples=2, gptq_seq_len=16, search_bits=("8/6/6", "7/6/5")
    )
    tensors, _, _ = load_checkpoint(tmp_path / "ck")
    made = api.Calibration(gptq.calibrate(tensors, run.model, cfg), 1.0)
    before = api.pack_checkpoint(tmp_path / "ck", tmp_path / "a.pgolf", cfg, calibration=made)

    # On a GPU the estimates overlap the calibration; force that here (CPU).
    monkeypatch.setattr(api, "overlap", lambda cfg: True)
    estimating = threading.Event()
    estimate = api.B.estimate

    def watched_estimate(*args, **kwargs):
        estimating.set()
        return estimate(*args, **kwargs)

    monkeypatch.setattr(api.B, "estimate", watched_estimate)
    calls = []

    def calibrate():
        calls.append(estimating.wait(timeout=60))  # the estimates started before this ran
        return made

    after = api.pack_checkpoint(tmp_path / "ck", tmp_path / "b.pgolf", cfg, calibration=calibrate)
    assert calls == [True]
    assert after["gptq"] and after["bits_e_a_m"] == before["bits_e_a_m"]
    assert (tmp_path / "a.pgolf").read_bytes() == (tmp_path / "b.pgolf").read_bytes()


def test_without_gptq_the_function_still_runs_so_every_rank_takes_the_same_path(tmp_path):
    run = resolve("tiny")
    save_checkpoint(tmp_path / "ck", random_state(run.model, seed=3), run)
    cfg = dataclasses.replace(run.pack, gptq="off", search=False)
    calls = []
    summary = api.pack_checkpoint(
        tmp_path / "ck", tmp_path / "a.pgolf", cfg, calibration=lambda: calls.append(1)
    )
    assert calls == [1] and summary["gptq"] is False
