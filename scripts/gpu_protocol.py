"""The GPU protocol: everything a GPU lease must tell us, in one command planned to end within 8
minutes, in tiers ordered by what we most need to know (``bash scripts/gpu_protocol.sh``).

A lease is 15 minutes of device time (the machine's start included) and brings back at most 8
files from ``$OUT``; a command stopped at its limit returns what is under ``$OUT`` then. So:

* each tier has a time limit; their sum, the planned budget, is at most ``BUDGET_LIMIT_S``
  (printed in the summary). A step runs with what is left of its tier (and its own limit); a
  step that runs out of time ends its tier as ``timed_out`` and the next tier starts;
* after every tier (and before it, marked ``running``) the protocol rewrites exactly two files
  under ``$OUT``: ``gpu-protocol.tar.gz`` (every log, JSON record and plot so far) and
  ``summary.json`` (tiers run, passed, failed, timed out or skipped with the reason; the
  headline numbers; the planned budget). Engines and other large files stay in ``/tmp``.

Tiers (limits in ``TIER_LIMITS_S``):
1. correctness: build the package with its CUDA kernels for sm_90 against the machine's own
   PyTorch (``pip install --no-build-isolation --no-deps -e .``); the reference goldens the GPU
   tests read (``EGSDE_REFERENCE_DIR``, default ``.reference``: copy ``../shared/reference``
   there and carry it); the GPU tests (the CUDA kernels against the CPU twins, the native CUDA
   loop against the CPU loop, captured against uncaptured steps bit for bit, device memory over
   200 runs). A GPU test that skips fails the step (``gpu_test_verdict``).
2. headline: cat2dog 256x256 with random non-degenerate weights, exported torch-only to /tmp in
   seconds; the kernel benchmark; ``egsde-rt bench`` at batch 1 and 8: the eager fp32 reference
   against the torch backend on the captured path, fp32 and bf16, 20 updates timed and
   extrapolated to the schedule's 500 (labelled so), the per-update phases from separate
   uncaptured runs.
3. sanitizer: ``compute-sanitizer`` memcheck and initcheck on the kernel tests (each tensor its
   own cudaMalloc, so out-of-bounds accesses are seen); after the benchmarks, since a sanitizer
   run is the likeliest to hang or crawl. Where the sanitizer cannot run (gVisor machines
   refuse the device) the step is skipped with its message.
4. compiled, with what is left: TensorRT where the machine has it
   (``tests/engine/test_tensorrt_gpu.py``: plans of the tiny engine in every precision, captured
   against uncaptured; recorded as skipped, "tensorrt is not installed", where it has not); the
   compiled runner's captured run against its uncaptured run (tiny engine), then AOTInductor plans
   of cat2dog for CUDA and their bench; ONNX Runtime CUDA only where onnxruntime has its CUDA
   provider.

``--dry-run`` runs every tier on the CPU with the demo networks (torch-only, 32x32) and a few
updates, writing the same archive and summary: CI runs it so that the first GPU run cannot die on
a typo. Where the dry run differs it says so in the step's reason: the build is ``pip install
--dry-run`` (nothing is installed), the GPU tests must skip and the skip check must fire on them,
the sanitizer is skipped, and the compiled plans' build gets ``DRY_COMPILE_LIMIT_S`` so that the
time-out path runs too.

Standard library only: the summary must be written even when the package did not build.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
ARCHIVE = "gpu-protocol.tar.gz"
SUMMARY = "summary.json"
MAX_FILES = 8  # what a lease brings back from $OUT
BUDGET_LIMIT_S = 480  # 8 of the lease's 15 minutes: the machine's start and a rerun need the rest
TIER_LIMITS_S = {"correctness": 150, "headline": 180, "sanitizer": 60, "compiled": 90}
DRY_COMPILE_LIMIT_S = 10
REFERENCE_DIR = ROOT / ".reference"  # git-ignored; the caller copies ../shared/reference here and carries it
# The goldens the GPU tests read (tests/conftest.py's small models).
REQUIRED_GOLDENS = ("golden_adm_unet_small.npz", "golden_dse_small.npz")
GPU_TESTS = ("tests/native/test_native_cuda.py", "tests/method/test_solvers.py",
             "tests/reliability/test_reliability.py", "tests/engine/test_sampling_path.py",
             "tests/method/test_stable_lowpass.py")
KERNEL_TESTS_K = "philox or lowpass or step_begin or step_pointer"
HEADLINE_ENGINE = "/tmp/egsde-protocol-cat2dog"
HEADLINE_STEPS = 20


# --- the verdict on a GPU test run: a skipped GPU test is a failure ------------------------------

def gpu_test_verdict(junit_xml: Path) -> tuple[bool, str]:
    """(ok, why) of a pytest run's JUnit XML: ok only when tests ran and none failed, erred or
    skipped. On the GPU machine a skipped GPU test means a check that did not happen (a missing
    golden, a build without CUDA), and a green run would hide it."""
    try:
        root = ET.parse(junit_xml).getroot()
    except (OSError, ET.ParseError) as err:
        return False, f"no test report ({junit_xml.name}: {err})"
    cases = list(root.iter("testcase"))
    bad = {"failure": [], "error": [], "skipped": []}
    for case in cases:
        for kind in bad:
            found = case.find(kind)
            if found is not None:
                bad[kind].append(f"{case.get('name')}: {(found.get('message') or '').strip()[:160]}")
    if not cases:
        return False, "no GPU test ran (none collected or all deselected)"
    if bad["failure"] or bad["error"]:
        return False, f"{len(bad['failure'])} failed, {len(bad['error'])} erred: " + "; ".join(
            (bad["failure"] + bad["error"])[:3])
    if bad["skipped"]:
        return False, (f"{len(bad['skipped'])} of {len(cases)} GPU tests skipped (a skipped GPU test is a check "
                       "that did not happen): " + "; ".join(bad["skipped"][:3]))
    return True, f"{len(cases)} GPU tests passed, none skipped"


def dry_run_verdict(junit_xml: Path) -> tuple[bool, str]:
    """On the CPU every GPU test skips: the dry run passes when the skip check fires on them."""
    ok, why = gpu_test_verdict(junit_xml)
    if ok or "skipped" not in why:
        return False, f"dry run: the skip check did not fire ({why})"
    return True, f"dry run: the skip check fired as it must without a GPU ({why})"


SANITIZER_UNSUPPORTED = ("Device not supported",)  # what compute-sanitizer says on gVisor machines (device README)


def sanitizer_verdict(log: Path, junit_xml: Path) -> tuple[bool | None, str]:
    """A sanitizer step's verdict: None (skipped) where compute-sanitizer cannot run on this
    machine, else the GPU tests' verdict under it."""
    text = log.read_text(errors="replace") if log.is_file() else ""
    for marker in SANITIZER_UNSUPPORTED:
        if marker in text:
            line = next(x for x in text.splitlines() if marker in x).strip()
            return None, f"compute-sanitizer cannot run on this machine ({line[:200]}; gVisor machines refuse it)"
    return gpu_test_verdict(junit_xml)


