"""The evaluator: artifact loader, sliding-window scoring, score-first test-time training.

Imports pgolf.model, pgolf.data and pgolf.format only (never pgolf.train or pgolf.pack; a
test checks). Public entry points, imported from their modules so ``import pgolf.eval``
stays cheap:

* ``pgolf.eval.evaluate.evaluate_artifact(artifact, data_dir, tokenizer, cfg)`` -> report dict
* ``pgolf.eval.engine.run_eval(model, tokens, byte_table, cfg, dist)`` -> EvalResult
* ``pgolf.eval.load.load_artifact(path)`` -> LoadedArtifact (artifact or checkpoint)
* ``pgolf.eval.windows`` (window/chunk plans), ``pgolf.eval.ttt.TwoPhaseTTT``
"""
