"""Explaining whole datasets: streaming, resumable, split over processes (``libragrad-fx attribute``,
``libragrad-fx bench --data``).

One concept per module:

* :mod:`.sources`: ``--data`` (an image folder, a CSV / JSONL index) as one global sample order;
* :mod:`.preprocess`: the model's evaluation transform (timm's data config, a bundled model's card);
* :mod:`.targets`: ``--target`` (predicted, a class, the label, an index column);
* :mod:`.loader`: a torch ``Dataset`` and a ``DataLoader`` over one rank's shards;
* :mod:`.shards`: the shard layout (fixed ranges of the sample order) and atomic shard files;
* :mod:`.manifest`: what an output folder holds; a different command is refused;
* :mod:`.distributed`: torchrun ranks (gloo / nccl) and how shards are dealt;
* :mod:`.pipeline`: the run: resume, deal, batches through a job, shards out, merge at the end;
* :mod:`.explainer`: one attribution method on a batch, device and precision;
* :mod:`.attribute`: the maps job; :mod:`.faithfulness`: the benchmark job;
* :mod:`.index`: ``index.csv`` merged from the shards; :mod:`.progress`: the bar and the summary.

Nothing here is imported by ``import libragrad_fx``.
"""