def check_reference_dir(path: Path) -> tuple[bool, str]:
    """Whether the goldens the GPU tests read are in ``path``."""
    missing = [name for name in REQUIRED_GOLDENS if not (path / name).is_file()]
    if missing:
        return False, (f"reference goldens missing in {path}: {missing}; copy ../shared/reference to .reference "
                       "and carry it (docs/performance.md, 'On a GPU: the protocol')")
    return True, f"goldens found in {path}"


# --- steps and tiers -----------------------------------------------------------------------------

@dataclass
class Step:
    name: str
    argv: list | None = None  # a command, or
    func: Callable[[], tuple[bool, str]] | None = None  # an inline check: (ok, why)
    limit_s: float = 60
    verdict: Callable[[], tuple[bool | None, str]] | None = None  # with the exit code; None: skipped
    skip: str | None = None  # why the step does not run (recorded)
    env: dict = field(default_factory=dict)


@dataclass
class Tier:
    number: int
    name: str
    steps: list
    needs_build: bool = True


@dataclass
class Protocol:
    out: Path
    dry_run: bool
    work: Path
    reference_dir: Path
    started: float = field(default_factory=time.monotonic)
    record: dict = field(default_factory=dict)

    @property
    def logs(self) -> Path:
        return self.work / "logs"

    @property
    def device(self) -> str:
        return "cpu" if self.dry_run else "cuda"


