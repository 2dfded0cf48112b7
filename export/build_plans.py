#!/usr/bin/env python3
"""Build TensorRT plans for an engine directory (the same as `egsde-rt build`).

    python export/build_plans.py engines/cat2dog --precision fp32 --max-batch 8
"""
import sys

from egsde_rt.cli import main

if __name__ == "__main__":
    sys.exit(main(["build", *sys.argv[1:]]))
