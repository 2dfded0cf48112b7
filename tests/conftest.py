"""Shared fixtures: the reference goldens (../shared/reference) and models loaded from them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TEST_DATA = ROOT / "tests" / "data"
REFERENCE_DIR = Path(os.environ.get("EGSDE_REFERENCE_DIR", ROOT.parent / "shared" / "reference"))
SAMPLES_DIR = REFERENCE_DIR.parent / "samples" / "afhq_cat"
# Translations bit for bit reproducible across runs: a fixed thread count by default (with "auto", the
# team follows the machine's load, which changes the float rounding; tests of that unset this).
os.environ.setdefault("EGSDE_RT_THREADS", str(len(os.sched_getaffinity(0))))
# No Ray usage statistics from the suite. ray.init() turns them off for the local instance it starts,
# but a driver that joins a cluster (tests/service/test_cluster_faults.py) keeps them on, and then
# Ray Data's usage-metrics poller thread runs for the rest of the session: every 10 s it queries
# Prometheus (absent) and formats the failure's traceback, whose ast.parse races the main thread's
# (CPython 3.11.7 shares the AST builder's depth count between threads: "SystemError: AST constructor
# recursion depth mismatch", seen in the service tests).
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


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


TINY_M = 12


def tiny_models(seed: int = 0):
    """A tiny ADM score UNet and DSE (32x32) with random weights, for export and runtime tests."""
    from egsde_rt.models import ADMUNet, DSE

    torch.manual_seed(seed)
    unet = ADMUNet(image_size=32, num_channels=32, num_res_blocks=1, channel_mult="1,2", attention_resolutions="16",
                   num_head_channels=16, learn_sigma=True, use_scale_shift_norm=True, resblock_updown=True)
    dse = DSE(image_size=32, num_class=2, classifier_width=32, classifier_depth=1,
              classifier_attention_resolutions="8", channel_mult="1,2", num_head_channels=32)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for model in (unet, dse):
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return unet.eval(), dse.eval()


@pytest.fixture(scope="session")
def tiny_engine(tmp_path_factory):
    """(engine_dir, unet, dse): the tiny models exported once per test session (s1 = cosine)."""
    pytest.importorskip("onnxruntime")
    from egsde_rt.export import export_engine
    from egsde_rt.method.settings import EGSDESettings

    unet, dse = tiny_models()
    path = tmp_path_factory.mktemp("engines") / "tiny"
    export_engine(unet, dse, path, image_size=32, settings=EGSDESettings(M=TINY_M, ls=500.0, li=2.0, down_N=8),
                  log=lambda msg: None)
    return path, unet, dse


@pytest.fixture(scope="session")
def tiny_torch_engine(tmp_path_factory):
    """(engine_dir, unet, dse): the tiny models exported torch-only (no ONNX graphs: seconds)."""
    from egsde_rt.export import export_engine
    from egsde_rt.method.settings import EGSDESettings

    unet, dse = tiny_models()
    path = tmp_path_factory.mktemp("engines") / "tiny-torch"
    export_engine(unet, dse, path, image_size=32, settings=EGSDESettings(M=TINY_M, ls=500.0, li=2.0, down_N=8),
                  formats=("torch",), log=lambda msg: None)
    return path, unet, dse


# --- the service (tests/service/test_ray.py, test_serve_contract.py; helpers in helpers/serve.py) ----

@pytest.fixture(scope="module")
def local_ray(request):
    """A small local Ray instance (2 CPUs, no dashboard) for one test module, its Serve proxy
    guarded (``serve_proxy``) with the module's ``PROXY_GUARD`` limits (default: a service's
    default limits on loopback), as ``serve.start`` guards the Ray it starts."""
    import ray

    from egsde_rt.service.deployment import LOOPBACK_HOSTS, ServeConfig, proxy_guard

    limits = getattr(request.module, "PROXY_GUARD", ServeConfig("", allowed_hosts=LOOPBACK_HOSTS))
    os.environ.update(proxy_guard(limits))
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)  # never another cluster
    yield
    from ray import serve

    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="module")
def service(local_ray, tiny_engine):
    """The service on loopback (helpers.serve.PORT) with the tiny engine, for one test module."""
    from helpers.serve import PORT

    from egsde_rt.service import deployment as service_module
    from egsde_rt.bench.serve_load import wait_healthy

    # A queue of 8: enough that requests the router has not yet placed on the replica (it probes
    # the replica's load first) are not refused while the replica has room. At most 48 network
    # evaluations a request: the fuzzers send any setting, each answered in seconds.
    config = service_module.ServeConfig(str(tiny_engine[0]), max_batch_size=4, batch_wait_ms=300,
                                        max_queued_requests=8, cpus_per_replica=0.5, max_updates=48)
    service_module.start(config, port=PORT)
    wait_healthy(PORT)
    yield config
    from ray import serve

    serve.delete(service_module.APP_NAME)
