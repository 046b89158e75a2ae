"""The compiler: capture -> analyse -> rewrite -> verify -> report.

Everything here imports without the product surface (plots, progress bars, the benchmark):
``capture`` (torch.fx / torch.export; ``functions`` keeps custom autograd Functions whole),
``ops`` (the op registry: what each op is) and ``spelling`` (which entry a node is), ``analysis``
(input dependence, streams and gates), ``rules``, ``pruned_ops`` and ``dissent`` (the custom ops the rewrite
inserts), ``rewrite`` and ``prune`` (applying the passes' edits), ``transform`` (the driver),
``verify`` (local completeness, op by op), ``report`` and ``export``.
"""
