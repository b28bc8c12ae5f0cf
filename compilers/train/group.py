"""Which jobs of a sweep can train together as one vmapped program.

Jobs share a compiled program when they differ only in values the program reads from its state
or its inputs rather than bakes into shapes and code:

- `seed` (initialisation, shuffles, the split and generated data: the data arrays then differ per
  model but keep their shapes),
- the optimizer's float options (`lr`, `weight_decay`, `b1`, `b2`, `eps`, `momentum`,
  `clip_norm` when every job sets it): they live in the optimizer state (`optim.HyperState`),
- `dropout` rates (non-zero; a rate of 0 removes the layer): the "hparams" collection of the model
  state (`layers.dropout_rates`),
- `data.split.seed` and a generated source's `seed`,
- what only the Python side of the loop reads: `train.early_stopping`, `train.checkpoint`,
  `plots`, `report`, `objective`, `name`, `vars` (their effects show in the keys above).

Anything else (a width, a layer, the batch size, the number of epochs, which optimizer, a dropout
rate of 0 against one above 0) changes the program, so such jobs fall into separate groups.
"""

from __future__ import annotations

import dataclasses

from dsl.spec import Item, Spec


def structure_key(spec: Spec) -> str:
    """Equal for specs that compile to the same training program."""
    from compilers.train.optim import traced_options

    opt = spec.train.optimizer
    traced = traced_options(opt)
    opt_shape = Item(opt.kind, dataclasses.replace(opt.options, **{k: 0.0 for k in traced}))
    train = dataclasses.replace(spec.train, optimizer=opt_shape, early_stopping=None, checkpoint=None)
    model = dataclasses.replace(spec.model, layers=_without_rates(spec.model.layers))
    data = spec.data
    if data.split is not None and getattr(data.split, "seed", None) is not None:
        data = dataclasses.replace(data, split=dataclasses.replace(data.split, seed=None))
    source = data.source
    if source is not None and getattr(source.options, "seed", None) is not None:
        data = dataclasses.replace(data, source=Item(source.kind, dataclasses.replace(source.options, seed=None)))
    return repr((spec.task, data, model, train))


def _without_rates(items):
    """Layers with every non-zero dropout rate replaced by one placeholder (a rate is state)."""
    out = []
    for it in items:
        o = it.options
        if it.kind == "dropout" and getattr(o, "rate", 0):
            o = dataclasses.replace(o, rate=0.5)
        elif it.kind in ("residual", "repeat"):
            o = dataclasses.replace(o, layers=tuple(_without_rates(o.layers)))
        out.append(Item(it.kind, o, it.path))
    return tuple(out)


def group_jobs(specs: list[Spec | None], max_members: int = 64) -> list[list[int]]:
    """Indices of `specs` in groups that share a program, in first-seen order; None entries (jobs
    that failed before training) are left out. Groups hold at most `max_members` jobs."""
    groups: dict[str, list[list[int]]] = {}
    order: list[list[int]] = []
    for i, spec in enumerate(specs):
        if spec is None:
            continue
        key = structure_key(spec)
        chunks = groups.setdefault(key, [])
        if not chunks or len(chunks[-1]) >= max_members:
            chunks.append([])
            order.append(chunks[-1])
        chunks[-1].append(i)
    return order
