"""Training the networks EGSDE needs, on the CPU or a GPU: the score model, the DSE, a judge.

* ``train_score``: an ADM-vocabulary UNet predicting eps on the target domain (linear schedule,
  1000 steps, uniform t); the checkpoint holds the EMA weights as a plain state dict, like the
  official ``afhq_dog_4m.pt``.
* ``train_dse``: the time-conditioned DSE classifier on both domains, as the official
  ``run_train_dse``: noised inputs ``x_t`` at uniform t, cross-entropy on the head.
* ``train_judge``: a separate plain CNN on clean images, used only to grade realism.

Data: ``procedural:source`` / ``procedural:target`` (``egsde_rt.demo.data``) or an image folder.
Each run writes ``<out>`` (the state dict) and ``<out>.train`` (step, optimizer, EMA, RNG) and
resumes from the latter.
"""

from __future__ import annotations

import contextlib
import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from ..demo.data import domain_batch
from ..errors import ConfigError
from ..images import images_to_batch, list_images
from ..demo.networks import DEMO_DSE_CONFIG, DEMO_SCORE_CONFIG, JudgeNet
from ..models import ADMUNet, DSE
from ..method.schedule import Schedule

class ImageData:
    """Training images of one domain: procedural (``procedural:source``) or a folder."""

    def __init__(self, spec: str, image_size: int = 32, seed: int = 0, fixed: bool = False):
        self.spec, self.image_size, self.seed, self.fixed = spec, image_size, seed, fixed
        if spec.startswith("procedural:"):
            self.domain, self.folder = spec.split(":", 1)[1], None
        else:
            self.domain = None
            paths = list_images(spec)
            if not paths:
                raise ConfigError(f"no images in {spec}")
            self.folder = images_to_batch(paths, image_size)

    def batch(self, step: int, size: int, generator: torch.Generator) -> torch.Tensor:
        if self.fixed:  # the same images every step (overfitting checks, tests)
            step = 0
            if self.folder is not None:
                return self.folder[torch.arange(size) % len(self.folder)]
        if self.folder is None:
            # procedural images never repeat: image indices run on with the step (the seed keeps
            # them apart from the demo's held-out images, which use another seed)
            return domain_batch(self.domain, range(step * size, (step + 1) * size), size=self.image_size,
                                seed=self.seed)
        index = torch.randint(len(self.folder), (size,), generator=generator)
        images = self.folder[index]
        flip = torch.rand(size, generator=generator) < 0.5
        return torch.where(flip[:, None, None, None], images.flip(-1), images)


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 32
    lr: float = 2e-4
    seed: int = 0
    ema: float = 0.999
    checkpoint_every: int = 200
    fixed_batch: bool = False
    device: str = "cpu"  # "cuda": the model trains there, its forward passes in bf16 autocast


