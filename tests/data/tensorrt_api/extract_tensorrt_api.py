"""Regenerate a fixture of this directory: the names one TensorRT Python API version exports.

Not run by the tests (they read the committed JSON; nothing downloads at test time). Usage, on
Linux x86-64 with the Python the wheel is built for, ``gcc``, ``nm`` and ``readelf``::

    pip download --no-deps -d /tmp/trtwheels tensorrt-cu13-bindings==11.4.0.106
    python tests/data/tensorrt_api/extract_tensorrt_api.py /tmp/trtwheels/tensorrt_cu13_bindings-11.4.0.106-*.whl

writes ``tests/data/tensorrt_api/11.4.0.106.json``: the version and the sorted names the
``tensorrt`` module exports, ``Name`` for each public module attribute and ``Name.member`` for
each public attribute of a class or enum (inherited ones included, as ``trt.X.y`` resolves them).

How: the bindings wheel (no ``.pyi`` stubs ship with it) is unpacked into a temporary directory and
its package imported in a child process, so the names are the ones pybind11 registered, read
with ``dir()``, not guessed from the binary's strings. The compiled module links against the
TensorRT libraries (``libnvinfer.so.N`` and two more), which are not in the bindings wheel and need
a GPU driver; they are replaced by stub libraries exporting every TensorRT function the module
imports (``nm -D --undefined-only``) as a function returning 0. Importing only registers the
classes; no stub is called before ``dir()`` is read. As a cross-check, every name found must also
occur in the module's binary as the end of a NUL-terminated string (the linker merges a string
into the tail of a longer one: "ELU" may be stored only as the end of "RELU"), or in the
package's ``__init__.py`` (which adds a few Python helpers).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
# the C/C++ runtime and Python provide the module's other undefined symbols
_NOT_TENSORRT = re.compile(r"^(_?Py|_ITM_|_Z|__)|@")

_DUMP = r"""
import inspect, json, sys
import tensorrt_bindings as trt
names = set()
for name, value in vars(trt).items():
    if name.startswith("_") or inspect.ismodule(value):
        continue
    names.add(name)
    if inspect.isclass(value):
        names.update(f"{name}.{member}" for member in dir(value) if not member.startswith("_"))
json.dump({"version": trt.__version__, "names": sorted(names)}, sys.stdout)
"""


def _run(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def _stub_libraries(module: Path, stub_dir: Path) -> None:
    """Stub ``libnv*.so.N`` libraries defining the TensorRT functions ``module`` imports."""
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(libnv[^\]]+)\]", _run("readelf", "-d", str(module)))
    symbols = [line.split()[-1] for line in _run("nm", "-D", "--undefined-only", str(module)).splitlines()
               if line.split()[0] == "U" and not _NOT_TENSORRT.search(line.split()[-1])]
    source = stub_dir / "stub.c"
    source.write_text("".join(f"void *{symbol}(void) {{ return 0; }}\n" for symbol in symbols))
    for soname in needed:
        subprocess.run(["gcc", "-shared", "-fPIC", f"-Wl,-soname,{soname}", "-o", str(stub_dir / soname),
                        str(source)], check=True)


def extract(wheel: Path) -> dict:
    """{"version", "names", "source"} of the TensorRT bindings wheel ``wheel``."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(root)
        module = next(root.glob("tensorrt_bindings/tensorrt*.so"))
        stub_dir = root / "stubs"
        stub_dir.mkdir()
        _stub_libraries(module, stub_dir)
        env = {**os.environ, "LD_LIBRARY_PATH": str(stub_dir), "PYTHONPATH": str(root)}
        found = json.loads(subprocess.run([sys.executable, "-c", _DUMP], check=True, capture_output=True,
                                          text=True, env=env, cwd=root).stdout)
        binary = module.read_bytes()
        init = (module.parent / "__init__.py").read_text()  # adds a few names (nptype, DataType.itemsize)
        missing = [n for n in found["names"] if f"{n.rsplit('.', 1)[-1]}\0".encode() not in binary
                   and not re.search(rf"\b{n.rsplit('.', 1)[-1]}\b", init)]
        if missing:
            raise SystemExit(f"names not among the binary's strings (extraction went wrong?): {missing[:20]}")
    return {"version": found["version"], "source": wheel.name, "names": found["names"]}


def main(argv: list[str]) -> None:
    for wheel in map(Path, argv):
        api = extract(wheel)
        out = HERE / f"{api['version']}.json"
        out.write_text(json.dumps(api, indent=0) + "\n")
        print(f"{out}: {len(api['names'])} names")


if __name__ == "__main__":
    main(sys.argv[1:])
