"""The UWM model, its sampling modes, checkpoints and the WorldModel API (untrained, tiny preset)."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from uwm_core import WorldModel
from uwm_core.checkpoint import CheckpointError, save_checkpoint
from uwm_core.config import VARIANT_SPECS, load_model_config, preset_names
from uwm_core.model import UnifiedWorldModel
from uwm_core.model.obs_encoder import build_resnet18
from uwm_core.model.precision import resolve_precision
from uwm_core.model.vae import LatentCodec
from uwm_core.processing import ActionNormalizer


def make_model(variant="uwm", seed=0, **overrides):
    torch.manual_seed(seed)
    model = UnifiedWorldModel(load_model_config("tiny", {"variant": variant, **overrides})).eval()
    if model.vae is not None:
        model.vae.estimate_latent_statistics(torch.rand(8, 3, 32, 32))
    # AdaLN-Zero starts every block as the identity; perturb the weights so that every input
    # path (observation, both timesteps, actions, latents) reaches both outputs.
    with torch.no_grad():
        for p in model.net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def random_images(cfg, batch=None, seed=0, size=(40, 48)):
    rng = np.random.default_rng(seed)
    shape = ((batch,) if batch else ()) + (cfg.obs_horizon, *size, 3)
    return {cam: rng.integers(0, 256, shape, dtype=np.uint8) for cam in cfg.cameras}


def test_presets_load_and_paper_matches_table_v():
    assert {"paper", "small", "tiny"} <= set(preset_names())
    cfg = load_model_config("paper")
    assert (cfg.image_size, cfg.num_views, cfg.obs_horizon, cfg.action_horizon, cfg.execute_steps) == (224, 3, 2, 16, 8)
    assert (cfg.embed_dim, cfg.timestep_embed_dim, cfg.depth, cfg.num_heads, cfg.mlp_ratio) == (768, 512, 12, 12, 4.0)
    assert cfg.qkv_bias and cfg.num_registers == 8 and list(cfg.patch_shape) == [4, 4, 2]
    assert (cfg.num_train_steps, cfg.num_inference_steps, cfg.beta_schedule, cfg.clip_sample) == (100, 10, "squaredcos_cap_v2", True)
    assert cfg.vae.pretrained == "stabilityai/sdxl-vae" and cfg.resnet_weights == "IMAGENET1K_V1"
    # 224 / 8 (SDXL VAE) = 28: the [28, 28, 4] latent of Table V
    assert 224 // cfg.vae.downsample == 28 and cfg.vae.latent_channels == 4


@pytest.mark.parametrize("key,value,message", [
    ("variant", "gr1", "not one of"),
    ("execute_steps", 20, "execute_steps"),
    ("embed_dim", 130, "not divisible by num_heads"),
    ("patch_shape", [3, 3, 2], "not divisible by patch"),
])
def test_bad_config_values_name_the_key(key, value, message):
    with pytest.raises(ValueError, match=message):
        load_model_config("tiny", {key: value})
    with pytest.raises(ValueError, match="unknown model preset 'huge'.*paper"):
        load_model_config("huge")


def test_observation_work_once_per_chunk_gives_identical_samples():
    model = make_model()
    obs = torch.rand(2, model.cfg.num_views, model.cfg.obs_horizon, 3, 32, 32)
    for mode in ("policy", "video"):
        a = model.sample(mode, obs, generator=torch.Generator().manual_seed(3), cache_condition=True)
        b = model.sample(mode, obs, generator=torch.Generator().manual_seed(3), cache_condition=False)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_modes_condition_on_what_they_should():
    model = make_model()
    cfg = model.cfg
    obs = torch.rand(1, cfg.num_views, cfg.obs_horizon, 3, 32, 32)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    act = torch.rand(1, cfg.action_horizon, cfg.action_dim) * 2 - 1
    z1 = model.sample("forward_dynamics", obs, actions=act, generator=g())[1]
    z2 = model.sample("forward_dynamics", obs, actions=-act, generator=g())[1]
    assert not torch.allclose(z1, z2), "forward dynamics must depend on the given actions"
    nl = torch.randn(1, cfg.num_views, *model.latent_shape)
    i1 = model.sample("inverse_dynamics", obs, next_latents=nl, generator=g())[0]
    i2 = model.sample("inverse_dynamics", obs, next_latents=-nl, generator=g())[0]
    assert not torch.allclose(i1, i2), "inverse dynamics must depend on the given next frames"
    a, z = model.sample("joint", obs, generator=g())
    assert a.abs().max() <= 1.0 and z is not None  # clip_sample keeps normalised actions in range
    with pytest.raises(ValueError, match="inverse_dynamics.*not available for variant 'dp'"):
        make_model("dp").sample("inverse_dynamics", obs)


def test_action_free_samples_get_timestep_T_and_imputed_actions():
    model = make_model()
    model.train()
    cfg = model.cfg
    B = 64
    obs = torch.rand(B, cfg.num_views, cfg.obs_horizon, 3, 32, 32)
    nl = torch.randn(B, cfg.num_views, *model.latent_shape)
    has = torch.arange(B) % 2 == 0
    actions = torch.zeros(B, cfg.action_horizon, cfg.action_dim)
    torch.manual_seed(1)
    _, info = model.loss(obs, actions, nl, has)
    assert (info["t_action"][~has] == model.T).all()
    assert info["t_action"][has].float().std() > 10  # robot samples: uniform timesteps
    assert (info["t_action"] != info["t_obs"]).any()  # independent timesteps
    # Action-free samples' (garbage) actions are replaced by noise: changing them changes nothing.
    torch.manual_seed(1)
    _, info2 = model.loss(obs, actions + 5.0 * (~has)[:, None, None], nl, has)
    assert torch.equal(info["action_loss_each"][~has], info2["action_loss_each"][~has])
    assert torch.equal(info["image_loss_each"], info2["image_loss_each"])


@pytest.mark.parametrize("variant", ["uwm", "dp", "pad"])
def test_variants_train_and_sample(variant):
    model = make_model(variant)
    cfg = model.cfg
    obs = torch.rand(2, cfg.num_views, cfg.obs_horizon, 3, 32, 32)
    actions = torch.rand(2, cfg.action_horizon, cfg.action_dim) * 2 - 1
    nl = model.encode_frames(torch.rand(2, cfg.num_views, cfg.obs_horizon, 3, 32, 32)) if model.vae else None
    model.train()
    loss, info = model.loss(obs, actions, nl, torch.tensor([True, False]))
    loss.backward()
    assert torch.isfinite(loss) and ("image_loss" in info) == (variant != "dp")
    grads = [p.grad for p in model.net.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    model.eval()
    act, _ = model.sample("policy", obs, generator=torch.Generator().manual_seed(0))
    assert act.shape == (2, cfg.action_horizon, cfg.action_dim) and act.abs().max() <= 1.0


def test_world_model_api_shapes_batching_and_seeds():
    model = make_model()
    norm = ActionNormalizer(np.array([-2.0, 0.0]), np.array([2.0, 10.0]))
    wm = WorldModel(model, norm)
    cfg = model.cfg
    assert wm.cameras == ["top", "wrist"] and (wm.obs_horizon, wm.action_horizon, wm.action_dim, wm.image_size) == (2, 8, 2, 32)
    images = random_images(cfg)
    a = wm.predict_actions(images, seed=7)
    assert a.shape == (8, 2) and a.dtype == np.float32
    assert np.array_equal(a, wm.predict_actions(images, seed=7))
    assert not np.array_equal(a, wm.predict_actions(images, seed=8))
    # dataset units: the normaliser maps [-1, 1] back onto [low, high]
    assert (a[:, 0] >= -2 - 1e-5).all() and (a[:, 0] <= 2 + 1e-5).all() and (a[:, 1] >= -1e-5).all()
    batch = {cam: np.stack([v, v]) for cam, v in images.items()}
    ab = wm.predict_actions(batch, seed=7)
    assert ab.shape == (2, 8, 2)
    frames = wm.predict_next_frames(images, a, seed=0)
    assert set(frames) == {"top", "wrist"} and frames["top"].shape == (2, 32, 32, 3) and frames["top"].dtype == np.uint8
    framesb = wm.predict_next_frames(batch, np.stack([a, a]), seed=0)
    assert framesb["wrist"].shape == (2, 2, 32, 32, 3)
    assert wm.infer_actions(images, images, seed=0).shape == (8, 2)
    assert wm.infer_actions(batch, batch, seed=0).shape == (2, 8, 2)
    assert wm.predict_video(batch, seed=0)["top"].shape == (2, 2, 32, 32, 3)


@pytest.mark.parametrize("mutate,message", [
    (lambda im: {"top": im["top"]}, r"expected cameras \['top', 'wrist'\], got \['top'\]"),
    (lambda im: {**im, "top": im["top"].astype(np.float32)}, r"images\['top'\]: expected dtype uint8, got float32"),
    (lambda im: {**im, "top": im["top"][:1]}, r"expected shape \(2, H, W, 3\).*got \(1, 40, 48, 3\)"),
    (lambda im: {**im, "top": im["top"][..., :1]}, r"got \(2, 40, 48, 1\)"),
    (lambda im: {**im, "top": im["top"][None]}, r"batch layout"),
])
def test_bad_images_raise_value_errors_naming_expected_and_given(mutate, message):
    model = make_model()
    wm = WorldModel(model, ActionNormalizer.identity(2))
    with pytest.raises(ValueError, match=message):
        wm.predict_actions(mutate(random_images(model.cfg)))


def test_bad_actions_raise_value_errors():
    model = make_model()
    wm = WorldModel(model, ActionNormalizer.identity(2))
    images = random_images(model.cfg)
    with pytest.raises(ValueError, match=r"actions: expected shape \(8, 2\).*got \(8, 7\)"):
        wm.predict_next_frames(images, np.zeros((8, 7)))
    with pytest.raises(ValueError, match=r"actions: expected shape \(8, 2\).*got \(16, 2\)"):
        wm.predict_next_frames(images, np.zeros((16, 2)))
    with pytest.raises(ValueError, match="NaN"):
        wm.predict_next_frames(images, np.full((8, 2), np.nan))


def test_checkpoint_round_trip_is_bit_identical(tmp_path):
    model = make_model()
    norm = ActionNormalizer(np.array([-1.0, -3.0]), np.array([2.0, 3.0]))
    save_checkpoint(tmp_path / "ck", model, norm)
    assert {p.name for p in (tmp_path / "ck").iterdir()} == {"config.yaml", "model.safetensors", "normalizer.json"}
    wm1, wm2 = WorldModel(model, norm), WorldModel.from_checkpoint(tmp_path / "ck")
    images = random_images(model.cfg, batch=3)
    assert np.array_equal(wm1.predict_actions(images, seed=5), wm2.predict_actions(images, seed=5))
    acts = wm1.predict_actions(images, seed=1)
    f1, f2 = wm1.predict_next_frames(images, acts, seed=2), wm2.predict_next_frames(images, acts, seed=2)
    assert all(np.array_equal(f1[c], f2[c]) for c in f1)
    assert np.array_equal(wm1.infer_actions(images, images, seed=4), wm2.infer_actions(images, images, seed=4))


def test_proprioceptive_state_conditions_the_model_and_survives_the_checkpoint(tmp_path):
    model = make_model(use_state=True, state_dim=3)
    low, high = np.array([0.2, -0.5, 0.0]), np.array([0.8, 0.5, 1.0])
    model.set_state_stats(ActionNormalizer(low, high))
    wm = WorldModel(model, ActionNormalizer.identity(2))
    images = random_images(model.cfg)
    state = np.array([[0.5, 0.0, 0.0], [0.6, 0.1, 1.0]])
    a = wm.predict_actions(images, seed=3, state=state)
    assert not np.array_equal(a, wm.predict_actions(images, seed=3, state=state + [0.1, 0.0, 0.0]))
    # normalised like the actions: min-max to [-1, 1] with the training data's statistics
    cond = model.encode_condition(torch.rand(1, 2, 2, 3, 32, 32), torch.tensor(state[None], dtype=torch.float32))
    assert cond is not None
    normalised = (torch.tensor(state, dtype=torch.float32) - model.state_offset) / model.state_scale
    np.testing.assert_allclose(normalised.numpy(), [[0.0, 0.0, -1.0], [1 / 3, 0.2, 1.0]], atol=1e-6)
    with pytest.raises(ValueError, match="trained with proprioceptive state"):
        wm.predict_actions(images, seed=3)
    with pytest.raises(ValueError, match=r"state: expected a numeric array of shape \(2, 3\)"):
        wm.predict_actions(images, seed=3, state=np.zeros((2, 4)))
    with pytest.raises(ValueError, match="without proprioceptive state"):
        WorldModel(make_model(), ActionNormalizer.identity(2)).predict_actions(images, state=state)
    save_checkpoint(tmp_path / "ck", model, ActionNormalizer.identity(2))
    again = WorldModel.from_checkpoint(tmp_path / "ck")
    assert again.state_dim == 3
    assert np.array_equal(a, again.predict_actions(images, seed=3, state=state))
    batch = {cam: np.stack([v, v]) for cam, v in images.items()}
    assert again.predict_actions(batch, seed=3, state=np.stack([state, state])).shape == (2, 8, 2)


def test_checkpoint_errors_name_the_file_and_mismatch(tmp_path):
    model = make_model()
    save_checkpoint(tmp_path / "ck", model, ActionNormalizer.identity(2))
    with pytest.raises(CheckpointError, match="does not exist"):
        WorldModel.from_checkpoint(tmp_path / "nope")
    # A config that disagrees with the weights.
    other = make_model(embed_dim=64)
    save_checkpoint(tmp_path / "other", other, ActionNormalizer.identity(2))
    (tmp_path / "ck" / "config.yaml").write_text((tmp_path / "other" / "config.yaml").read_text())
    with pytest.raises(CheckpointError, match=r"model.safetensors: tensor '.*' has shape \[.*\] in the file but \[.*\] in the model.*config.yaml"):
        WorldModel.from_checkpoint(tmp_path / "ck")
    # A truncated weights file.
    weights = tmp_path / "other" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"other/model.safetensors: cannot read weights, the file is truncated or corrupt"):
        WorldModel.from_checkpoint(tmp_path / "other")


def test_unreachable_pretrained_weights_say_which_and_how_to_point_at_a_local_copy(tmp_path):
    cfg = load_model_config("paper")
    # HF_HUB_OFFLINE=1 (conftest): the hub is unreachable for this test on any machine.
    with pytest.raises(RuntimeError, match=r"stabilityai/sdxl-vae.*model.vae.pretrained=/path/to/vae"):
        LatentCodec(cfg.vae)
    # torchvision downloads through urllib: a dead proxy makes the download fail everywhere.
    code = ("from uwm_core.model.obs_encoder import build_resnet18\n"
            "build_resnet18('IMAGENET1K_V1', 8)")
    env = {**os.environ, "TORCH_HOME": str(tmp_path), "https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "ResNet18_Weights.IMAGENET1K_V1" in out.stderr and "model.resnet_weights=/path/to/resnet18.pth" in out.stderr
    with pytest.raises(ValueError, match="neither a file nor one of"):
        build_resnet18("/nonexistent/resnet.pth", 8)


# bf16 against fp32 with the same seed, in the model's own units: actions normalised to [-1, 1],
# latents (|z| about 0.5 here). Measured on these perturbed tiny models: mean 0.008..0.023, max
# 0.03..0.18; a trained model's activations are tamer.
BF16_MEAN_TOLERANCE, BF16_MAX_TOLERANCE = 0.04, 0.3


@pytest.mark.parametrize("variant", ["uwm", "dp", "pad"])
def test_bf16_inference_stays_close_to_fp32_in_every_mode(variant):
    fp32 = make_model(variant)
    bf16 = make_model(variant).set_inference_precision("bf16")
    assert bf16.net.dtype == torch.bfloat16 and fp32.net.dtype == torch.float32
    cfg = fp32.cfg
    obs = torch.rand(4, cfg.num_views, cfg.obs_horizon, 3, 32, 32)
    given = {"forward_dynamics": {"actions": torch.rand(4, cfg.action_horizon, cfg.action_dim) * 2 - 1}}
    if fp32.vae is not None:
        given["inverse_dynamics"] = {"next_latents": fp32.encode_frames(torch.rand(4, cfg.num_views, cfg.obs_horizon,
                                                                                   3, 32, 32))}
    for mode in VARIANT_SPECS[variant].modes:
        reference = fp32.sample(mode, obs, generator=torch.Generator().manual_seed(3), **given.get(mode, {}))
        low = bf16.sample(mode, obs, generator=torch.Generator().manual_seed(3), **given.get(mode, {}))
        errors = [(out - ref).abs() for ref, out in zip(reference, low) if ref is not None]
        for error, out in zip(errors, low):
            assert out.dtype == torch.float32  # the scheduler steps and the outputs stay float32
            assert error.mean() <= BF16_MEAN_TOLERANCE and error.max() <= BF16_MAX_TOLERANCE, (mode, error.max())
        assert max(e.max() for e in errors) > 0  # bf16 did run: equal numbers would mean the cast was lost


def test_world_model_precision_setting():
    norm = ActionNormalizer(np.array([-1.0, -3.0]), np.array([2.0, 3.0]))
    exact = WorldModel(make_model(), norm, precision="fp32")
    fast = WorldModel(make_model(), norm, precision="bf16")
    assert (exact.precision, fast.precision) == ("fp32", "bf16")
    images = random_images(exact.config, batch=2)
    a, b = exact.predict_actions(images, seed=1), fast.predict_actions(images, seed=1)
    span = np.array([3.0, 6.0])  # the normaliser's range: tolerances scale with it
    assert np.abs(a - b).max() <= BF16_MAX_TOLERANCE * span.max() / 2 and not np.array_equal(a, b)
    assert WorldModel(make_model(), norm).precision == resolve_precision("auto", "cpu") in ("bf16", "fp32")
    with pytest.raises(ValueError, match="fp16 runs on CUDA only"):
        WorldModel(make_model(), norm, precision="fp16")
    with pytest.raises(ValueError, match="not one of auto"):
        WorldModel(make_model(), norm, precision="int8")


def test_compiled_denoiser_step_matches_eager_in_every_mode():
    """torch.compile of the denoiser step (inductor on this CPU): same samples as eager, all modes."""
    norm = ActionNormalizer(np.array([-1.0, -3.0]), np.array([2.0, 3.0]))
    eager = WorldModel(make_model(), norm, precision="fp32", compile=False)
    compiled = WorldModel(make_model(), norm, precision="fp32", compile=True)
    assert (eager.compile_status, compiled.compile_status) == ("eager", "compiled")
    images, later = random_images(eager.config), random_images(eager.config, seed=1)
    a, b = eager.predict_actions(images, seed=1), compiled.predict_actions(images, seed=1)
    np.testing.assert_allclose(a, b, atol=1e-4)
    np.testing.assert_allclose(eager.infer_actions(images, later, seed=2), compiled.infer_actions(images, later, seed=2),
                               atol=1e-4)
    for name in ("predict_next_frames", "predict_video"):
        args = (images, a) if name == "predict_next_frames" else (images,)
        x, y = getattr(eager, name)(*args, seed=3), getattr(compiled, name)(*args, seed=3)
        assert all(np.abs(x[c].astype(int) - y[c]).max() <= 1 for c in x)  # uint8 frames: rounding at most


def test_compile_falls_back_to_eager_with_the_reason(tmp_path):
    """No working C++ compiler for inductor: the model stays eager, says why, and still samples."""
    script = (
        "import sys, numpy as np; sys.path.insert(0, %r)\n"
        "from test_model import make_model, random_images\n"
        "from uwm_core import WorldModel\nfrom uwm_core.processing import ActionNormalizer\n"
        "wm = WorldModel(make_model(), ActionNormalizer.identity(2), precision='fp32', compile=True)\n"
        "print('STATUS', wm.compile_status)\n"
        "print('FINITE', np.isfinite(wm.predict_actions(random_images(wm.config), seed=0)).all())\n"
    ) % os.path.dirname(__file__)
    env = {**os.environ, "CXX": str(tmp_path / "no-such-compiler"), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "STATUS eager (torch.compile unavailable: " in out.stdout and "FINITE True" in out.stdout, out.stdout
    assert "torch.compile unavailable" in out.stderr  # the warning a user sees in the log
