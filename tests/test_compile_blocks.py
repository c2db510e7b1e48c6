"""compile_scope="blocks": every layer and both block orders reuse one graph per block variant.

Dynamo runs here with a graph-recording backend (no Inductor codegen on CPU): what is tested is
which graphs Dynamo traces and that the compiled model computes what the eager one does.
"""

from __future__ import annotations

import torch

from pgolf.config import resolve
from pgolf.model import GPT


def _model(preset: str) -> GPT:
    torch.manual_seed(0)
    return GPT(resolve(preset).model)


def _loss_and_grads(model: GPT, ids: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss = model(ids[:, :-1], ids[:, 1:])
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


def _recording_backend(graphs: list[torch.fx.GraphModule]):
    def backend(gm: torch.fx.GraphModule, example_inputs):
        graphs.append(gm)
        return gm.forward

    return backend


def test_blocks_share_graphs_across_layers_and_orders() -> None:
    torch._dynamo.reset()
    model = _model("record-tiny")
    eager = _model("record-tiny")
    cfg = model.cfg
    graphs: list[torch.fx.GraphModule] = []
    model.compile_blocks(backend=_recording_backend(graphs))
    ids = torch.randint(0, cfg.vocab_size, (2, 33))
    for recur in (False, True):
        model.set_recurrence(recur)
        eager.set_recurrence(recur)
        got, got_grads = _loss_and_grads(model, ids)
        want, want_grads = _loss_and_grads(eager, ids)
        assert torch.equal(got, want)
        assert all(torch.equal(a, b) for a, b in zip(got_grads, want_grads, strict=True))
    # record-tiny: 4 layers, parallel residuals from layer 2, XSA everywhere, the middle pair
    # recurring: 12 block runs over both orders, but two block structures.
    variants = {(b.parallel, b.attn.use_xsa) for b in model.blocks}
    assert len(variants) == 2
    assert len(model.recur_order) + len(model.plain_order) == 12
    # One graph per block variant, one more for the first block (its x is x0, an aliasing
    # Dynamo guards on), one for the embedding, one for the head.
    assert len(graphs) == len(variants) + 1 + 2


def test_ln_scale_is_a_non_persistent_tensor_so_layers_share_a_graph() -> None:
    model = _model("record-tiny")
    scales = [float(b.ln_scale) for b in model.blocks]
    assert scales == [float(torch.tensor((i + 1) ** -0.5)) for i in range(len(scales))]
    assert not any(k.endswith("ln_scale") for k in model.state_dict())


def _subgraph_calls(gm: torch.fx.GraphModule) -> list[str]:
    """The body each invoke_subgraph call of a Dynamo graph runs (its get_attr target)."""
    return [
        n.args[0].target
        for n in gm.graph.nodes
        if n.op == "call_function" and "invoke_subgraph" in str(n.target)
    ]


def test_nested_blocks_stamp_one_body_per_block_structure() -> None:
    torch._dynamo.reset()
    model = _model("record-tiny")
    model.nest_blocks()
    graphs: list[torch.fx.GraphModule] = []
    compiled = torch.compile(
        model, fullgraph=True, dynamic=False, backend=_recording_backend(graphs)
    )
    ids = torch.randint(0, model.cfg.vocab_size, (2, 33))
    variants = {(b.parallel, b.attn.use_xsa) for b in model.blocks}
    for recur in (False, True):
        model.set_recurrence(recur)
        compiled(ids[:, :-1], ids[:, 1:])
        calls = _subgraph_calls(graphs[-1])
        order = model.recur_order if recur else model.plain_order
        assert len(calls) == len(order)  # one region call per block run, inside one graph
        assert len(set(calls)) == len(variants)  # but one body per block structure


def test_nested_blocks_compute_what_the_eager_model_does() -> None:
    torch._dynamo.reset()
    model, eager = _model("record-tiny"), _model("record-tiny")
    model.nest_blocks()
    compiled = torch.compile(model, fullgraph=True, dynamic=False, backend="aot_eager")
    ids = torch.randint(0, model.cfg.vocab_size, (2, 33))
    for recur in (False, True):
        model.set_recurrence(recur)
        eager.set_recurrence(recur)
        model.zero_grad(set_to_none=True)
        got = compiled(ids[:, :-1], ids[:, 1:])
        got.backward()
        got_grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        want, want_grads = _loss_and_grads(eager, ids)
        torch.testing.assert_close(got.detach(), want, rtol=0, atol=1e-6)
        for a, b in zip(got_grads, want_grads, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
