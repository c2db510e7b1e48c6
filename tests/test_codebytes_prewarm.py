"""pgolf run builds the exported script in the background, so the pack stage finds it cached."""

from __future__ import annotations

import dataclasses

import pytest

from pgolf.config import resolve
from pgolf.export import bundle
from pgolf.pack import codebytes


def test_prewarm_fills_the_cache_the_pack_reads(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    run = resolve("tiny")
    proc = codebytes.prewarm(run)
    assert proc.wait(timeout=600) == 0
    assert len(list(bundle.cache_dir().glob("*.py"))) == 1
    bundle._build.cache_clear()

    def no_minify(source: str) -> str:
        raise AssertionError("minified again: the prewarmed cache was not used")

    monkeypatch.setattr(bundle, "_minify", no_minify)
    assert codebytes.measure(run).shipped_bytes > 0


def test_no_prewarm_when_the_code_bytes_are_given() -> None:
    run = resolve("tiny")
    run = dataclasses.replace(run, pack=dataclasses.replace(run.pack, code_bytes=1234))
    assert codebytes.prewarm(run) is None


def test_a_cold_cache_minifies(tmp_path, monkeypatch) -> None:
    # The counterpart of the first test: without the prewarm the build does minify.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    bundle._build.cache_clear()
    monkeypatch.setattr(bundle, "_minify", lambda s: pytest.fail("minified"))
    with pytest.raises(pytest.fail.Exception):
        codebytes.measure(resolve("tiny"))
    bundle._build.cache_clear()
