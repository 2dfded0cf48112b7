"""An engine directory is code, loaded checked: every name the manifest lists stays inside the
directory, every entry of the wrong shape is an EngineDirError (at loading, never a TypeError or
KeyError later), plans are verified before a runner gets them and built atomically, and the
records of verified files are trusted only in a private cache. (A real AOTInductor plan,
corrupted: tests/engine/test_compiled.py; the manifest fuzzed: tests/reliability/test_fuzz.py.)"""

import hashlib
import json
import logging
import os
import re
import shutil

import pytest

from egsde_rt.engine import load_engine_dir, verification
from helpers.engines import with_stand_in_plans
from egsde_rt.engine.plans import MachineIdentity, matching_plans
from egsde_rt.errors import EngineDirError
from egsde_rt.export.tensorrt_plans import build_plans
from egsde_rt.runtime.translator import Translator

H100 = MachineIdentity("cuda", "9.0", "tensorrt 11.4.0")


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """A fresh verification record per test (the user cache)."""
    monkeypatch.setenv("EGSDE_RT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _copy(engine, tmp_path):
    path = tmp_path / "engine"
    shutil.copytree(engine[0], path)
    return path, json.loads((path / "manifest.json").read_text())


def _write(path, manifest):
    (path / "manifest.json").write_text(json.dumps(manifest))


def _refused_before_running(path, match):
    """Loading and choosing a backend raise an EngineDirError matching ``match`` (never another error)."""
    with pytest.raises(EngineDirError, match=match):
        Translator(path, device="cpu")


# --- names confined to the directory ----------------------------------------------------------

@pytest.mark.parametrize("entry", ["graphs.score", "torch_weights.dse", "plans.key-score"])
@pytest.mark.parametrize("name,why", [
    ("../outside.onnx", r"leaves the directory \(a '\.\.' component\)"), ("/etc/hostname", "is an absolute path"),
    ("weights\\score.safetensors", "Windows path"), ("C:score.onnx", "Windows path"),
    ("weights//score.safetensors", "empty or '.' component"), ("", "is not a file name"),
    ("outside-link", "resolves outside the engine directory"),
])
def test_a_name_outside_the_engine_dir_is_refused(tiny_engine, tmp_path, entry, name, why):
    path, manifest = _copy(tiny_engine, tmp_path)
    manifest = with_stand_in_plans(path, manifest)
    (tmp_path / "outside.onnx").write_bytes(b"elsewhere")
    (path / "outside-link").symlink_to(tmp_path / "outside.onnx")
    table, key = entry.split(".")
    manifest[table][key]["file"] = name
    _write(path, manifest)
    _refused_before_running(path, f"{entry}.file names .*, which .*{why}.*: this engine directory is not trustworthy")


def test_a_symbolic_link_inside_the_dir_is_followed_and_checked(tiny_engine, tmp_path):
    """A link that stays inside is fine (its target is the verified file); the engine dir itself may be a link."""
    path, manifest = _copy(tiny_engine, tmp_path)
    (path / "weights" / "score.safetensors").rename(path / "score-weights.bin")
    (path / "weights" / "score.safetensors").symlink_to("../score-weights.bin")
    (tmp_path / "linked").symlink_to(path)
    assert load_engine_dir(tmp_path / "linked").formats == ("onnx", "torch")


# --- entries of the wrong shape -----------------------------------------------------------------

def _set(manifest, dotted, value):
    *parents, last = dotted.split(".")
    node = manifest
    for key in parents:
        node = node[key]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value


@pytest.mark.parametrize("dotted,value,match", [
    ("graphs.score.file", 5, "graphs.score.file must be a string, got 5"),
    ("torch_weights.dse.file", None, "torch_weights.dse.file must be a string"),
    ("graphs.dse_grad.weights", 5, "graphs.dse_grad.weights must be a string or null"),
    ("graphs.score.sha256", "abc", "graphs.score.sha256 must be a sha256"),
    ("torch_weights.score.size", -1, "torch_weights.score.size must be a non-negative integer"),
    ("graphs.score.validation", {"1": {"max_rel": 0.1}}, "validation.1 must be an object with max_abs and max_rel"),
    ("graphs.score.unknown", 1, r"graphs.score has unknown fields \['unknown'\]"),
    ("torch_weights.score.model_class", "Evil", "model_class must be one of"),
    ("plans.key-score", "not an object", "plans.key-score must be an object"),
    ("plans.key-score.device", KeyError, r"plans.key-score lacks \['device'\]"),
    ("plans.key-score.source_sha256", KeyError, r"lacks \['source_sha256'\]"),
    ("plans.key-score.graph", "decoder", "plans.key-score.graph must be one of"),
    ("plans.key-score.profile", [], "profile must be a non-empty list of positive batch sizes"),
    ("plans.key-score.built", 2026, "built must be a string"),
    ("plans.key-dse_grad.file", 5, "plans.key-dse_grad.file must be a string"),
    ("schedule.num_timesteps", KeyError, r"schedule lacks \['num_timesteps'\]"),
    ("schedule.kind", KeyError, r"schedule lacks \['kind'\]"),
    ("schedule.beta_start", KeyError, r"schedule lacks \['beta_start'\]"),
    ("schedule.beta_end", "0.02", "schedule.beta_end must be a number"),
    ("schedule.beta_end", 10**400, "schedule.beta_end must be a number a double holds, got 1000"),
    ("graphs.score.validation", {"1": {"max_abs": -10**400, "max_rel": 0}}, "max_abs must be a number a double"),
    ("schedule.num_timesteps", 1.5, "schedule.num_timesteps must be an integer"),
    ("schedule.num_timesteps", 2**40, r"num_timesteps must be in 1\.\.100000"),
    ("schedule.num_timesteps", 5, "M=12 exceeds the schedule's 5 timesteps"),
    ("schedule.kind", "cosine-ish", "schedule.kind must be one of"),
    ("schedule.beta_end", 3.0, r"betas outside \(0, 1\]"),
    ("schedule", [1, 2], "schedule must be an object"),
    ("export.torch", KeyError, r"export lacks \['torch'\]"),
])
def test_an_entry_of_the_wrong_shape_is_an_engine_dir_error(tiny_engine, tmp_path, dotted, value, match):
    path, manifest = _copy(tiny_engine, tmp_path)
    manifest = with_stand_in_plans(path, manifest)
    _set(manifest, dotted, value)
    _write(path, manifest)
    _refused_before_running(path, match)


@pytest.mark.parametrize("header,why", [
    (None, "its header claims 18446744073709551615 bytes, more than the file holds"),
    (b'{"w": {"data_offsets": [0, 4], "data_offsets": [0, 8]}}', "appears twice"),
    (b'{"w": {"data_offsets": [0, NaN]}}', "NaN is not a JSON number"),
    (b'{"w": "not an object"}', "TypeError"), (b"[1, 2]", "AttributeError"), (b'{"w": {}}', "KeyError"),
    (b"\xff\xfe", "not UTF-8 text"), (b"[" * 5000 + b"]" * 5000, "nested deeper than 32 levels"),
])
def test_a_weights_file_whose_header_is_not_one_is_an_engine_dir_error(tmp_path, header, why):
    """The safetensors header export reads its tensors' offsets from (``weights_file.stored_tensors``)
    is parsed as strictly as the manifest: anything else is an EngineDirError naming the file."""
    import struct

    from egsde_rt.engine.weights_file import stored_tensors

    path = tmp_path / "w.safetensors"
    if header is None:
        path.write_bytes(struct.pack("<Q", 2**64 - 1) + b"{}")
    else:
        path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 8)
    with pytest.raises(EngineDirError, match=f"w.safetensors: not a safetensors file .*{re.escape(why)}"):
        stored_tensors(path)


