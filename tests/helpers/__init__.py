"""Helpers shared by test modules (fixtures stay in tests/conftest.py): engine directories
(``engines``), native-core buffers and the CUDA skip (``native``), the samplers' keyword
front-ends (``sampling``) and the service's HTTP helpers (``serve``)."""
