"""HTTP helpers for the service under test (tests/service/test_ray.py,
tests/service/test_serve_contract.py; the fixtures ``local_ray`` and ``service`` are in
conftest.py). Every network call is bounded by a timeout."""

import urllib.request

from egsde_rt.bench.serve_load import sample_png

PORT = 8473
URL = f"http://127.0.0.1:{PORT}"


def png(seed=0, size=(32, 32)) -> bytes:
    return sample_png(size, seed)


def post(query, body, timeout=120):
    """(status, lower-case headers, body) of ``POST /translate?query``."""
    from egsde_rt.bench.serve_load import post

    return post(f"{URL}/translate?{query}", body, timeout)


def get(path) -> bytes:
    with urllib.request.urlopen(f"{URL}{path}", timeout=30) as response:
        return response.read()
