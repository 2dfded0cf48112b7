"""setup.py only drives CMake (CMakeLists.txt owns the build of the native module)."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).parent.resolve()
VERSION = re.search(r'__version__ = "([^"]+)"', (ROOT / "python/egsde_rt/_version.py").read_text()).group(1)


class CMakeExtension(Extension):
    def __init__(self, name: str, sourcedir: Path = ROOT):
        super().__init__(name, sources=[])
        self.sourcedir = os.fspath(sourcedir)


class CMakeBuild(build_ext):
    def build_extension(self, ext: CMakeExtension) -> None:
        if shutil.which("cmake") is None:
            raise RuntimeError("egsde-rt needs CMake (>= 3.18) on PATH to build its native core")
        import pybind11

        extdir = (Path.cwd() / self.get_ext_fullpath(ext.name)).parent.resolve()
        build_type = os.environ.get("EGSDE_BUILD_TYPE", "Debug" if self.debug else "Release")
        args = [
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={extdir}{os.sep}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-DCMAKE_BUILD_TYPE={build_type}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DEGSDE_VERSION={VERSION}",
        ]
        if shutil.which("ninja"):
            args.append("-GNinja")
        args += os.environ.get("CMAKE_ARGS", "").split()
        build_temp = Path(self.build_temp) / ext.name
        build_temp.mkdir(parents=True, exist_ok=True)
        # Configure afresh each time: a cached "no CUDA compiler" (or a stale one) must not
        # outlive a change of PATH. Compiled objects are still reused by the build tool.
        (build_temp / "CMakeCache.txt").unlink(missing_ok=True)
        subprocess.run(["cmake", ext.sourcedir, *args], cwd=build_temp, check=True)
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
        subprocess.run(["cmake", "--build", ".", "--parallel", jobs], cwd=build_temp, check=True)


setup(
    ext_modules=[CMakeExtension("egsde_rt._core")],
    cmdclass={"build_ext": CMakeBuild},
    zip_safe=False,
)
