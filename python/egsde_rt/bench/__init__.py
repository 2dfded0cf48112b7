"""``egsde-rt bench``: what users feel, measured inside the real loop.

``end_to_end``: seconds per image, images per second, first-run latency, peak memory and the
per-step phase breakdown of the eager reference and of every engine backend; ``kernels``: the
native kernels against the eager PyTorch ops they replace; ``machine``: what was measured on;
``report``: the table, the JSON record and the plot.
"""
