"""Training on a few iterations: the loss goes down on a fixed batch; runs resume."""

import numpy as np
import torch
import torch.nn.functional as F

from egsde_rt.demo import domain_batch
from egsde_rt.models import ADMUNet, DSE, load_checkpoint
from egsde_rt.jobs.training import JudgeNet, TrainConfig, train_dse, train_judge, train_score

SCORE = dict(image_size=16, num_channels=32, num_res_blocks=1, channel_mult="1,2", attention_resolutions="8",
             num_head_channels=32, learn_sigma=False, use_scale_shift_norm=True, resblock_updown=True)
DSE_CFG = dict(image_size=16, num_class=2, classifier_width=32, classifier_depth=1,
               classifier_attention_resolutions="8", channel_mult="1,2", num_head_channels=32)


def _went_down(losses, k=8):
    return np.mean(losses[-k:]) < 0.8 * np.mean(losses[:k])


def _quiet():
    return dict(log=lambda m: None, progress=False)


def test_score_training_loss_goes_down_and_checkpoint_is_a_state_dict(tmp_path):
    cfg = TrainConfig(steps=40, batch_size=8, lr=3e-3, fixed_batch=True, checkpoint_every=20)
    losses = train_score("procedural:target", tmp_path / "score.pt", cfg, config=SCORE, **_quiet())
    assert len(losses) == 40 and _went_down(losses)
    load_checkpoint(ADMUNet(**SCORE), tmp_path / "score.pt")  # official format, weights_only


def test_dse_training_loss_goes_down(tmp_path):
    # the loss is over uniform t, where large t cannot be told apart: it needs some steps to fall
    cfg = TrainConfig(steps=200, batch_size=8, lr=1e-3, fixed_batch=True)
    losses = train_dse("procedural:source", "procedural:target", tmp_path / "dse.pt", cfg, config=DSE_CFG,
                       **_quiet())
    assert _went_down(losses)
    dse = DSE(**DSE_CFG)
    load_checkpoint(dse, tmp_path / "dse.pt")
    # the fixed batch (4 images of each domain, seeds cfg.seed + 1 and + 2) is learnt at t = 0
    x = torch.cat([domain_batch("source", range(4), size=16, seed=1),
                   domain_batch("target", range(4), size=16, seed=2)])
    with torch.no_grad():
        loss = F.cross_entropy(dse.classify(x, torch.zeros(8)), torch.arange(2).repeat_interleave(4))
    assert loss < 0.2


def test_judge_training_separates_the_domains(tmp_path):
    cfg = TrainConfig(steps=100, batch_size=32, lr=3e-3)
    losses = train_judge("procedural:source", "procedural:target", tmp_path / "judge.pt", cfg, image_size=32,
                         **_quiet())
    assert _went_down(losses)
    judge = JudgeNet()
    judge.load_state_dict(torch.load(tmp_path / "judge.pt", weights_only=True))
    with torch.no_grad():
        p_source = judge(domain_batch("source", range(1000, 1032), seed=9)).softmax(1)[:, 1].mean()
        p_target = judge(domain_batch("target", range(1000, 1032), seed=9)).softmax(1)[:, 1].mean()
    assert p_target > p_source + 0.5  # held-out images: the judge tells the domains apart


def test_training_resumes_where_it_stopped(tmp_path):
    first = train_score("procedural:target", tmp_path / "s.pt", TrainConfig(steps=6, batch_size=4, checkpoint_every=3),
                        config=SCORE, **_quiet())
    logs = []
    resumed = train_score("procedural:target", tmp_path / "s.pt",
                          TrainConfig(steps=10, batch_size=4, checkpoint_every=5), config=SCORE,
                          log=logs.append, progress=False)
    assert any("resuming at step 6" in m for m in logs)
    assert resumed[:6] == first and len(resumed) == 10


def test_folder_data(tmp_path):
    from PIL import Image

    from egsde_rt.jobs.training import ImageData

    for i in range(3):
        Image.fromarray(np.full((20, 20, 3), 40 * i, np.uint8)).save(tmp_path / f"{i}.png")
    data = ImageData(str(tmp_path), 16)
    batch = data.batch(0, 5, torch.Generator().manual_seed(0))
    assert batch.shape == (5, 3, 16, 16) and batch.min() >= -1 and batch.max() <= 1
