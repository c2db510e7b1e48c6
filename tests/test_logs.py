"""key:value lines with a JSONL twin; disabled loggers drop everything."""

from __future__ import annotations

import io
import json
import math

from pgolf.logs import Logger, format_line, format_value


def test_format_values():
    assert format_value(3.14159) == "3.1416"
    assert format_value(1234567.0) == "1.2346e+06"
    assert format_value(0.0001) == "1.0000e-04"
    assert format_value(0.0) == "0.0000"
    assert format_value(True) == "true" and format_value(False) == "false"
    assert format_value(42) == "42"
    assert format_value([1, 2.5]) == "1,2.5000"
    assert format_value("two words") == "two_words"  # one token per value: grep-safe
    assert format_value(math.nan) == "nan" and format_value(math.inf) == "inf"


def test_format_line():
    assert (
        format_line({"step": "120/4000", "train_loss": 3.12345})
        == "step:120/4000 train_loss:3.1235"
    )


def test_logger_writes_lines_and_jsonl(tmp_path):
    stream = io.StringIO()
    path = tmp_path / "sub" / "log.jsonl"
    with Logger(path, stream=stream) as log:
        log.log("split:val", docs=2000, tokens=1464657, ratio=0.5, bad=math.nan, tags=(1, 2))
        log.log(step=1)
        log.log("done")
    assert stream.getvalue().splitlines() == [
        "split:val docs:2000 tokens:1464657 ratio:0.5000 bad:nan tags:1,2",
        "step:1",
        "done",
    ]
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert records[0]["event"] == "split:val" and records[0]["tokens"] == 1464657
    assert records[0]["bad"] == "nan" and records[0]["tags"] == [1, 2]
    assert "event" not in records[1] and records[1]["step"] == 1
    assert all("time_unix" in r for r in records)


def test_logger_appends(tmp_path):
    path = tmp_path / "log.jsonl"
    for i in range(2):
        with Logger(path, stream=io.StringIO()) as log:
            log.log(run=i)
    assert [json.loads(x)["run"] for x in path.read_text().splitlines()] == [0, 1]


def test_disabled_logger_is_silent(tmp_path):
    stream = io.StringIO()
    path = tmp_path / "log.jsonl"
    log = Logger(path, enabled=False, stream=stream)
    log.log("x", a=1)
    log.close()
    assert stream.getvalue() == "" and not path.exists()


def test_non_json_values_become_strings(tmp_path):
    path = tmp_path / "log.jsonl"
    with Logger(path, stream=io.StringIO()) as log:
        log.log(path=tmp_path, nested={"a": (1, 2)}, nothing=None)
    record = json.loads(path.read_text())
    assert record["path"] == str(tmp_path) and record["nested"] == {"a": [1, 2]}
    assert record["nothing"] is None