def test_plan_entries_of_the_first_format_are_left_out(tiny_engine, tmp_path):
    """TensorRT plans recorded by the first engines (no "kind"; never matched since compiled plans
    came) do not make the engine unreadable."""
    path, manifest = _copy(tiny_engine, tmp_path)
    manifest["plans"] = {"old": {"graph": "score", "file": "plans/score.plan", "sha256": "0" * 64,
                                 "onnx_sha256": "0" * 64, "precision": "fp16", "profile": [1, 1, 8],
                                 "compute_capability": "8.0", "tensorrt": "8.6.1", "built": "2026-11-22T00:00:00"}}
    _write(path, manifest)
    assert load_engine_dir(path).manifest.plans == {}


# --- plans: verified before a runner gets them, built atomically --------------------------------

def _fake_compile(onnx_path, contract, image_size, precision, profile, workspace, cache_path):
    return f"{contract.name}-{precision}-{profile}".encode() * 100


def _paths(plans: dict) -> dict:
    """{graph: path} of ``matching_plans``' verified files."""
    return {graph: plan.path for graph, plan in plans.items()}


def test_concurrent_builds_keep_every_plan_entry(tiny_engine, tmp_path):
    """Two builds at once (fp32 and tf32 plans, in threads; the compiler a stand-in that waits for
    the other build at every plan, so that both read the manifest before either records a plan):
    the manifest ends with all four plans, each matching its file (was: each build wrote back the
    manifest it had read, through one fixed manifest.json.tmp, and the last writer's two plans
    were all that was left)."""
    import threading

    path, _ = _copy(tiny_engine, tmp_path)
    together = threading.Barrier(2, timeout=60)

    def compile_fn(*args):
        together.wait()  # both builds are at the same plan, each with the manifest it read at its start
        return _fake_compile(*args)

    built, failed = {}, []

    def build(precision):
        try:
            built[precision] = build_plans(path, precision=precision, compile_fn=compile_fn, identity=H100,
                                           log=lambda m: None)
        except BaseException as err:  # noqa: BLE001 - reported by the test below
            failed.append(err)
            together.abort()

    threads = [threading.Thread(target=build, args=(precision,)) for precision in ("fp32", "tf32")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not failed, failed
    engine = load_engine_dir(path)
    assert sorted((e.precision, e.graph) for e in engine.manifest.plans.values()) == [
        ("fp32", "dse_grad"), ("fp32", "score"), ("tf32", "dse_grad"), ("tf32", "score")]
    for precision in ("fp32", "tf32"):
        assert _paths(matching_plans(engine, H100, precision=precision)) == built[precision]
    assert not [p.name for p in path.iterdir() if p.name.endswith((".tmp", ".tmp.json"))]  # no temporary left


def test_a_corrupt_plan_is_refused_naming_the_file_and_the_rebuild(tiny_engine, tmp_path):
    path, _ = _copy(tiny_engine, tmp_path)
    plans = build_plans(path, precision="fp32", compile_fn=_fake_compile, identity=H100, log=lambda m: None)
    manifest = json.loads((path / "manifest.json").read_text())
    assert all(entry["size"] == (path / entry["file"]).stat().st_size for entry in manifest["plans"].values())
    assert _paths(matching_plans(load_engine_dir(path), H100, precision="fp32")) == plans
    data = bytearray(plans["dse_grad"].read_bytes())
    data[len(data) // 2] ^= 0x01  # the same size
    plans["dse_grad"].write_bytes(bytes(data))
    engine = load_engine_dir(path)  # plans are verified when a runner would get them
    with pytest.raises(EngineDirError, match=rf"{plans['dse_grad'].name} does not match its sha256 .*rebuild it: "
                                             r"run `egsde-rt build .* --backend tensorrt --precision fp32`"):
        matching_plans(engine, H100, precision="fp32")
    plans["dse_grad"].write_bytes(bytes(data[:-1]))
    with pytest.raises(EngineDirError, match="bytes, the manifest says"):
        matching_plans(load_engine_dir(path, check_hashes=False), H100, precision="fp32")  # size: at every level
    build_plans(path, precision="fp32", compile_fn=_fake_compile, identity=H100, log=lambda m: None)  # the fix
    assert _paths(matching_plans(load_engine_dir(path), H100, precision="fp32")) == plans


def test_plans_without_a_recorded_size_are_checked_by_their_sha256(tiny_engine, tmp_path):
    """Plans recorded before sizes were: the sha256 still catches a change."""
    path, _ = _copy(tiny_engine, tmp_path)
    plans = build_plans(path, precision="fp32", compile_fn=_fake_compile, identity=H100, log=lambda m: None)
    manifest = json.loads((path / "manifest.json").read_text())
    for entry in manifest["plans"].values():
        del entry["size"]
    _write(path, manifest)
    assert _paths(matching_plans(load_engine_dir(path), H100, precision="fp32")) == plans
    plans["score"].write_bytes(b"x" + plans["score"].read_bytes())
    with pytest.raises(EngineDirError, match="does not match its sha256"):
        matching_plans(load_engine_dir(path), H100, precision="fp32")


@pytest.mark.parametrize("failure", ["interrupted while writing", "refused by its check"])
def test_a_failed_plan_build_leaves_no_file_under_the_final_name(tiny_torch_engine, tmp_path, monkeypatch, failure):
    """The compiled builder with stand-ins for AOTInductor (which writes its package where it is
    told) and for the plan's check: a build interrupted half-way, or a plan its check refuses."""
    import torch

    from egsde_rt.export import compiled_plans
    from egsde_rt.export.onnx_graphs import ExportValidationError

    path, _ = _copy(tiny_torch_engine, tmp_path)
    monkeypatch.setattr(compiled_plans, "_graph_modules", lambda *args: {"score": (None, None),
                                                                         "dse_grad": (None, None)})
    monkeypatch.setattr(torch.export, "export", lambda *args, **kwargs: None)

    def compile_and_package(program, package_path):
        with open(package_path, "wb") as f:
            f.write(b"half a plan")
            if failure == "interrupted while writing":
                raise KeyboardInterrupt

    def refuse(*args):
        raise ExportValidationError("the compiled score plan differs from PyTorch")

    monkeypatch.setattr(torch._inductor, "aoti_compile_and_package", compile_and_package)
    monkeypatch.setattr(compiled_plans, "_validate", refuse)
    with pytest.raises(KeyboardInterrupt if failure == "interrupted while writing" else ExportValidationError):
        compiled_plans.build_compiled_plans(path, device="cpu", max_batch=2, log=lambda m: None)
    assert list((path / "plans").iterdir()) == []  # neither the plan nor its temporary file
    assert load_engine_dir(path).manifest.plans == {}


# --- the record of verified files: a private cache ----------------------------------------------

def test_the_cache_dir_and_its_records_are_private(tiny_engine, tmp_path, own_cache):
    path, _ = _copy(tiny_engine, tmp_path)
    load_engine_dir(path)
    assert oct(own_cache.stat().st_mode & 0o777) == "0o700"
    records = own_cache / "verified"
    assert oct(records.stat().st_mode & 0o777) == "0o700"
    assert {oct(r.stat().st_mode & 0o777) for r in records.iterdir()} == {"0o600"}


def _plant_record(cache, file, sha256):
    """What another user with write access to the cache could do: say that ``file`` as it is now was verified."""
    identity = verification._identity(os.stat(file))
    record = cache / "verified" / hashlib.sha256(identity.encode()).hexdigest()[:32]
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(sha256 + "\n")


@pytest.mark.parametrize("foreign", ["world-writable", "another owner"])
def test_a_record_in_a_cache_others_can_write_is_not_trusted(tiny_engine, tmp_path, own_cache, monkeypatch, caplog,
                                                             foreign):
    path, manifest = _copy(tiny_engine, tmp_path)
    load_engine_dir(path)
    weights = path / "weights" / "dse.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01  # the same size
    weights.write_bytes(bytes(data))
    _plant_record(own_cache, weights, manifest["torch_weights"]["dse"]["sha256"])
    assert load_engine_dir(path)  # a record in a private cache is trusted: the cache is what must be private
    if foreign == "world-writable":
        own_cache.chmod(0o777)
    else:
        uid = os.getuid()
        monkeypatch.setattr(os, "getuid", lambda: uid + 1)
    with caplog.at_level(logging.WARNING, logger="egsde_rt"):
        for _ in range(2):
            with pytest.raises(EngineDirError, match="dse.safetensors does not match its sha256"):
                load_engine_dir(path)
    warnings = [r.getMessage() for r in caplog.records if "cache directory" in r.getMessage()]
    assert len(warnings) == 1  # once
    assert str(own_cache) in warnings[0] and "chmod 700" in warnings[0] and "EGSDE_RT_CACHE" in warnings[0]
