"""The compiler: capture -> analyse -> rewrite -> verify -> report.

Everything here imports without the product surface (plots, progress bars, the benchmark):
``capture`` (torch.fx / torch.export), ``spelling`` and ``ops`` (what each op is), ``analysis``
(input dependence, streams and gates), ``rules`` and ``pruned_ops`` (the custom ops the rewrite
inserts), ``rewrite`` and ``prune`` (applying the passes' edits), ``transform`` (the driver),
``report`` and ``export``.
"""
