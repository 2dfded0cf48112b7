#!/usr/bin/env python3
"""Export a preset's checkpoints to an engine directory (the same as `egsde-rt export`).

    python export/export_engine.py --preset cat2dog --score-ckpt afhq_dog_4m.pt \
        --dse-ckpt cat2dog_dse.pt --out engines/cat2dog
"""
import sys

from egsde_rt.cli import main

if __name__ == "__main__":
    sys.exit(main(["export", *sys.argv[1:]]))
