"""The embedded demo: two procedural domains (discs become squares), networks trained on them
with the package's own commands and shipped in ``weights/``, and ``egsde-rt demo``.

* ``data``: the images of either domain by index and seed, and each source's paired true target;
* ``networks``: the architectures of the shipped score model and DSE, and the independent judge;
* ``quality``: the tuning and held-out splits, the metrics and the evaluation of a setting on a split;
* ``command``: the cached demo engine, the compared methods, the grid and the held-out evaluation.
"""

from .command import (DEMO_FAST, DEMO_IMAGE_SEED, DEMO_SETTINGS, DISTILLED, DISTILLED_UPDATES, GRID_SCALE, cache_root,
                      demo_methods, distilled_engine_dir, engine_dir, format_eval, format_table, run_demo, run_eval)
from .data import DOMAINS, domain_batch, paired_target
from .networks import DEMO_DSE_CONFIG, DEMO_SCORE_CONFIG, JudgeNet, load_judge, weights_path
from .scoring import (QUALITY_SPLITS, SplitEvaluator, judge_features, quality_metrics, reference_target_statistics,
                      setting_label)

__all__ = ["DEMO_DSE_CONFIG", "DEMO_FAST", "DISTILLED", "DISTILLED_UPDATES", "distilled_engine_dir",
           "DEMO_IMAGE_SEED", "DEMO_SCORE_CONFIG", "DEMO_SETTINGS", "DOMAINS",
           "GRID_SCALE", "JudgeNet", "QUALITY_SPLITS", "SplitEvaluator", "cache_root", "demo_methods", "domain_batch",
           "engine_dir", "format_eval", "format_table", "judge_features", "load_judge", "paired_target",
           "quality_metrics", "reference_target_statistics", "run_demo", "run_eval", "setting_label", "weights_path"]
