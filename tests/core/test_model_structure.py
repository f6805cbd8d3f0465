"""How the config becomes a model: patch shape order, variant specs, and the VAE config as built."""
import copy

import pytest
import torch
from diffusers import AutoencoderKL
from torch import nn

from uwm_core.checkpoint import load_checkpoint, save_checkpoint
from uwm_core.config import VARIANT_SPECS, PatchShape, load_model_config
from uwm_core.model import UnifiedWorldModel
from uwm_core.model.patchify import LatentPatchifier
from uwm_core.model.vae import LatentCodec
from uwm_core.processing import ActionNormalizer


def test_patch_shape_is_height_width_time_in_the_config_and_the_model():
    # tiny: 32 px images, VAE factor 4 -> 8x8 latents, 2 frames, 2 cameras, 4 latent channels
    cfg = load_model_config("tiny", {"patch_shape": [4, 2, 1]})
    assert cfg.patch == PatchShape(height=4, width=2, time=1)
    patchifier = UnifiedWorldModel(cfg).net.patchifier
    assert patchifier.encoder.kernel_size == (1, 4, 2)  # Conv3d over the latents' (T, H, W)
    assert patchifier.grid == (2, 2, 4)  # tokens along time, height, width
    assert patchifier.num_tokens == 2 * 2 * 2 * 4 and patchifier.patch_values == 4 * 1 * 4 * 2


@pytest.mark.parametrize("patch_shape,message", [
    ([8, 3, 1], r"latent size 8x8 is not divisible by patch 8x3"),
    ([1, 1, 4], r"obs_horizon=2 is not divisible by temporal patch 4"),
])
def test_patch_shape_validation_reads_each_size_by_name(patch_shape, message):
    with pytest.raises(ValueError, match=message):
        load_model_config("tiny", {"patch_shape": patch_shape})


def test_unpatchify_inverts_patchify_for_a_non_cubic_patch():
    """With a kernel that copies each latent value to its own token channel, the tokens are the
    patches themselves: unpatchify must put every value back where patchify took it from."""
    patch = PatchShape(height=4, width=2, time=1)
    latent_shape = (3, 2, 8, 8)  # (C, T, H, W)
    channels = latent_shape[0]
    values = channels * patch.time * patch.height * patch.width
    patchifier = LatentPatchifier(num_views=2, latent_shape=latent_shape, patch=patch, dim=values)
    with torch.no_grad():
        nn.init.zeros_(patchifier.encoder.bias)
        eye = torch.eye(values).view(values, channels, patch.time, patch.height, patch.width)
        patchifier.encoder.weight.copy_(eye)  # (D, C, pt, ph, pw): output channel d = patch value d
    latents = torch.randn(5, 2, *latent_shape)  # (B, V, C, T, H, W)
    tokens = patchifier.patchify(latents)  # (B, N, C*pt*ph*pw)
    assert tokens.shape == (5, patchifier.num_tokens, patchifier.patch_values)
    torch.testing.assert_close(patchifier.unpatchify(tokens), latents)


@pytest.mark.parametrize("variant", list(VARIANT_SPECS))
def test_each_variant_builds_what_its_spec_says(variant):
    model = UnifiedWorldModel(load_model_config("tiny", {"variant": variant}))
    spec = model.variant_spec
    assert spec is VARIANT_SPECS[variant]
    assert (model.vae is not None) == spec.image_diffusion == (model.net.patchifier is not None)
    assert (model.obs_encoder is None) == spec.latent_condition
    assert model.net.time_encoder.proj[0].in_features == spec.num_timesteps * model.cfg.timestep_embed_dim
    assert (model.net.action_mask_token is not None) == (spec.action_free == "mask")
    if spec.image_diffusion:
        in_channels = model.net.patchifier.encoder.in_channels
        assert in_channels == model.vae.latent_channels * (2 if spec.latent_condition else 1)


def test_the_vae_config_given_is_left_alone_and_the_built_one_is_recorded(tmp_path):
    """A pretrained VAE whose architecture differs from the config's: the model records the loaded
    architecture (its checkpoint rebuilds the VAE without the pretrained files), the caller's config
    is unchanged."""
    AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                  up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, latent_channels=2,
                  norm_num_groups=4).save_pretrained(tmp_path / "vae")
    cfg = load_model_config("tiny", {"vae": {"pretrained": str(tmp_path / "vae")}})
    given = copy.deepcopy(cfg)
    codec = LatentCodec(cfg.vae)
    assert cfg == given
    assert (codec.config.block_out_channels, codec.config.layers_per_block, codec.config.latent_channels,
            codec.config.norm_num_groups) == ([8, 16], 1, 2, 4)
    assert codec.downsample == codec.config.downsample == 2 and codec.latent_channels == 2

    torch.manual_seed(0)
    model = UnifiedWorldModel(cfg)
    assert cfg == given and model.cfg.vae == codec.config
    assert model.latent_shape == (2, cfg.obs_horizon, 16, 16)
    model.vae.estimate_latent_statistics(torch.rand(4, 3, 32, 32))
    save_checkpoint(tmp_path / "ck", model, ActionNormalizer.identity(cfg.action_dim))
    (tmp_path / "vae" / "config.json").unlink()  # the checkpoint alone must rebuild the VAE
    loaded, _, _ = load_checkpoint(tmp_path / "ck")
    assert loaded.cfg.vae.block_out_channels == [8, 16] and loaded.cfg.vae.pretrained is None
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())


def test_a_random_vae_is_built_as_configured():
    cfg = load_model_config("tiny").vae
    given = copy.deepcopy(cfg)
    codec = LatentCodec(cfg)
    assert cfg == given and codec.config == cfg
    assert codec.downsample == cfg.downsample == 4
