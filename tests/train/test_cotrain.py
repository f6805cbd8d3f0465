"""Cotraining with action-free video: the video samples train the image diffusion, not the actions."""
import torch

from uwm_core.config import load_model_config
from uwm_core.data import EpisodeSamples, Mixture, action_normalizer, open_dataset, sample_spec
from uwm_core.model import UnifiedWorldModel
from uwm_core.train import train
from uwm_core.training.step import Objective, batch_loss


def test_video_samples_reach_the_image_loss_not_the_action_targets(world):
    robot, video = open_dataset(world["robot"]), open_dataset(world["video"])
    torch.manual_seed(0)
    model = UnifiedWorldModel(load_model_config("tiny"))
    model.vae.estimate_latent_statistics(torch.rand(16, 3, 32, 32))
    with torch.no_grad():  # AdaLN-Zero starts input-independent: give the zero-initialised layers weights
        for p in model.net.parameters():
            if not p.any():
                p.normal_(0, 0.02)
    spec, normalizer = sample_spec(model.cfg, model.vae.downsample), action_normalizer([robot])
    mix = Mixture([EpisodeSamples(robot, range(8), spec, normalizer, dataset_id=0),
                   EpisodeSamples(video, range(4), spec, normalizer, dataset_id=1)])
    batch = torch.utils.data.default_collate([mix[(i, (0, 0))] for i in (0, 50, len(mix) - 30, len(mix) - 1)])
    assert batch["has_actions"].tolist() == [True, True, False, False]
    objective = Objective(model)

    def losses(b):
        torch.manual_seed(1)  # the same timesteps and noise for every variant of the batch
        return batch_loss(objective, model, b, torch.device("cpu"), bf16=False)[1]

    base = losses(batch)
    assert base["t_action"][2:].tolist() == [model.T, model.T]  # video: action timestep fixed to T
    garbage = {**batch, "actions": batch["actions"].clone()}
    garbage["actions"][2:] = 1e3  # whatever the video samples carry as actions...
    assert torch.equal(losses(garbage)["action_loss_each"], base["action_loss_each"])  # ...is never a target
    moved = {**batch, "actions": batch["actions"].clone()}
    moved["actions"][:2] *= -1  # robot actions are targets
    assert not torch.allclose(losses(moved)["action_loss_each"][:2], base["action_loss_each"][:2])
    other = {**batch, "next_obs": batch["next_obs"].clone()}
    other["next_obs"][2:] = 1 - other["next_obs"][2:]  # the video samples' future frames...
    changed = losses(other)["image_loss_each"]
    assert torch.equal(changed[:2], base["image_loss_each"][:2])
    assert (changed[2:] - base["image_loss_each"][2:]).abs().min() > 1e-6  # ...are image-loss targets (float32 noise: ~1e-7)


def test_cotrain_end_to_end(tmp_path, world, tiny_config):
    cfg = tiny_config(tmp_path, "co", recipe="cotrain", video_datasets=f"[{world['video']}]", num_steps=3,
                      batch_size=8)
    steps, samples = [], []  # (sample id, has actions, action timestep) of every trained sample

    def record(run, batches, infos):  # a step hook: after every optimiser step
        steps.append(run.step)
        for batch, info in zip(batches, infos):
            samples.extend(zip(batch["sample_id"].tolist(), batch["has_actions"].tolist(), info["t_action"].tolist()))

    run = train(cfg, hooks=[record])
    assert steps == [1, 2, 3] and len(samples) == 3 * 8
    video = [x for x in samples if x[0][0] == 1]
    assert video and len(video) < len(samples)  # one uniformly sampled mixture
    assert all(not flag and t == 99 for _, flag, t in video)
    assert all(flag for s, flag, _ in samples if s[0] == 0) and len({t for s, _, t in samples if s[0] == 0}) > 1
    assert (run / "checkpoint" / "model.safetensors").is_file() and (run / "images" / "step_0000003.png").is_file()