def _py(*args) -> list:
    return [sys.executable, *args]


def _pytest(*args, junit: Path) -> list:
    return _py("-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", f"--junitxml={junit}", *args)


def build_tiers(p: Protocol) -> list:
    dry = p.dry_run
    logs = p.logs
    engine = str(p.work / "engine") if dry else HEADLINE_ENGINE
    preset = "demo" if dry else "cat2dog"
    cli = _py("-m", "egsde_rt.cli")
    batches = ["1", "2"] if dry else ["1", "8"]
    steps = "2" if dry else str(HEADLINE_STEPS)
    pip = _py("-m", "pip", "install", "--no-build-isolation", "--no-deps", "-e", ".")
    gpu_xml, compiled_xml, tensorrt_xml = logs / "gpu-tests.xml", logs / "compiled-captured.xml", logs / "tensorrt.xml"
    verdict = dry_run_verdict if dry else gpu_test_verdict
    sanitizer = shutil.which("compute-sanitizer") or (
        "/usr/local/cuda/bin/compute-sanitizer" if Path("/usr/local/cuda/bin/compute-sanitizer").exists() else None)
    sanitizer_skip = ("dry run: compute-sanitizer needs a GPU" if dry else
                      None if sanitizer else "compute-sanitizer not found on PATH or in /usr/local/cuda/bin")
    ort_cuda = _py("-c", "import onnxruntime as o, sys; sys.exit('CUDAExecutionProvider' not in "
                   "o.get_available_providers())")
    tensorrt_skip = ("dry run: TensorRT needs a GPU" if dry else None if importlib.util.find_spec("tensorrt") else
                     "tensorrt is not installed (TensorRT stays unverified: pip install 'egsde-rt[tensorrt]')")
    bench = [*cli, "bench", "--engine", engine, "--device", p.device, "--batch-size", *batches, "--steps", steps,
             "--repeats", "2", "--warmup", "0", "--phase-runs", "1"]
    sanitized = {"PYTORCH_NO_CUDA_MEMORY_CACHING": "1"}  # each tensor its own allocation: overruns are seen
    kernel_tests = ["-m", "gpu", "tests/native/test_native_cuda.py", "-k", KERNEL_TESTS_K]
    build_env = {"CMAKE_ARGS": "-DEGSDE_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90"}
    if not shutil.which("nvcc") and Path("/usr/local/cuda/bin/nvcc").exists():
        build_env["CUDACXX"] = "/usr/local/cuda/bin/nvcc"  # CMake's CUDA compiler when nvcc is not on PATH
    core_status = "import egsde_rt._core as c, sys; print('built_with_cuda', c.built_with_cuda, '|', c.cuda_status())"
    needs_gpu = "; sys.exit(0 if c.built_with_cuda and c.cuda_device_count() > 0 else 1)"  # the build saw the GPU
    return [
        Tier(1, "correctness", needs_build=False, steps=[
            Step("build", pip + (["--dry-run"] if dry else ["-v"]), limit_s=120, env=build_env),
            Step("native-core", _py("-c", core_status + ("" if dry else needs_gpu)), limit_s=30),
            Step("goldens", func=lambda: check_reference_dir(p.reference_dir), limit_s=5),
            Step("gpu-tests", _pytest("-m", "gpu", *GPU_TESTS, junit=gpu_xml), limit_s=150,
                 verdict=lambda: verdict(gpu_xml)),
        ]),
        Tier(2, "headline", steps=[
            Step("export", _py("-c", "from egsde_rt.bench.engines import preset_engine; "
                               f"preset_engine({preset!r}, cache={engine!r}, formats=('torch',))"), limit_s=45),
            Step("kernels", [*cli, "bench", "--kernels", "--device", p.device, "--json", str(logs / "kernels.json"),
                             *(["--size", "64", "--iters", "3"] if dry else [])], limit_s=25),
            Step("bench-fp32", [*bench, "--backends", "eager", "torch", "--json", str(logs / "bench-fp32.json"),
                                "--plot", str(logs / "bench-fp32.png")], limit_s=110),
            Step("bench-bf16", [*bench, "--precision", "bf16", "--backends", "torch",
                                "--json", str(logs / "bench-bf16.json")], limit_s=60),
        ]),
        Tier(3, "sanitizer", steps=[
            Step(f"sanitizer-{tool}", [sanitizer or "compute-sanitizer", "--tool", tool, "--error-exitcode", "1",
                                       *_pytest(*kernel_tests, junit=logs / f"sanitizer-{tool}.xml")],
                 limit_s=30, env=sanitized, skip=sanitizer_skip,
                 verdict=lambda tool=tool: sanitizer_verdict(logs / f"3-sanitizer-{tool}.log",
                                                             logs / f"sanitizer-{tool}.xml"))
            for tool in ("memcheck", "initcheck")
        ]),
        Tier(4, "compiled", steps=[
            Step("tensorrt", _pytest("-m", "gpu", "tests/engine/test_tensorrt_gpu.py", junit=tensorrt_xml), limit_s=60,
                 skip=tensorrt_skip, verdict=lambda: verdict(tensorrt_xml)),
            Step("compiled-captured", _pytest("-m", "gpu", "tests/engine/test_compiled.py", "-k", "captured",
                                              junit=compiled_xml), limit_s=90, verdict=lambda: verdict(compiled_xml)),
            Step("build-compiled", [*cli, "build", engine, "--backend", "compiled", "--device", p.device,
                                    "--precision", "fp32", "--max-batch", batches[-1]],
                 limit_s=DRY_COMPILE_LIMIT_S if dry else 90),
            Step("bench-compiled", [*bench, "--backends", "compiled", "--json", str(logs / "bench-compiled.json")],
                 limit_s=60),
            Step("onnxruntime-cuda", [*cli, "bench", "--preset", "demo", "--device", "cuda", "--batch-size", *batches,
                                      "--steps", steps, "--repeats", "2", "--warmup", "0",
                                      "--backends", "onnxruntime-cuda", "--json", str(logs / "bench-ort-cuda.json")],
                 limit_s=90, skip="dry run: ONNX Runtime's CUDA provider needs a GPU" if dry else
                 (None if subprocess.run(ort_cuda, capture_output=True).returncode == 0
                  else "onnxruntime-gpu is not installed (onnxruntime has no CUDAExecutionProvider)")),
        ]),
    ]


