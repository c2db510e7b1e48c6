"""Rank-0 logging: greppable ``key:value`` lines with units in the keys, plus a JSONL twin.

    step:120/4000 train_loss:3.1234 step_avg_ms:84.6

Every record goes to stdout (as key:value) and, when a path is given, to a JSONL
file (as one JSON object), so humans grep and tools parse the same events.
Non-zero ranks get a logger that drops everything.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any, TextIO


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3):
            return f"{value:.4e}"
        return f"{value:.4f}"
    if isinstance(value, (list, tuple)):
        return ",".join(format_value(v) for v in value)
    return str(value).replace(" ", "_")


def format_line(fields: dict[str, Any]) -> str:
    return " ".join(f"{k}:{format_value(v)}" for k, v in fields.items())


class Logger:
    """Writes key:value lines to ``stream`` and JSON objects to ``jsonl_path`` (rank 0 only)."""

    def __init__(
        self,
        jsonl_path: str | Path | None = None,
        *,
        enabled: bool = True,
        stream: TextIO | None = None,
    ) -> None:
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stdout
        self._jsonl = None
        if enabled and jsonl_path is not None:
            path = Path(jsonl_path)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._jsonl = path.open("a", encoding="utf-8")

    def log(self, event: str | None = None, **fields: Any) -> None:
        if not self.enabled:
            return
        line = format_line(fields)
        print(
            f"{event} {line}" if event and line else (event or line), file=self.stream, flush=True
        )
        if self._jsonl is not None:
            record = {"time_unix": round(time.time(), 3)}
            if event:
                record["event"] = event
            record.update({k: _jsonable(v) for k, v in fields.items()})
            self._jsonl.write(json.dumps(record) + "\n")
            self._jsonl.flush()

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None

    def __enter__(self) -> Logger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return str(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)
