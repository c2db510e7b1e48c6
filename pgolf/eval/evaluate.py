"""One evaluation end to end: load → check → rebuild → score (with TTT) → report.

The clock starts before the artifact is read, so ``time_total_s`` covers load,
decompress, compile, TTT and scoring, as the challenge's 600 s limit does.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pgolf import runtime
from pgolf.config.eval import EvalConfig
from pgolf.eval.engine import run_eval
from pgolf.eval.load import build_model, check_tokenizer, load_artifact, load_val
from pgolf.eval.report import build_report, write_token_nll


def evaluate_artifact(
    artifact: str | Path,
    data_dir: str | Path,
    tokenizer: str | Path | None,
    cfg: EvalConfig,
    *,
    max_tokens: int | None = None,
    save_token_nll: str | Path | None = None,
    d: runtime.Dist | None = None,
) -> dict[str, Any]:
    """The report dict (identical on every rank); writes token NLLs on rank 0 when asked."""
    t0 = time.perf_counter()
    d = d or runtime.init(cfg.device)
    loaded = load_artifact(artifact)
    table = check_tokenizer(loaded, tokenizer)
    tokens = load_val(data_dir, table.vocab_size, cfg.window, max_tokens)
    model = build_model(loaded)
    result = run_eval(model, tokens, table, cfg, d, keep_token_nll=save_token_nll is not None)
    total = time.perf_counter() - t0
    if save_token_nll is not None and d.is_main:
        write_token_nll(save_token_nll, result.token_nll())
    return build_report(
        result=result,
        loaded=loaded,
        cfg=cfg,
        d=d,
        val_tokens=int(tokens.size),
        max_tokens=max_tokens,
        total_seconds=total,
        artifact_path=str(artifact),
    )