def planned_budget(tiers: list) -> int:
    return sum(TIER_LIMITS_S[t.name] for t in tiers)


# --- running -------------------------------------------------------------------------------------

def run_command(argv: list, limit_s: float, log_path: Path, env: dict | None = None) -> tuple[int | None, float]:
    """Run argv in its own process group with output to log_path; (exit code or None if it ran
    out of time, seconds). On time-out the whole group is stopped (TERM, then KILL)."""
    start = time.monotonic()
    with open(log_path, "ab") as log:
        log.write(f"$ {' '.join(map(str, argv))}\n".encode())
        log.flush()
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, **(env or {})})
        try:
            return proc.wait(timeout=max(limit_s, 0.1)), time.monotonic() - start
        except subprocess.TimeoutExpired:
            for sig, grace in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=grace)
                    break
                except subprocess.TimeoutExpired:
                    continue
            log.write(f"\n[protocol] stopped after {limit_s:.0f} s (out of time)\n".encode())
            return None, time.monotonic() - start


def _tail(path: Path, lines: int = 6) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def run_step(step: Step, p: Protocol, tier: Tier, deadline: float) -> dict:
    """Run one step within its tier's deadline; its record (status: passed, failed, timed_out or skipped)."""
    entry = {"name": step.name, "limit_s": step.limit_s}
    if step.skip:
        return {**entry, "status": "skipped", "reason": step.skip}
    left = deadline - time.monotonic()
    if left <= 1:
        return {**entry, "status": "timed_out", "reason": f"tier {tier.name} had no time left for it"}
    limit = min(step.limit_s, left)
    log_path = p.logs / f"{tier.number}-{step.name}.log"
    entry["log"] = log_path.name
    if step.func is not None:
        start = time.monotonic()
        ok, why = step.func()
        log_path.write_text(why + "\n")
        return {**entry, "status": "passed" if ok else "failed", "reason": why,
                "seconds": round(time.monotonic() - start, 2)}
    rc, seconds = run_command(step.argv, limit, log_path, step.env)
    entry.update(rc=rc, seconds=round(seconds, 1))
    if rc is None:
        own = limit >= step.limit_s
        return {**entry, "status": "timed_out",
                "reason": f"stopped after {limit:.0f} s ({'its own limit' if own else f'the end of tier {tier.name}'})"}
    ok, why = step.verdict() if step.verdict is not None else (True, "exit 0")
    if ok is None:  # the step could not run here (e.g. the sanitizer on a gVisor machine)
        return {**entry, "status": "skipped", "reason": why}
    if rc != 0:  # a verdict never overrules a failed command (e.g. the sanitizer's error exit code)
        ok, why = False, f"exit {rc}: {why if step.verdict is not None else _tail(log_path, 3)}"
    return {**entry, "status": "passed" if ok else "failed", "reason": why}


