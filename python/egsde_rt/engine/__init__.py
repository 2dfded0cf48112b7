"""The engine directory format, the floor that ``export`` writes and ``runtime`` reads.

``format``: the manifest, its declared shape, loading and its checks (and a distilled engine's
teacher: ``teacher_identity``, ``check_teacher``); ``typed_json``: JSON read
into dataclasses, every field checked; ``confinement``: manifest names as paths inside the
directory; ``verification``: what is checked when; ``weights_file``: the weights (safetensors)
and their byte offsets; ``contracts``: the graphs' names and shapes; ``plans``: plan cache keys,
machine identity, and the verified plans a runner gets.
"""

from ..errors import EngineDirError, MissingGraphsError
from .contracts import CONTRACTS, DSE_GRAD, MAX_BATCH, SCORE, STUDENT, GraphContract
from .format import (EXPORT_FORMATS, FORMAT_VERSION, MANIFEST_FILE, EngineDir, Manifest, check_teacher, load_engine_dir,
                     teacher_identity)
from .verification import VERIFY_LEVELS, sha256_file

__all__ = ["CONTRACTS", "DSE_GRAD", "SCORE", "STUDENT", "MAX_BATCH", "GraphContract", "EXPORT_FORMATS",
           "FORMAT_VERSION", "MANIFEST_FILE", "EngineDir", "EngineDirError", "Manifest", "MissingGraphsError",
           "check_teacher", "load_engine_dir", "teacher_identity", "sha256_file", "VERIFY_LEVELS"]
