"""``egsde-rt reference`` and ``egsde-rt export``: the commands that read a preset's checkpoints,
to translate with the eager PyTorch reference sampler or to write an engine directory."""

from __future__ import annotations

from ..method.presets import PRESETS
from .flags import (add_output_dir_flag, add_seed_flag, add_settings_flags, add_torch_device_flag, existing_flags,
                    existing_policy, settings_overrides)
from .jobs import finish_job, run_with_progress


def add_checkpoint_flags(parser) -> None:
    """--preset, --score-ckpt and --dse-ckpt."""
    parser.add_argument("--preset", default="cat2dog", choices=list(PRESETS),
                        help="the networks the checkpoints hold and the paper's settings for them (egsde-rt presets "
                        "lists them)")
    parser.add_argument("--score-ckpt", required=True, metavar="FILE",
                        help="the score model's checkpoint: a .pt or .safetensors file")
    parser.add_argument("--dse-ckpt", required=True, metavar="FILE",
                        help="the domain-specific expert's (DSE) checkpoint: a .pt or .safetensors file")


def register(sub) -> None:
    """Add ``reference`` and ``export`` to the subcommands."""
    p = sub.add_parser("reference", help="translate images with the eager PyTorch reference sampler")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files and folders (folders are searched "
                   "recursively)")
    add_checkpoint_flags(p)
    add_output_dir_flag(p, help="where the outputs go: DIR/<path relative to its input folder>.png")
    add_seed_flag(p)
    add_torch_device_flag(p)
    existing_flags(p)
    add_settings_flags(p)
    p.set_defaults(func=run_reference)

    p = sub.add_parser("export", help="export a preset's checkpoints to an engine directory")
    add_checkpoint_flags(p)
    add_output_dir_flag(p, help="the engine directory to write")
    p.add_argument("--opset", type=int, default=18, help="the ONNX opset of the exported graphs")
    p.add_argument("--formats", nargs="+", choices=["onnx", "torch"], default=["onnx", "torch"],
                   help="what to write: the ONNX graphs (ONNX Runtime, TensorRT) and/or the torch weights (torch and "
                   "compiled backends); --formats torch takes seconds instead of minutes")
    p.add_argument("--no-torch-weights", action="store_true", help="the same as --formats onnx (the weights are "
                   "stored once either way; the torch backend does not run the engine)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing engine directory")
    add_settings_flags(p)
    p.set_defaults(func=run_export)


def run_reference(args) -> int:
    from ..jobs.folders import plan_job
    from ..models import build_preset_models, load_checkpoint
    from ..method.presets import get_preset

    preset = get_preset(args.preset)
    settings = preset.settings.with_overrides(**settings_overrides(args))
    tasks, skipped = plan_job(args.inputs, args.output_dir, args.seed, existing=existing_policy(args))
    score, dse = build_preset_models(preset)
    load_checkpoint(score, args.score_ckpt)
    load_checkpoint(dse, args.dse_ckpt)
    device = args.device.torch
    from ..reference import EagerTranslator

    eager = EagerTranslator(score.to(device).eval(), dse.to(device).eval(), settings, preset.image_size, device)
    # One file at a time; the files' seeds are those of `translate`, so the outputs are comparable.
    return finish_job(run_with_progress(eager, tasks, batch_size=1), tasks, skipped)


def run_export(args) -> int:
    from ..export import export_preset
    from ..method.presets import get_preset

    settings = get_preset(args.preset).settings.with_overrides(**settings_overrides(args))
    formats = [f for f in args.formats if not (args.no_torch_weights and f == "torch")]
    export_preset(args.preset, args.score_ckpt, args.dse_ckpt, args.output_dir, settings=settings,
                  overwrite=args.overwrite, opset=args.opset, formats=formats)
    return 0
