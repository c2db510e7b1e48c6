"""`pgolf data fetch` with a fake downloader (no network here), and its failure messages."""

from __future__ import annotations

import builtins
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pgolf.cli import cli
from pgolf.data import fetch as fetch_mod
from pgolf.data.fetch import FetchMissing, FetchOffline, fetch, hf_downloader
from pgolf.data.info import data_info
from pgolf.data.shards import write_shard
from pgolf.errors import DataError


class FakeHub:
    """Serves files from a local folder laid out like the challenge's hub repo."""

    def __init__(self, root: Path, shared: Path, train_shards: int = 3):
        self.root = root
        self.calls: list[str] = []
        prefix = root / "datasets" / "datasets" / "fineweb10B_sp1024"
        prefix.mkdir(parents=True)
        rng = np.random.default_rng(0)
        for split, n in (("val", 1), ("train", train_shards)):
            for i in range(n):
                docs = [np.concatenate(([1], rng.integers(4, 1024, 50))) for _ in range(3)]
                write_shard(prefix / f"fineweb_{split}_{i:06d}.bin", np.concatenate(docs))
        tok = root / "datasets" / "tokenizers"
        tok.mkdir(parents=True)
        (tok / "fineweb_1024_bpe.model").write_bytes(
            (shared / "tokenizers" / "fineweb_1024_bpe.model").read_bytes()
        )

    def __call__(self, remote: str) -> Path:
        self.calls.append(remote)
        path = self.root / remote
        if not path.is_file():
            raise FetchMissing(f"{remote} does not exist on the hub")
        return path


@pytest.fixture()
def hub(tmp_path, shared_dir):
    return FakeHub(tmp_path / "hub", shared_dir)


def test_fetch_lays_out_challenge_files(tmp_path, hub):
    out = tmp_path / "data"
    record = fetch("sp1024", 2, out, downloader=hub)
    assert hub.calls == [
        "datasets/tokenizers/fineweb_1024_bpe.model",
        "datasets/datasets/fineweb10B_sp1024/fineweb_val_000000.bin",
        "datasets/datasets/fineweb10B_sp1024/fineweb_train_000000.bin",
        "datasets/datasets/fineweb10B_sp1024/fineweb_train_000001.bin",
    ]
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "fetch.json",
        "fineweb_train_000000.bin",
        "fineweb_train_000001.bin",
        "fineweb_val_000000.bin",
        "tokenizer.model",
    ]
    assert json.loads((out / "fetch.json").read_text()) == record
    assert record["files"][1]["tokens"] == 153
    info = data_info(out)  # the fetched layout is one `data info` reads without flags
    assert info["val_docs"] == 3 and info["train_shards"] == 2 and info["val_tokens"] == 153


def test_fetch_remote_root_is_configurable(tmp_path, hub):
    (hub.root / "datasets").rename(hub.root / "matched_10B_docs2m_seed1337")
    fetch("sp1024", 0, tmp_path / "d", downloader=hub, remote_root="matched_10B_docs2m_seed1337")
    assert hub.calls[0] == "matched_10B_docs2m_seed1337/tokenizers/fineweb_1024_bpe.model"


def test_too_many_train_shards(tmp_path, hub):
    with pytest.raises(DataError, match="sp1024 has only 3 train shards, asked for 5"):
        fetch("sp1024", 5, tmp_path / "d", downloader=hub)


def test_bad_arguments(tmp_path, hub):
    with pytest.raises(DataError, match="unknown variant 'sp999'; choose one of sp512, sp1024"):
        fetch("sp999", 1, tmp_path, downloader=hub)
    with pytest.raises(DataError, match="--train-shards must be >= 0"):
        fetch("sp1024", -1, tmp_path, downloader=hub)


def test_truncated_download_is_caught(tmp_path, hub):
    shard = hub.root / "datasets/datasets/fineweb10B_sp1024/fineweb_val_000000.bin"
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(DataError, match="fineweb_val_000000.bin: header says 153 tokens"):
        fetch("sp1024", 0, tmp_path / "d", downloader=hub)


