"""Shared fixtures: the reference goldens (../shared/reference) and models loaded from them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_DIR = Path(os.environ.get("EGSDE_REFERENCE_DIR", ROOT.parent / "shared" / "reference"))
SAMPLES_DIR = REFERENCE_DIR.parent / "samples" / "afhq_cat"


def reference_file(name: str) -> Path:
    path = REFERENCE_DIR / name
    if not path.is_file():
        pytest.skip(f"reference file {path} is absent (set EGSDE_REFERENCE_DIR or check out ../shared)")
    return path


def load_golden(name: str) -> dict:
    with np.load(reference_file(f"{name}.npz")) as data:
        return {k: data[k] for k in data.files}


def golden_config(golden: dict, key: str = "config") -> dict:
    return json.loads(str(golden[key]))


def golden_weights(golden: dict) -> dict[str, torch.Tensor]:
    return {k[2:]: torch.from_numpy(v.astype(np.float32)) for k, v in golden.items() if k.startswith("w/")}


def golden_model(name: str):
    """(model, golden) for golden_adm_unet_small / golden_dse_small / golden_ddpm_small."""
    from egsde_rt.models import ADMUNet, DDPMUNet, DSE

    golden = load_golden(name)
    config = golden_config(golden)
    model = {"golden_adm_unet_small": lambda: ADMUNet(**config),
             "golden_dse_small": lambda: DSE(**config),
             "golden_ddpm_small": lambda: DDPMUNet(config)}[name]()
    model.load_state_dict(golden_weights(golden), strict=True)
    return model.eval(), golden


@pytest.fixture(scope="session")
def small_unet():
    return golden_model("golden_adm_unet_small")[0]


@pytest.fixture(scope="session")
def small_dse():
    return golden_model("golden_dse_small")[0]


@pytest.fixture(scope="session")
def state_dict_specs() -> dict:
    return json.loads(reference_file("state_dict_specs.json").read_text())


@pytest.fixture()
def rng() -> torch.Generator:
    return torch.Generator().manual_seed(0)