def tier_status(steps: list) -> tuple[str, str]:
    statuses = [s["status"] for s in steps]
    if "failed" in statuses:
        return "failed", "; ".join(f"{s['name']}: {s['reason']}" for s in steps if s["status"] == "failed")[:600]
    if "timed_out" in statuses:
        return "timed_out", next(f"{s['name']}: {s['reason']}" for s in steps if s["status"] == "timed_out")
    if all(s == "skipped" for s in statuses):
        return "skipped", "; ".join(sorted({s["reason"] for s in steps}))
    return "passed", f"{statuses.count('passed')} step(s) passed, {statuses.count('skipped')} skipped"


def run_tier(tier: Tier, p: Protocol, say=print) -> dict:
    limit = TIER_LIMITS_S[tier.name]
    record = {"tier": tier.number, "name": tier.name, "limit_s": limit, "status": "running", "steps": []}
    p.record["tiers"][tier.number - 1] = record
    publish(p)
    start = time.monotonic()
    deadline = start + limit
    build = p.record["tiers"][0]["steps"][:1]
    if tier.needs_build and build and build[0]["status"] != "passed":
        record.update(status="skipped", reason="the build failed (tier 1)", seconds=0.0)
        publish(p)
        return record
    for step in tier.steps:
        say(f"== {_clock()} tier {tier.number} {tier.name}: {step.name}")
        result = run_step(step, p, tier, deadline)
        record["steps"].append(result)
        say(f"   {result['status']}: {result.get('reason', '')}"[:2000])
        if result.get("log"):
            say("   | " + _tail(p.logs / result["log"]).replace("\n", "\n   | "))
        if result["status"] == "timed_out":
            for rest in tier.steps[tier.steps.index(step) + 1:]:
                record["steps"].append({"name": rest.name, "limit_s": rest.limit_s, "status": "not_run",
                                        "reason": f"tier {tier.name} ran out of its {limit} s"})
            break
    record["status"], record["reason"] = tier_status([s for s in record["steps"] if s["status"] != "not_run"])
    record["seconds"] = round(time.monotonic() - start, 1)
    if tier.name in ("headline", "compiled"):
        p.record["headline"] = headline(p.logs)
    publish(p)
    say(f"== {_clock()} tier {tier.number} {tier.name}: {record['status']} ({record['reason']})")
    return record