def autocast(device: str):
    """bf16 autocast on CUDA (the float32 master weights stay), nothing on the CPU."""
    if device.startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _train(kind: str, model: nn.Module, loss_fn: Callable, out: Path, cfg: TrainConfig, *, use_ema: bool,
           log: Callable[[str], None] = print, progress: bool = True) -> list[float]:
    """The shared loop: resumable, EMA optional, periodic checkpoints; returns the losses."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    state_path = out.with_name(out.name + ".train")
    torch.manual_seed(cfg.seed)
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {cfg.device!r}: CUDA is not available here; train on device cpu")
    model.to(cfg.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    ema = copy.deepcopy(model).eval() if use_ema else None
    generator = torch.Generator().manual_seed(cfg.seed)
    step, losses, elapsed = 0, [], 0.0
    if state_path.is_file():
        state = torch.load(state_path, map_location=cfg.device, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        generator.set_state(state["generator"].cpu())
        step, losses, elapsed = int(state["step"]), list(state["losses"]), float(state["elapsed"])
        log(f"{kind}: resuming at step {step}")

    def save():
        torch.save((ema or model).state_dict(), out)
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "ema": ema.state_dict() if ema is not None else {}, "generator": generator.get_state(),
                    "step": step, "losses": losses, "elapsed": elapsed, "config": json.dumps(cfg.__dict__)},
                   state_path)

    bar = tqdm(total=cfg.steps, initial=step, desc=kind, unit="step", disable=not progress)
    model.train()
    start = time.perf_counter()
    while step < cfg.steps:
        with autocast(cfg.device):
            loss = loss_fn(model, step, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if ema is not None:
            with torch.no_grad():
                for e, p in zip(ema.parameters(), model.parameters()):
                    e.lerp_(p, 1 - cfg.ema)
        losses.append(loss.item())
        step += 1
        bar.update(1)
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            elapsed_now = elapsed + time.perf_counter() - start
            elapsed, start = elapsed_now, time.perf_counter()
            save()
    bar.close()
    model.eval()
    log(f"{kind}: {step} steps, last-100 mean loss {np.mean(losses[-100:]):.4f}, {elapsed:.0f} s in all -> {out}")
    return losses


def score_loss(data: ImageData, batch_size: int, schedule: Schedule):
    abar = schedule.abar

    def loss(model, step, generator):
        x0 = data.batch(step, batch_size, generator)
        t = torch.randint(0, schedule.num_timesteps, (batch_size,), generator=generator)
        eps = torch.randn(x0.shape, generator=generator)
        a = abar[t][:, None, None, None]
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
        return F.mse_loss(model(x_t, t.float())[:, :3], eps)

    return loss


def classifier_loss(sources: list[ImageData], batch_size: int, schedule: Schedule | None):
    """Cross-entropy over domains; with a schedule, on noised inputs at uniform t (the DSE)."""
    per_domain = batch_size // len(sources)

    def loss(model, step, generator):
        x = torch.cat([s.batch(step, per_domain, generator) for s in sources])
        labels = torch.arange(len(sources)).repeat_interleave(per_domain)
        if schedule is None:
            return F.cross_entropy(model(x + 0.05 * torch.randn(x.shape, generator=generator)), labels)
        t = torch.randint(0, schedule.num_timesteps, (len(x),), generator=generator)
        a = schedule.abar[t][:, None, None, None]
        x_t = a.sqrt() * x + (1 - a).sqrt() * torch.randn(x.shape, generator=generator)
        return F.cross_entropy(model.classify(x_t, t.float()), labels)

    return loss


def train_score(data: str, out, cfg: TrainConfig, config: dict | None = None, **kwargs) -> list[float]:
    config = dict(config or DEMO_SCORE_CONFIG)
    model = ADMUNet(**config)
    source = ImageData(data, config["image_size"], seed=cfg.seed, fixed=cfg.fixed_batch)
    return _train("score", model, score_loss(source, cfg.batch_size, Schedule.create()), out, cfg, use_ema=True,
                  **kwargs)


def train_dse(source: str, target: str, out, cfg: TrainConfig, config: dict | None = None, **kwargs) -> list[float]:
    config = dict(config or DEMO_DSE_CONFIG)
    model = DSE(**config)
    data = [ImageData(source, config["image_size"], seed=cfg.seed + 1, fixed=cfg.fixed_batch),
            ImageData(target, config["image_size"], seed=cfg.seed + 2, fixed=cfg.fixed_batch)]
    return _train("dse", model, classifier_loss(data, cfg.batch_size, Schedule.create()), out, cfg, use_ema=False,
                  **kwargs)


def train_judge(source: str, target: str, out, cfg: TrainConfig, image_size: int = 32, **kwargs) -> list[float]:
    model = JudgeNet()
    data = [ImageData(source, image_size, seed=cfg.seed + 3, fixed=cfg.fixed_batch),
            ImageData(target, image_size, seed=cfg.seed + 4, fixed=cfg.fixed_batch)]
    return _train("judge", model, classifier_loss(data, cfg.batch_size, None), out, cfg, use_ema=False, **kwargs)
