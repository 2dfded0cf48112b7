"""The embedded demo: two procedural domains (discs become squares), networks trained on them
with the package's own commands and shipped in ``weights/``, and ``egsde-rt demo``.

* ``data``: the images of either domain by index and seed, and each source's paired true target;
* ``networks``: the architectures of the shipped score model and DSE, and the independent judge;
* ``command``: the cached demo engine, the quality metrics, the held-out evaluation and the grid.
"""

from .command import (DEMO_FAST, DEMO_IMAGE_SEED, DEMO_SETTINGS, GRID_SCALE, QUALITY_SPLITS, demo_methods,
                      engine_dir, format_table, judge_features, load_judge, quality_metrics,
                      reference_target_statistics, run_demo, weights_path)
from .data import DOMAINS, domain_batch, paired_target
from .networks import DEMO_DSE_CONFIG, DEMO_SCORE_CONFIG, JudgeNet

__all__ = ["DEMO_DSE_CONFIG", "DEMO_FAST", "DEMO_IMAGE_SEED", "DEMO_SCORE_CONFIG", "DEMO_SETTINGS", "DOMAINS",
           "GRID_SCALE", "JudgeNet", "QUALITY_SPLITS", "demo_methods", "domain_batch", "engine_dir", "format_table",
           "judge_features", "load_judge", "paired_target", "quality_metrics", "reference_target_statistics",
           "run_demo", "weights_path"]