def test_offline_fails_fast_with_clear_message(tmp_path):
    calls = []

    def offline(remote):
        calls.append(remote)
        raise ConnectionError("Name or service not known")

    with pytest.raises(FetchOffline, match="Hugging Face hub is unreachable") as err:
        fetch("sp1024", 10, tmp_path, downloader=offline)
    assert "pgolf data build" in str(err.value)
    assert len(calls) == 1  # the small tokenizer first, then stop


def test_downloader_returning_garbage(tmp_path):
    with pytest.raises(DataError, match="not a file"):
        fetch("sp1024", 0, tmp_path, downloader=lambda remote: tmp_path / "nothing")
    bogus = tmp_path / "bogus.model"
    bogus.write_bytes(b"html error page")
    with pytest.raises(DataError, match="not a SentencePiece model"):
        fetch("sp1024", 0, tmp_path / "o", downloader=lambda remote: bogus)


def _block_huggingface_hub(monkeypatch):
    real_import = builtins.__import__

    def no_hub(name, *args, **kwargs):
        if name.startswith("huggingface_hub"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_hub)
    monkeypatch.delitem(sys.modules, "huggingface_hub", raising=False)


def test_missing_extra_names_the_install_command(monkeypatch):
    _block_huggingface_hub(monkeypatch)
    with pytest.raises(DataError, match=r"pip install 'pgolf\[online\]'"):
        hf_downloader("willdepueoai/parameter-golf")


def test_hf_offline_env_fails_fast(monkeypatch):
    fake = type(sys)("huggingface_hub")
    errors = type(sys)("huggingface_hub.errors")
    errors.EntryNotFoundError = type("EntryNotFoundError", (Exception,), {})
    errors.LocalEntryNotFoundError = type("LocalEntryNotFoundError", (Exception,), {})
    monkeypatch.setitem(sys.modules, "huggingface_hub", fake)
    monkeypatch.setitem(sys.modules, "huggingface_hub.errors", errors)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FetchOffline, match="HF_HUB_OFFLINE is set"):
        hf_downloader("willdepueoai/parameter-golf")


def test_hf_downloader_maps_library_errors(monkeypatch, tmp_path):
    fake = type(sys)("huggingface_hub")
    errors = type(sys)("huggingface_hub.errors")
    errors.EntryNotFoundError = type("EntryNotFoundError", (OSError,), {})
    errors.LocalEntryNotFoundError = type("LocalEntryNotFoundError", (OSError,), {})
    seen = {}

    def hf_hub_download(**kw):
        seen.update(kw)
        if kw["filename"].startswith("missing"):
            raise errors.EntryNotFoundError("404")
        if kw["filename"].startswith("offline"):
            raise errors.LocalEntryNotFoundError("no connection")
        return str(tmp_path / kw["filename"])

    fake.hf_hub_download = hf_hub_download
    monkeypatch.setitem(sys.modules, "huggingface_hub", fake)
    monkeypatch.setitem(sys.modules, "huggingface_hub.errors", errors)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    download = hf_downloader("owner/repo", revision="main")
    assert download("a/b/file.bin") == (tmp_path / "file.bin").resolve()
    assert seen == {
        "repo_id": "owner/repo",
        "filename": "file.bin",
        "subfolder": "a/b",
        "repo_type": "dataset",
        "revision": "main",
    }
    with pytest.raises(FetchMissing, match="does not exist on the hub"):
        download("a/missing.bin")
    with pytest.raises(FetchOffline, match="unreachable"):
        download("a/offline.bin")


def test_cli_fetch_without_extra_exits_2(monkeypatch, tmp_path):
    _block_huggingface_hub(monkeypatch)
    args = ["data", "fetch", "--variant", "sp1024", "--train-shards", "1", "--out", str(tmp_path)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert "error:" in result.output and "pip install 'pgolf[online]'" in result.output
    assert list(tmp_path.iterdir()) == []  # failed before touching the output directory


def test_cli_fetch_with_fake_downloader(monkeypatch, tmp_path, hub):
    monkeypatch.setattr(fetch_mod, "hf_downloader", lambda repo_id, revision=None: hub)
    result = CliRunner().invoke(
        cli, ["data", "fetch", "--train-shards", "1", "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 0, result.output
    assert "fetch_done" in result.output and (tmp_path / "o" / "fineweb_train_000000.bin").is_file()
