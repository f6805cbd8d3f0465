"""A randomly initialised VAE is fitted and scaled on training frames before the latent cache is built."""
import torch
from safetensors.torch import load_file

from uwm_core import WorldModel
from uwm_core.config import load_model_config
from uwm_core.data import LatentCache, open_dataset
from uwm_core.model import UnifiedWorldModel
from uwm_core.train import load_train_config, train


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


def test_fitted_vae_survives_resume_and_is_saved_once(tmp_path, tiny_config):
    """The fitted VAE lives in model.safetensors only: the training state holds the raw trained
    weights and AdamW's two moments of each (nothing frozen, no second copy of the EMA weights),
    and a resumed run trains on with the same fitted VAE, not a re-fitted or random one."""
    run = train(tiny_config(tmp_path, "fit", num_steps=1, **{"model.vae.fit_steps": 4}))
    fitted = {k: v for k, v in load_file(run / "checkpoint" / "model.safetensors").items() if k.startswith("vae.")}
    state = torch.load(run / "checkpoint" / "training_state.pt", weights_only=False)
    trained = {n: p for n, p in WorldModel.from_checkpoint(run).model.named_parameters() if p.requires_grad}
    assert set(state["model"]) == set(trained)
    moments = [t for s in state["optimizer"]["state"].values() for k, t in s.items() if k != "step"]
    assert sum(t.numel() for t in moments) == 2 * sum(p.numel() for p in trained.values())
    assert not [v for v in state["ema"].values() if isinstance(v, (torch.Tensor, list))]  # averages: the weights

    train(load_train_config(None, [f"resume={run}", "num_steps=2"]))
    resumed = load_file(run / "checkpoint" / "model.safetensors")
    assert torch.load(run / "checkpoint" / "training_state.pt", weights_only=False)["step"] == 2
    assert all(torch.equal(resumed[k], v) for k, v in fitted.items())