# --- results -------------------------------------------------------------------------------------

def headline(logs: Path) -> dict | None:
    """The headline numbers from the bench records (tier 2's, and tier 4's compiled one): per
    run seconds per image, images per second, speedup over the eager fp32 reference at the same
    batch size, the path timed, the extrapolation, the phases (ms per update)."""
    records = {}
    for name in ("bench-fp32", "bench-bf16", "bench-compiled"):
        try:
            records[name] = json.loads((logs / f"{name}.json").read_text())
        except (OSError, json.JSONDecodeError):
            continue
    if not records:
        return None
    eager = {r["batch_size"]: r["seconds_per_image"] for rec in records.values() for r in rec["runs"]
             if r["backend"] == "eager" and r["precision"] == "fp32"}
    runs = []
    for rec in records.values():
        for r in rec["runs"]:
            base = eager.get(r["batch_size"])
            runs.append({
                "name": f"{r['backend']} {r['precision']} b{r['batch_size']}",
                "seconds_per_image": round(r["seconds_per_image"], 4),
                "images_per_second": round(r["images_per_second"], 3),
                "speedup_vs_eager_fp32": round(base / r["seconds_per_image"], 3) if base else None,
                "timed_path": r.get("timed_path"), "first_run_seconds": round(r["first_run_seconds"], 2),
                "peak_device_mb": r.get("peak_device_mb"), "device_driver_mb": r.get("device_driver_mb"),
                "per_step_ms": {k: round(v["median"], 3) for k, v in r["per_step_ms"].items()},
                "phases_from": r.get("phases_from"),
                "timed_updates": r["timed_updates"], "total_updates": r["total_updates"],
                "extrapolated": r["extrapolated"],
            })
    first = next(iter(records.values()))
    label = (f"{runs[0]['timed_updates']} updates timed, extrapolated linearly to {runs[0]['total_updates']}"
             if runs and runs[0]["extrapolated"] else "whole translations timed")
    return {"engine": first["config"].get("engine"), "device": first.get("device"), "versions": first.get("versions"),
            "timing": label, "complete": all(rec.get("complete", True) for rec in records.values()), "runs": runs}


def _counts(tiers: list) -> dict:
    statuses = [t["status"] for t in tiers]
    return {"run": sum(s not in ("pending", "skipped") for s in statuses),
            **{s: statuses.count(s) for s in ("passed", "failed", "timed_out", "skipped", "pending", "running")}}


def publish(p: Protocol) -> None:
    """Rewrite the two files under $OUT: the archive of every log so far, and the summary."""
    p.record["wall_s"] = round(time.monotonic() - p.started, 1)
    p.record["counts"] = _counts(p.record["tiers"])
    p.record["updated"] = _now()
    archive, tmp = p.out / ARCHIVE, p.out / f"{ARCHIVE}.tmp"
    with tarfile.open(tmp, "w:gz") as tar:
        for path in sorted(p.logs.iterdir()):
            tar.add(path, arcname=f"gpu-protocol/{path.name}")
        tar.add(_write(p.work / SUMMARY, p.record), arcname=f"gpu-protocol/{SUMMARY}")
    os.replace(tmp, archive)
    p.record["archive_files"] = sorted(f"gpu-protocol/{path.name}" for path in p.logs.iterdir())
    summary_tmp = _write(p.out / f"{SUMMARY}.tmp", p.record)
    os.replace(summary_tmp, p.out / SUMMARY)


