"""`pgolf validate`: a hand-made records folder passes; each broken rule gives one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from pgolf.cli import cli
from pgolf.export.validate import validate

SCRIPT = 'print("hello")\n'
LOG = (
    "step:10/time train_loss:3.0\n"
    "clock train_time_s:590.0 pack_time_s:8.0 train_plus_pack_s:598.0\n"
    "Total submission size pgolf: 15000100 bytes\n"
    "final_pgolf_sliding_window_exact val_loss:2.5 val_bpb:1.25 eval_time:400000ms\n"
)


def make_folder(root: Path) -> Path:
    folder = root / "records" / "track_10min_16mb" / "2026-05-01_Test"
    folder.mkdir(parents=True)
    (folder / "train_gpt.py").write_text(SCRIPT)
    (folder / "README.md").write_text("# test\n")
    (folder / "requirements.txt").write_text("torch\n")
    (folder / "train_seed1.log").write_text(LOG)
    (folder / "train_seed11.log").write_text(LOG.replace("1.25", "1.35"))
    code = len(SCRIPT)
    sub = {
        "author": "A",
        "github_id": "a",
        "name": "Test",
        "blurb": "b",
        "date": "2026-05-01",
        "val_loss": 2.5,
        "val_bpb": 1.3,
        "val_bpb_std": 0.07,
        "bytes_total": 15_000_100 + code,
        "bytes_code": code,
        "seeds": [1, 11],
        "seed_results": {
            "1": {"val_bpb": 1.25, "artifact_bytes": 15_000_000, "eval_time_s": 400.0},
            "11": {"val_bpb": 1.35, "artifact_bytes": 15_000_100, "eval_time_s": 410.0},
        },
        "hardware": "8xH100",
        "pytorch_version": "2.11",
        "compliance": {"train_under_600s": True},
    }
    (folder / "submission.json").write_text(json.dumps(sub))
    return folder


def edit(folder: Path, **changes) -> None:
    path = folder / "submission.json"
    sub = json.loads(path.read_text())
    sub.update(changes)
    path.write_text(json.dumps(sub))


def test_good_folder_passes_and_cli_exits_zero(tmp_path):
    folder = make_folder(tmp_path)
    assert validate(folder) == []
    res = CliRunner().invoke(cli, ["validate", str(folder)])
    assert res.exit_code == 0 and "ok:" in res.output


def test_outside_a_checkout_the_location_is_not_checked(tmp_path):
    assert validate(make_folder(tmp_path)) == []


def test_wrong_place_in_a_checkout(tmp_path):
    (tmp_path / ".git").mkdir()
    good = make_folder(tmp_path)
    assert validate(good) == []
    wrong = tmp_path / "elsewhere"
    good.rename(wrong)
    (problem,) = validate(wrong)
    assert "records/track_10min_16mb/<name>/" in problem


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"bytes_code": 3}, "bytes_code 3 != train_gpt.py's"),
        ({"val_bpb": "1.3"}, "val_bpb must be int or float"),
        ({"seeds": [1, 2]}, "seeds [1, 2] and seed_results keys"),
        ({"date": "May 1"}, "YYYY-MM-DD"),
        ({"bytes_total": 16_000_001}, "bytes_total 16,000,001 > 16,000,000"),
        ({"bytes_code": True}, "bytes_code must be int"),
    ],
)
def test_each_broken_field_is_one_line(tmp_path, change, needle):
    folder = make_folder(tmp_path)
    edit(folder, **change)
    problems = validate(folder)
    assert any(needle in p for p in problems), problems
    res = CliRunner().invoke(cli, ["validate", str(folder)])
    assert res.exit_code == 1
    assert res.output.count("problem:") == len(problems)


def test_missing_field_and_missing_file(tmp_path):
    folder = make_folder(tmp_path)
    path = folder / "submission.json"
    sub = json.loads(path.read_text())
    del sub["hardware"]
    path.write_text(json.dumps(sub))
    (folder / "requirements.txt").unlink()
    problems = validate(folder)
    assert len(problems) == 2
    assert any("missing field 'hardware'" in p for p in problems)
    assert any("requirements.txt: required file missing" in p for p in problems)


def test_over_the_cap_with_the_real_code_size(tmp_path):
    folder = make_folder(tmp_path)
    (folder / "train_gpt.py").write_text(SCRIPT + "#" * 1_000_000)
    problems = validate(folder)
    assert any("exceeds 16,000,000" in p for p in problems), problems


def test_script_must_compile(tmp_path):
    folder = make_folder(tmp_path)
    (folder / "train_gpt.py").write_text("def broken(:\n")
    edit(folder, bytes_code=len("def broken(:\n"), bytes_total=15_000_100 + 13)
    (problem,) = validate(folder)
    assert "does not compile" in problem


def test_logs_must_hold_score_and_clock(tmp_path):
    folder = make_folder(tmp_path)
    (folder / "train_seed1.log").write_text("step:1 train_loss:9\n")
    (folder / "train_seed11.log").write_text(LOG.replace("train_plus_pack_s:598.0", "x:1"))
    problems = validate(folder)
    assert any("train_seed1.log: no final" in p for p in problems)
    assert any("train_seed1.log: no 'Total submission size'" in p for p in problems)
    assert any("train_seed11.log: no 'train_plus_pack_s:'" in p for p in problems)


def test_slow_training_and_wrong_logged_score(tmp_path):
    folder = make_folder(tmp_path)
    (folder / "train_seed1.log").write_text(
        LOG.replace("train_plus_pack_s:598.0", "train_plus_pack_s:612.5").replace("1.25", "1.2")
    )
    problems = validate(folder)
    assert any("612.5 s, over 600 s" in p for p in problems), problems
    assert any("logs val_bpb 1.2 but seed_results[1] says 1.25" in p for p in problems)


def test_missing_seed_log(tmp_path):
    folder = make_folder(tmp_path)
    (folder / "train_seed11.log").unlink()
    (problem,) = validate(folder)
    assert "seed 11: no train log" in problem
