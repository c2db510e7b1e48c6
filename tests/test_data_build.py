"""`pgolf data build`: inputs, tokenizer training, shards, manifest, determinism, errors."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import zstandard
from click.testing import CliRunner

from pgolf.cli import cli
from pgolf.config import DataConfig
from pgolf.data.bpb import ByteTable
from pgolf.data.build import build
from pgolf.data.corpus import iter_documents
from pgolf.data.demo import topic_documents
from pgolf.data.shards import list_shards, read_shard
from pgolf.data.tokenizer import load_tokenizer, sha256_file
from pgolf.errors import ConfigError, DataError
from pgolf.logs import Logger


@pytest.fixture(scope="module")
def docs() -> list[str]:
    return [text for _, text in itertools.islice(topic_documents(), 60)]


def write_jsonl(path: Path, docs: list[str], compress: bool = False) -> Path:
    data = "".join(json.dumps({"text": d, "id": i}) + "\n" for i, d in enumerate(docs)).encode()
    path.write_bytes(zstandard.ZstdCompressor().compress(data) if compress else data)
    return path


def recompress(path: Path, kind: str) -> Path:
    import gzip
    import lzma

    target = path.with_name(f"{path.name}.{kind}")
    target.write_bytes((lzma if kind == "xz" else gzip).compress(path.read_bytes()))
    return target


def write_txt(path: Path, docs: list[str]) -> Path:
    # Documents may not contain blank lines in .txt; collapse them for this format.
    path.write_text("\n\n".join(d.replace("\n\n", "\n") for d in docs) + "\n")
    return path


def quiet() -> Logger:
    import io

    return Logger(stream=io.StringIO())


def cfg(**kw) -> DataConfig:
    base = {"val_docs": 10, "shard_tokens": 4096, "vocab_size": 400, "workers": 1, "chunk_docs": 7}
    return DataConfig(**{**base, **kw})


def split_stream(out: Path, split: str) -> np.ndarray:
    return np.concatenate([np.asarray(read_shard(p)) for p in list_shards(out, split)])


def files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.suffix != ".jsonl"}


def test_documents_become_bos_plus_tokens_split_val_first(tmp_path, docs, demo_tokenizer):
    src = write_jsonl(tmp_path / "in.jsonl", docs)
    out = tmp_path / "out"
    manifest = build([src], out, cfg(), demo_tokenizer, log=quiet())
    sp = load_tokenizer(demo_tokenizer)
    bos = sp.bos_id()
    want = {
        "val": [[bos, *sp.encode(d)] for d in docs[:10]],
        "train": [[bos, *sp.encode(d)] for d in docs[10:]],
    }
    table = ByteTable.from_processor(sp)
    for split, seqs in want.items():
        stream = split_stream(out, split)
        np.testing.assert_array_equal(stream, list(itertools.chain.from_iterable(seqs)))
        rec = manifest["splits"][split]
        assert rec["docs"] == len(seqs) and rec["tokens"] == stream.size
        assert rec["bytes"] == table.stream_bytes(stream)
        assert rec["text_bytes"] == sum(
            len(d.encode()) for d in (docs[:10] if split == "val" else docs[10:])
        )
    assert sp.eos_id() not in split_stream(out, "train")  # no EOS, as in the challenge
    assert manifest["tokenizer"]["sha256"] == sha256_file(demo_tokenizer)
    assert manifest["tokenizer"]["trained"] is False
    assert manifest["tokenizer"]["source"] == str(demo_tokenizer)
    assert (out / "tokenizer.model").read_bytes() == demo_tokenizer.read_bytes()
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert manifest["settings"]["val_docs"] == 10 and "workers" not in manifest["settings"]
    assert manifest["inputs"] == [{"path": str(src), "bytes": src.stat().st_size}]


def test_all_input_formats_give_the_same_shards(tmp_path, docs, demo_tokenizer):
    flat = [d.replace("\n\n", "\n") for d in docs]
    outs = {}
    for name, path in {
        "txt": write_txt(tmp_path / "a.txt", flat),
        "jsonl": write_jsonl(tmp_path / "a.jsonl", flat),
        "zst": write_jsonl(tmp_path / "a.jsonl.zst", flat, compress=True),
        "xz": recompress(write_jsonl(tmp_path / "b.jsonl", flat), "xz"),
        "gz": recompress(write_jsonl(tmp_path / "c.jsonl", flat), "gz"),
    }.items():
        build([path], tmp_path / name, cfg(), demo_tokenizer, log=quiet())
        outs[name] = {k: v for k, v in files(tmp_path / name).items() if k.endswith(".bin")}
    assert outs["txt"] == outs["jsonl"] == outs["zst"] == outs["xz"] == outs["gz"]
    assert list(iter_documents([tmp_path / "a.txt"])) == [d.strip() for d in flat]


def test_several_inputs_keep_their_order(tmp_path, docs, demo_tokenizer):
    a = write_jsonl(tmp_path / "a.jsonl", docs[:25])
    b = write_jsonl(tmp_path / "b.jsonl.zst", docs[25:], compress=True)
    build([a, b], tmp_path / "two", cfg(), demo_tokenizer, log=quiet())
    build(
        [write_jsonl(tmp_path / "all.jsonl", docs)],
        tmp_path / "one",
        cfg(),
        demo_tokenizer,
        log=quiet(),
    )
    bins = lambda d: {k: v for k, v in files(d).items() if k.endswith(".bin")}  # noqa: E731
    assert bins(tmp_path / "two") == bins(tmp_path / "one")


def test_shard_rollover_at_small_shard_size(tmp_path, docs, demo_tokenizer):
    src = write_jsonl(tmp_path / "in.jsonl", docs)
    manifest = build([src], tmp_path / "small", cfg(shard_tokens=1024), demo_tokenizer, log=quiet())
    build([src], tmp_path / "big", cfg(shard_tokens=10**8), demo_tokenizer, log=quiet())
    shards = list_shards(tmp_path / "small", "train")
    sizes = [read_shard(p).size for p in shards]
    assert len(shards) > 3 and set(sizes[:-1]) == {1024} and 0 < sizes[-1] <= 1024
    assert [s["tokens"] for s in manifest["splits"]["train"]["shards"]] == sizes
    np.testing.assert_array_equal(
        split_stream(tmp_path / "small", "train"), split_stream(tmp_path / "big", "train")
    )
    assert len(list_shards(tmp_path / "big", "train")) == 1


def test_parallel_output_equals_serial(tmp_path, docs, demo_tokenizer):
    src = write_jsonl(tmp_path / "in.jsonl.zst", docs, compress=True)
    m1 = build([src], tmp_path / "serial", cfg(workers=1), demo_tokenizer, log=quiet())
    m2 = build(
        [src], tmp_path / "parallel", cfg(workers=2, chunk_docs=3), demo_tokenizer, log=quiet()
    )
    assert m1 == m2
    assert files(tmp_path / "serial") == files(tmp_path / "parallel")


def test_trained_tokenizer_and_byte_identical_rebuild(tmp_path, docs):
    src = write_jsonl(tmp_path / "in.jsonl", docs)
    m1 = build([src], tmp_path / "a", cfg(vocab_size=384), log=quiet())
    m2 = build([src], tmp_path / "b", cfg(vocab_size=384), log=quiet())
    assert files(tmp_path / "a") == files(tmp_path / "b")  # shards, tokenizer, manifest
    tok = m1["tokenizer"]
    assert tok["trained"] is True and tok["vocab_size"] == 384 and tok["bos_id"] == 1
    settings = tok["training"]["settings"]
    assert settings["byte_fallback"] is True and settings["model_type"] == "bpe"
    # The tokenizer learns from the head of the train split, never from val documents.
    assert tok["training"]["train_docs"] == len(docs) - 10
    sp = load_tokenizer(tmp_path / "a" / "tokenizer.model")
    assert sp.vocab_size() == 384 and any(sp.is_byte(i) for i in range(sp.vocab_size()))
    assert m1 == m2


def test_rebuild_removes_stale_shards(tmp_path, docs, demo_tokenizer):
    src = write_jsonl(tmp_path / "in.jsonl", docs)
    out = tmp_path / "out"
    build([src], out, cfg(shard_tokens=1024), demo_tokenizer, log=quiet())
    build([src], out, cfg(shard_tokens=10**6), demo_tokenizer, log=quiet())
    assert [p.name for p in list_shards(out, "train")] == ["fineweb_train_000000.bin"]


# --- error paths ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("bad.jsonl", b'{"text": "ok"}\n{"text": broken\n', r"bad\.jsonl:2: bad JSON"),
        (
            "nofield.jsonl",
            b'{"text": "ok"}\n\n{"body": "x"}\n',
            r"nofield\.jsonl:3: field 'text' is missing",
        ),
        ("num.jsonl", b'{"text": 5}\n', r"num\.jsonl:1: field 'text' is a int, not a string"),
        ("list.jsonl", b'["text"]\n', r"list\.jsonl:1: expected a JSON object"),
        ("latin.jsonl", b'{"text": "caf\xe9"}\n', r"latin\.jsonl:1: line is not valid UTF-8"),
        ("latin.txt", b"caf\xe9\n", r"latin\.txt: not valid UTF-8 at byte 3"),
        (
            "notzstd.jsonl.zst",
            b"plain text, not zstd",
            r"notzstd\.jsonl\.zst: not a valid zstd file",
        ),
        ("notxz.jsonl.xz", b"plain text, not xz", r"notxz\.jsonl\.xz: not a valid xz file"),
        ("notgz.jsonl.gz", b"plain text, not gzip", r"notgz\.jsonl\.gz: not a valid gzip file"),
        ("doc.csv", b"a,b\n", r"doc\.csv: unknown input type; expected a file ending in"),
    ],
)
def test_bad_inputs_name_file_and_expectation(tmp_path, demo_tokenizer, name, content, match):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError, match=match):
        build([path], tmp_path / "out", cfg(val_docs=1), demo_tokenizer, log=quiet())


def test_bad_json_line_reported_from_a_worker(tmp_path, docs, demo_tokenizer):
    path = write_jsonl(tmp_path / "w.jsonl", docs)
    with path.open("ab") as f:
        f.write(b"{not json}\n")
    with pytest.raises(DataError, match=rf"w\.jsonl:{len(docs) + 1}: bad JSON"):
        build([path], tmp_path / "out", cfg(workers=2), demo_tokenizer, log=quiet())


def test_missing_input_and_no_input(tmp_path, demo_tokenizer):
    with pytest.raises(DataError, match=r"missing\.jsonl: input file not found"):
        build([tmp_path / "missing.jsonl"], tmp_path / "out", cfg(), demo_tokenizer, log=quiet())
    with pytest.raises(DataError, match="no input files"):
        build([], tmp_path / "out", cfg(), demo_tokenizer, log=quiet())


def test_val_docs_leaving_no_train_docs(tmp_path, docs, demo_tokenizer):
    src = write_jsonl(tmp_path / "in.jsonl", docs[:5])
    with pytest.raises(DataError, match="5 documents, and val_docs=10 leaves none for train"):
        build([src], tmp_path / "out", cfg(), demo_tokenizer, log=quiet())
    # Without a tokenizer the build trains one on train documents: the error names the cause
    # (the val split took them all), not SentencePiece's "no sentences".
    with pytest.raises(DataError, match="no documents after the first val_docs=10"):
        build([src], tmp_path / "out2", cfg(), None, log=quiet())


def test_bad_tokenizer_files(tmp_path, docs):
    src = write_jsonl(tmp_path / "in.jsonl", docs)
    with pytest.raises(DataError, match=r"nope\.model: tokenizer model not found"):
        build([src], tmp_path / "out", cfg(), tmp_path / "nope.model", log=quiet())
    junk = tmp_path / "junk.model"
    junk.write_bytes(b"not a model")
    with pytest.raises(DataError, match=r"junk\.model: not a SentencePiece model"):
        build([src], tmp_path / "out", cfg(), junk, log=quiet())


def test_config_rejects_bad_data_settings():
    with pytest.raises(ValueError, match="vocab_size must be in"):
        DataConfig(vocab_size=100)
    with pytest.raises(ValueError, match="shard_tokens"):
        DataConfig(shard_tokens=10)
    with pytest.raises(ValueError, match="prefix"):
        DataConfig(prefix="a/b")


# --- the CLI -------------------------------------------------------------------------------


def test_cli_build_flags_override_config(tmp_path, docs, demo_tokenizer):
    src = write_jsonl(tmp_path / "in.jsonl", docs)
    out = tmp_path / "out"
    args = [
        "data",
        "build",
        "--input",
        str(src),
        "--out",
        str(out),
        "--tokenizer",
        str(demo_tokenizer),
    ]
    args += [
        "--set",
        "data.val_docs=3",
        "--set",
        "data.shard_tokens=2048",
        "--val-docs",
        "12",
        "--workers",
        "1",
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "split:val docs:12" in result.output and "split:train docs:48" in result.output
    config = json.loads((out / "config.json").read_text())
    assert config["data"]["val_docs"] == 12 and config["data"]["shard_tokens"] == 2048
    assert json.loads((out / "manifest.json").read_text())["splits"]["val"]["docs"] == 12
    assert (out / "build_log.jsonl").read_text().count("\n") >= 3


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (
            ["--set", "data.val_dcos=3"],
            "unknown config key 'data.val_dcos'; did you mean 'val_docs'",
        ),
        (["--shard-tokens", "5"], "invalid data config: shard_tokens must be >= 1024"),
        (["--input", "missing.jsonl"], r"missing\.jsonl: input file not found"),
    ],
)
def test_cli_errors_exit_2_with_one_line(tmp_path, docs, demo_tokenizer, extra, match):
    import re

    src = write_jsonl(tmp_path / "in.jsonl", docs)
    inputs = [] if "--input" in extra else ["--input", str(src)]
    args = [
        "data",
        "build",
        *inputs,
        "--out",
        str(tmp_path / "o"),
        "--tokenizer",
        str(demo_tokenizer),
    ]
    result = CliRunner().invoke(cli, args + extra)
    assert result.exit_code == 2
    assert re.search(match, result.output), result.output
    assert "Traceback" not in result.output


def test_cli_needs_input_or_demo(tmp_path):
    result = CliRunner().invoke(cli, ["data", "build", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "error: no input" in result.output
    result = CliRunner().invoke(
        cli, ["data", "build", "--demo", "--input", "x.txt", "--out", str(tmp_path)]
    )
    assert result.exit_code == 2 and "--demo builds the embedded corpus" in result.output


def test_config_error_type_is_config_error():
    from pgolf.config import resolve
    from pgolf.data.cli import _with_flags

    with pytest.raises(ConfigError):
        _with_flags(resolve(), val_docs=-1)


def test_tokenizer_training_errors(tmp_path, docs):
    from pgolf.data.spm_train import train_tokenizer

    with pytest.raises(DataError, match="vocab_size 300 is too small"):
        train_tokenizer(docs, tmp_path / "t.model", 300, 16_384)
    with pytest.raises(DataError, match="tokenizer training failed .* smaller --vocab-size"):
        train_tokenizer(["a tiny text", "another one"], tmp_path / "t.model", 60_000, 16_384)
    with pytest.raises(DataError, match="no non-empty documents|tokenizer training failed"):
        train_tokenizer(["", "   "], tmp_path / "t.model", 512, 16_384)
    assert not (tmp_path / "t.model").exists()


def test_tokenizer_without_bos_is_refused(tmp_path, docs):
    import io as _io

    import sentencepiece as spm

    model = _io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(docs), model_writer=model, vocab_size=400, bos_id=-1, minloglevel=2
    )
    path = tmp_path / "nobos.model"
    path.write_bytes(model.getvalue())
    src = write_jsonl(tmp_path / "in.jsonl", docs)
    with pytest.raises(DataError, match="tokenizer has no BOS token"):
        build([src], tmp_path / "out", cfg(), path, log=quiet())
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_txt_blocks_and_line_numbers(tmp_path):
    from pgolf.data.corpus import iter_records

    path = tmp_path / "a.txt"
    path.write_text("\n\nfirst doc\nline two\n  \n\n\nsecond\r\n\r\nthird\n")
    records = list(iter_records([path]))
    assert [(r.line, r.raw) for r in records] == [
        (3, "first doc\nline two"),
        (8, "second"),
        (10, "third"),
    ]
