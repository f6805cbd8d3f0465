"""A randomly initialised VAE is fitted and scaled on training frames before the latent cache is built."""
import torch
from safetensors.torch import load_file

from uwm_core import WorldModel
from uwm_core.config import load_model_config
from uwm_core.data import LatentCache, open_dataset
from uwm_core.model import UnifiedWorldModel
from uwm_core.train import train


def test_vae_is_fitted_then_cached(tmp_path, world, tiny_config):
    run = train(tiny_config(tmp_path, "fit", num_steps=1, **{"model.vae.fit_steps": 4}))
    weights = load_file(run / "checkpoint" / "model.safetensors")
    torch.manual_seed(0)  # the same initial weights as the run
    initial = UnifiedWorldModel(load_model_config("tiny")).state_dict()
    name = "vae.vae.encoder.conv_in.weight"
    assert not torch.equal(weights[name], initial[name])  # fitted
    assert float(weights["vae.latent_scale"]) > 0  # estimated (tiny: latent_scale null)
    wm = WorldModel.from_checkpoint(run / "checkpoint")
    assert wm.config.vae.fit_steps == 4
    # The cache the run trained from belongs to the fitted, scaled VAE.
    assert LatentCache(open_dataset(world["robot"]), wm.model.vae, wm.config.resize_shape).missing() == []
