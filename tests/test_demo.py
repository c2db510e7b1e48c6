"""The embedded demo corpus: deterministic, real English, and the README's first command."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from click.testing import CliRunner

from pgolf.cli import cli
from pgolf.data.demo import DEMO_NAME, demo_documents, write_demo_corpus


def test_demo_corpus_is_substantial_english():
    docs = demo_documents()
    text = "\n".join(d["text"] for d in docs)
    assert len(docs) >= 300 and 1_000_000 <= len(text.encode()) <= 3_500_000
    words = re.findall(r"[a-z]+", text.lower())
    common = sum(words.count(w) for w in ("the", "of", "and", "to", "is", "a"))
    assert common / len(words) > 0.1  # function words: prose, not code or tables
    assert sum(c.isalpha() or c.isspace() for c in text) / len(text) > 0.75
    sources = {d["source"].split(":")[0] for d in docs}
    assert sources == {"pydoc_data.topics", "stdlib"}
    assert len({d["source"] for d in docs}) == len(docs)


def test_demo_corpus_is_deterministic_across_processes(tmp_path):
    path = write_demo_corpus(tmp_path)
    assert path.name == DEMO_NAME
    # A fresh interpreter with another hash seed must write the same bytes.
    code = (
        "import sys; from pgolf.data.demo import write_demo_corpus; write_demo_corpus(sys.argv[1])"
    )
    env_dir = tmp_path / "again"
    subprocess.run(
        [sys.executable, "-c", code, str(env_dir)],
        check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
    )
    assert (env_dir / DEMO_NAME).read_bytes() == path.read_bytes()
    first = json.loads(path.read_text().splitlines()[0])
    assert set(first) == {"text", "source"}


def test_readme_first_command_builds_demo_shards(tmp_path):
    out = tmp_path / "runs" / "demo" / "data"
    result = CliRunner().invoke(
        cli, ["data", "build", "--demo", "--out", str(out), "--workers", "1"]
    )
    assert result.exit_code == 0, result.output
    assert "tokenizer_trained vocab_size:512" in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["val_docs"] == 64  # the tiny preset
    assert manifest["tokenizer"]["trained"] and manifest["splits"]["train"]["tokens"] > 300_000
    assert json.loads((out / "config.json").read_text())["preset"] == "tiny"
    info = CliRunner().invoke(cli, ["data", "info", str(out)])
    assert info.exit_code == 0 and "manifest_check:ok" in info.output