def _write(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _clock() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%H:%M:%S")


def _machine(dry: bool) -> dict:
    info = {"python": sys.version.split()[0], "executable": sys.executable}
    if not dry and shutil.which("nvidia-smi"):
        query = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                               capture_output=True, text=True)
        info["gpu"] = query.stdout.strip() or query.stderr.strip()
    return info


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="every tier on the CPU with a tiny engine")
    parser.add_argument("--out", help="where the archive and the summary go (default: $OUT, else "
                        "bench/results/gpu-<date> or /tmp/egsde-protocol-dry-run)")
    args = parser.parse_args(argv)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    default_out = "/tmp/egsde-protocol-dry-run" if args.dry_run else str(ROOT / f"bench/results/gpu-{stamp}")
    out = Path(args.out or os.environ.get("OUT") or default_out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in (ARCHIVE, SUMMARY):
        (out / stale).unlink(missing_ok=True)
    reference = Path(os.environ.get("EGSDE_REFERENCE_DIR") or REFERENCE_DIR)
    if args.dry_run and not reference.is_dir() and not os.environ.get("EGSDE_REFERENCE_DIR"):
        reference = ROOT.parent / "shared" / "reference"  # the dry run reads them where they live
    work = Path(os.environ.get("EGSDE_PROTOCOL_WORK") or f"/tmp/egsde-protocol-{stamp}-{os.getpid()}")
    (work / "logs").mkdir(parents=True, exist_ok=True)
    os.environ["EGSDE_REFERENCE_DIR"] = str(reference)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    if args.dry_run:
        # one thread per network call: on a CPU that something else also uses, PyTorch's OpenMP
        # team of several threads waits on a busy core (measured here: 100x slower on 2 cores)
        os.environ.setdefault("OMP_NUM_THREADS", "1")
    p = Protocol(out=out, dry_run=args.dry_run, work=work, reference_dir=reference)
    tiers = build_tiers(p)
    budget = planned_budget(tiers)
    p.record.update({
        "protocol": "egsde-rt GPU protocol", "dry_run": args.dry_run, "device": p.device, "started": _now(),
        "command": " ".join(["bash scripts/gpu_protocol.sh", *(argv if argv is not None else sys.argv[1:])]),
        "machine": _machine(args.dry_run), "reference_dir": str(reference),
        "archive": ARCHIVE, "planned_budget_s": budget, "budget_limit_s": BUDGET_LIMIT_S,
        "tier_limits_s": dict(TIER_LIMITS_S), "headline": None,
        "tiers": [{"tier": t.number, "name": t.name, "limit_s": TIER_LIMITS_S[t.name], "status": "pending",
                   "steps": []} for t in tiers],
    })
    print(f"== {_clock()} egsde-rt GPU protocol{' (dry run on the CPU)' if args.dry_run else ''}: planned budget "
          f"{budget} s ({', '.join(f'{k} {v} s' for k, v in TIER_LIMITS_S.items())}); results in {out}")
    if budget > BUDGET_LIMIT_S:
        print(f"planned budget {budget} s exceeds {BUDGET_LIMIT_S} s", file=sys.stderr)
        return 2
    for tier in tiers:
        run_tier(tier, p)
    p.record["finished"] = _now()
    publish(p)
    if args.dry_run:
        shutil.rmtree(work, ignore_errors=True)  # its engine and logs (the archive holds the logs)
    counts = p.record["counts"]
    print(f"== {_clock()} done in {p.record['wall_s']} s: " + ", ".join(f"{v} {k}" for k, v in counts.items() if v)
          + f"; {out / ARCHIVE}, {out / SUMMARY}")
    if p.record["headline"]:
        for r in p.record["headline"]["runs"]:
            speed = f"{r['speedup_vs_eager_fp32']:.2f}x" if r["speedup_vs_eager_fp32"] else "-"
            print(f"   {r['name']:22s} {r['seconds_per_image']:9.3f} s/image {speed:>7s} ({r['timed_path']})")
        print(f"   ({p.record['headline']['timing']})")
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
