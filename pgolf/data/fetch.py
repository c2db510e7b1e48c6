"""``pgolf data fetch``: the challenge's published shards and tokenizer, in our layout.

The challenge publishes its data on the Hugging Face hub, dataset repo
``willdepueoai/parameter-golf`` (the layout its ``data/cached_challenge_fineweb.py`` reads):

    {root}/datasets/fineweb10B_sp1024/fineweb_val_000000.bin
    {root}/datasets/fineweb10B_sp1024/fineweb_train_000000.bin ...
    {root}/tokenizers/fineweb_1024_bpe.model

with ``root = "datasets"`` today (earlier exports used ``matched_10B_docs2m_seed1337``).
Repo, root and revision are options, so a moved export needs no code change.

Downloads go through a ``Downloader`` (``remote path -> local file``) so tests can inject a
fake one: this machine, like CI, has no network. The default one needs the optional
``huggingface_hub`` (``pip install 'pgolf[online]'``) and fails fast with a clear message
when it is missing or the hub cannot be reached.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pgolf.data.build import TOKENIZER_NAME, json_dumps
from pgolf.data.shards import read_header, shard_name
from pgolf.data.tokenizer import load_tokenizer, sha256_file
from pgolf.errors import DataError
from pgolf.io import atomic_write_text

DEFAULT_REPO_ID = "willdepueoai/parameter-golf"
DEFAULT_REMOTE_ROOT = "datasets"
FETCH_RECORD = "fetch.json"


@dataclass(frozen=True)
class Variant:
    dataset_dir: str
    tokenizer_file: str
    val_shards: int = 1


# byte260 is left out: its tokenizer is a JSON byte table, not a SentencePiece model.
VARIANTS = {
    "sp512": Variant("fineweb10B_sp512", "fineweb_512_bpe.model"),
    "sp1024": Variant("fineweb10B_sp1024", "fineweb_1024_bpe.model"),
    "sp2048": Variant("fineweb10B_sp2048", "fineweb_2048_bpe.model"),
    "sp4096": Variant("fineweb10B_sp4096", "fineweb_4096_bpe.model"),
}

# (remote path inside the repo) -> local path of the downloaded file (may be a cache path).
Downloader = Callable[[str], Path]


class FetchOffline(DataError):
    """The hub cannot be reached (no network, HF_HUB_OFFLINE, DNS, timeout)."""


class FetchMissing(DataError):
    """The hub answered, but the file is not there."""


def offline_message(what: str, detail: str) -> str:
    return (
        f"cannot download {what}: the Hugging Face hub is unreachable ({detail}). "
        "`pgolf data fetch` needs network access; offline, build shards from local text "
        "with `pgolf data build --input FILE... --tokenizer MODEL` instead"
    )


def hf_downloader(repo_id: str, revision: str | None = None) -> Downloader:
    """The real downloader (huggingface_hub); raises DataError when the extra is missing."""
    try:
        import huggingface_hub
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError
    except ImportError:
        raise DataError(
            "`pgolf data fetch` needs the optional huggingface_hub package: "
            "pip install 'pgolf[online]'"
        ) from None
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise FetchOffline(offline_message(repo_id, "HF_HUB_OFFLINE is set"))

    def download(remote: str) -> Path:
        folder, _, name = remote.rpartition("/")
        try:
            local = huggingface_hub.hf_hub_download(
                repo_id=repo_id,
                filename=name,
                subfolder=folder or None,
                repo_type="dataset",
                revision=revision,
            )
        except EntryNotFoundError:
            raise FetchMissing(f"{repo_id}: {remote} does not exist on the hub") from None
        except (LocalEntryNotFoundError, OSError) as e:
            # LocalEntryNotFoundError is what the hub client raises when it could not connect
            # and the file is not cached; OSError covers requests' ConnectionError and DNS.
            raise FetchOffline(offline_message(f"{repo_id}/{remote}", type(e).__name__)) from None
        return Path(local).resolve()

    return download


def _place(source: Path, target: Path) -> None:
    """Hard-link the cached file into place (no second copy of 200 MB shards), else copy."""
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def _get(download: Downloader, remote: str, target: Path) -> dict[str, Any]:
    try:
        source = Path(download(remote))
    except DataError:
        raise
    except (ConnectionError, TimeoutError) as e:
        raise FetchOffline(offline_message(remote, f"{type(e).__name__}: {e}")) from None
    if not source.is_file():
        raise DataError(f"{remote}: the downloader returned {source}, which is not a file")
    _place(source, target)
    return {"remote": remote, "name": target.name, "bytes": target.stat().st_size}


def fetch(
    variant: str,
    train_shards: int,
    out_dir: str | Path,
    *,
    downloader: Downloader | None = None,
    repo_id: str = DEFAULT_REPO_ID,
    remote_root: str = DEFAULT_REMOTE_ROOT,
    revision: str | None = None,
) -> dict[str, Any]:
    """Download the tokenizer, val shards and ``train_shards`` train shards into ``out_dir``."""
    if variant not in VARIANTS:
        raise DataError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    if train_shards < 0:
        raise DataError(f"--train-shards must be >= 0, got {train_shards}")
    spec = VARIANTS[variant]
    download = downloader or hf_downloader(repo_id, revision)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    root = f"{remote_root.strip('/')}/" if remote_root.strip("/") else ""
    # The tokenizer first: it is small, so an offline machine fails in a second, not after
    # a partial shard.
    files = [_get(download, f"{root}tokenizers/{spec.tokenizer_file}", out_dir / TOKENIZER_NAME)]
    load_tokenizer(out_dir / TOKENIZER_NAME)
    wanted = [("val", i) for i in range(spec.val_shards)]
    wanted += [("train", i) for i in range(train_shards)]
    for split, index in wanted:
        name = shard_name("fineweb", split, index)
        remote = f"{root}datasets/{spec.dataset_dir}/{name}"
        try:
            files.append(_get(download, remote, out_dir / name))
        except FetchMissing:
            if split == "train":
                raise DataError(
                    f"{repo_id}: {variant} has only {index} train shards, asked for "
                    f"{train_shards}; lower --train-shards"
                ) from None
            raise
        files[-1]["tokens"] = read_header(out_dir / name)  # a truncated download fails here
    record = {
        "repo_id": repo_id,
        "revision": revision,
        "variant": variant,
        "tokenizer": {
            "path": TOKENIZER_NAME,
            "source": spec.tokenizer_file,
            "sha256": sha256_file(out_dir / TOKENIZER_NAME),
        },
        "files": files,
    }
    atomic_write_text(out_dir / FETCH_RECORD, json_dumps(record))
    return record
