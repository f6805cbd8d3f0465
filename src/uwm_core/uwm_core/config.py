"""Model configuration: one dataclass, named presets as YAML files in ``config/model/``.

A preset is resolved as ``preset file -> key=value overrides`` with OmegaConf on top of the
``ModelConfig`` schema, so a misspelt key or a wrong type fails at load time with its name.
"""
from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple, Optional

from omegaconf import OmegaConf

# Sampling modes: settings of the action and image timesteps (uwm_core.model.uwm).
MODES = ("policy", "video", "forward_dynamics", "inverse_dynamics", "joint")


@dataclass(frozen=True)
class VariantSpec:
    """What one value of ``model.variant`` builds, trains and samples."""

    image_diffusion: bool  # a VAE and next-frame latent tokens (without: actions only)
    # Clean current latents, concatenated to the noisy next ones on channels, are the observation
    # condition; no ResNet features in AdaLN (so no proprioceptive state either).
    latent_condition: bool
    # One timestep noises actions and latents together. It represents only the joint
    # distribution, so every mode samples jointly (policy and video are its marginals).
    shared_timestep: bool
    # Action-free (video) samples: "impute" replaces their actions with unit Gaussian noise at
    # timestep T and averages the action loss over all samples (paper III-D); "mask" replaces their
    # action tokens with a learned token and leaves them out of the action loss; None: no special
    # case, the variant expects robot samples only (uwm-train refuses video datasets for a new one).
    action_free: Literal["impute", "mask"] | None
    modes: tuple[str, ...]  # the MODES it can sample

    @property
    def num_timesteps(self) -> int:
        """Timesteps the denoiser is told: one per diffused modality, unless they share one."""
        return 2 if self.image_diffusion and not self.shared_timestep else 1


VARIANT_SPECS = {
    # the paper's method: coupled video-action diffusion with independent timesteps
    "uwm": VariantSpec(image_diffusion=True, latent_condition=False, shared_timestep=False,
                       action_free="impute", modes=MODES),
    # Diffusion Policy baseline: the same backbone without image diffusion
    "dp": VariantSpec(image_diffusion=False, latent_condition=False, shared_timestep=False,
                      action_free=None, modes=("policy",)),
    # PAD baseline: one coupled timestep, conditioned on the clean current latents
    "pad": VariantSpec(image_diffusion=True, latent_condition=True, shared_timestep=True,
                       action_free="mask", modes=("policy", "video", "joint")),
}


class PatchShape(NamedTuple):
    """Latent patch size, in the order of the ``patch_shape`` key: [height, width, time]."""

    height: int
    width: int
    time: int  # frames


@dataclass
class VAEConfig:
    # Hub id or local directory of a pretrained diffusers AutoencoderKL (paper: the SDXL VAE).
    # None builds a randomly initialised AutoencoderKL from the fields below (tests, demos).
    pretrained: Optional[str] = "stabilityai/sdxl-vae"
    block_out_channels: list[int] = field(default_factory=lambda: [128, 256, 512, 512])
    layers_per_block: int = 2
    latent_channels: int = 4
    norm_num_groups: int = 32
    # Latents are z * scaling_factor / latent_scale. scaling_factor: the VAE's own
    # (SDXL: 0.13025; read from a pretrained VAE's config when None). latent_scale: the reference
    # implementation's extra normalisation (3.0 for SDXL: latent std ~1/3); None estimates it from
    # the training frames (latent std -> 1/3) for other VAEs.
    scaling_factor: Optional[float] = None
    latent_scale: Optional[float] = 3.0
    # clip_sample range of the latents during DDIM sampling (the reference: 1.0, as the actions);
    # None: the largest latent magnitude of the training frames, estimated with latent_scale.
    latent_clip: Optional[float] = 1.0
    # Steps of reconstruction training for a randomly initialised VAE before UWM training
    # (0: keep it random). Makes decoded predictions of small demo models viewable.
    fit_steps: int = 0

    @property
    def downsample(self) -> int:
        """Pixels per latent along each side: one halving per block after the first."""
        return 2 ** (len(self.block_out_channels) - 1)


@dataclass
class ModelConfig:
    variant: str = "uwm"  # a key of VARIANT_SPECS: uwm, dp or pad
    # Filled from the dataset when training; ordered like the camera topics at deployment.
    cameras: list[str] = field(default_factory=lambda: ["left", "right", "wrist"])
    action_dim: int = 7
    obs_horizon: int = 2  # To: current frames per camera
    action_horizon: int = 16  # Ta: actions per chunk; next frames are the To after the chunk
    execute_steps: int = 8  # rollout length: actions executed before replanning
    image_size: int = 224  # square crop fed to the model
    resize_shape: list[int] = field(default_factory=lambda: [240, 320])  # (H, W) before crop
    # Observation encoder: ImageNet ResNet-18 per view and frame (torchvision weights enum
    # name, a local .pth state_dict, or None for random initialisation).
    resnet_weights: Optional[str] = "IMAGENET1K_V1"
    obs_feature_dim: int = 768  # per view and frame
    # Keep the encoder at its initial weights. Its features reach the transformer only through
    # the zero-initialised AdaLN terms, so early on it gets almost no gradient, and on a small
    # dataset a randomly initialised encoder then drifts to a constant output before the policy
    # learns to look; frozen random features stay informative (and steps are faster).
    freeze_obs_encoder: bool = False
    # Proprioception: the end-effector pose and gripper of each current frame (uwm_core.spatial
    # .proprio_state, min-max normalised like the actions) joins the image features in the
    # conditioning. Off in the paper (images only); state_dim is filled from the dataset.
    use_state: bool = False
    state_dim: int = 0
    # Transformer
    embed_dim: int = 768
    timestep_embed_dim: int = 512
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    num_registers: int = 8
    patch_shape: list[int] = field(default_factory=lambda: [4, 4, 2])  # latent [H, W, T]: see ``patch``
    # Diffusion (diffusers DDPM for training, DDIM for sampling)
    num_train_steps: int = 100
    num_inference_steps: int = 10
    beta_schedule: str = "squaredcos_cap_v2"
    clip_sample: bool = True
    action_loss_weight: float = 1.0
    image_loss_weight: float = 1.0
    vae: VAEConfig = field(default_factory=VAEConfig)

    @property
    def num_views(self) -> int:
        return len(self.cameras)

    @property
    def variant_spec(self) -> VariantSpec:
        return VARIANT_SPECS[self.variant]

    @property
    def patch(self) -> PatchShape:
        """``patch_shape`` with named fields: read sizes by name, never by position."""
        return PatchShape(*self.patch_shape)


def config_dir() -> Path:
    """The workspace's config/ folder: $UWM_CONFIG_DIR, the source tree, or the install share."""
    candidates = []
    if os.environ.get("UWM_CONFIG_DIR"):
        candidates.append(Path(os.environ["UWM_CONFIG_DIR"]))
    here = Path(__file__).resolve()
    candidates.append(here.parents[3] / "config")  # source tree: <ws>/src/uwm_core/uwm_core/config.py
    # installed: <prefix>/lib/pythonX.Y/site-packages/uwm_core/config.py -> <prefix>/share/uwm_core/config
    candidates.append(here.parents[4] / "share" / "uwm_core" / "config")
    candidates.append(Path(sys.prefix) / "share" / "uwm_core" / "config")
    for path in candidates:
        if (path / "model").is_dir():
            return path
    raise FileNotFoundError(
        "cannot find the uwm config directory (looked in "
        + ", ".join(str(p) for p in candidates)
        + "); set UWM_CONFIG_DIR to the workspace's config/ folder"
    )


def preset_names() -> list[str]:
    return sorted(p.stem for p in (config_dir() / "model").glob("*.yaml"))


def validate_model_config(cfg: ModelConfig) -> ModelConfig:
    """Check values that the schema's types cannot; raise ValueError naming the key."""

    def need(ok: bool, key: str, message: str):
        if not ok:
            raise ValueError(f"model.{key}: {message}")

    need(cfg.variant in VARIANT_SPECS, "variant", f"{cfg.variant!r} is not one of {list(VARIANT_SPECS)}")
    need(len(cfg.cameras) > 0, "cameras", "at least one camera is required")
    need(len(set(cfg.cameras)) == len(cfg.cameras), "cameras", f"duplicate names in {cfg.cameras}")
    for key in ("action_dim", "obs_horizon", "action_horizon", "image_size", "embed_dim", "depth",
                "num_heads", "num_train_steps", "num_inference_steps", "obs_feature_dim"):
        need(getattr(cfg, key) > 0, key, f"must be positive, got {getattr(cfg, key)}")
    need(1 <= cfg.execute_steps <= cfg.action_horizon, "execute_steps",
         f"must be in 1..action_horizon={cfg.action_horizon}, got {cfg.execute_steps}")
    need(cfg.embed_dim % cfg.num_heads == 0, "embed_dim",
         f"{cfg.embed_dim} is not divisible by num_heads={cfg.num_heads}")
    need(len(cfg.resize_shape) == 2 and min(cfg.resize_shape) >= cfg.image_size, "resize_shape",
         f"must be [H, W] with both >= image_size={cfg.image_size}, got {list(cfg.resize_shape)}")
    need(cfg.num_inference_steps <= cfg.num_train_steps, "num_inference_steps",
         f"{cfg.num_inference_steps} exceeds num_train_steps={cfg.num_train_steps}")
    need(not (cfg.use_state and cfg.variant_spec.latent_condition), "use_state",
         "the PAD baseline conditions on latents only; proprioceptive state needs variant uwm or dp")
    need(cfg.state_dim >= 0, "state_dim", f"must not be negative, got {cfg.state_dim}")
    need(len(cfg.patch_shape) == 3, "patch_shape", f"must be [H, W, T], got {list(cfg.patch_shape)}")
    factor = cfg.vae.downsample
    latent = cfg.image_size // factor
    patch = cfg.patch
    if cfg.variant_spec.image_diffusion:
        need(cfg.image_size % factor == 0, "image_size",
             f"{cfg.image_size} is not a multiple of the VAE downsampling factor {factor}")
        need(latent % patch.height == 0 and latent % patch.width == 0, "patch_shape",
             f"latent size {latent}x{latent} is not divisible by patch {patch.height}x{patch.width}")
        need(cfg.obs_horizon % patch.time == 0, "patch_shape",
             f"obs_horizon={cfg.obs_horizon} is not divisible by temporal patch {patch.time}")
        # training crops lie on the latent grid (the latent cache is cropped with them) and
        # deployment takes the centre crop: it must be one of the training crops
        centre = [(r - cfg.image_size) // 2 for r in cfg.resize_shape]
        fits = [cfg.image_size + 2 * factor * math.ceil((r - cfg.image_size) / (2 * factor)) for r in cfg.resize_shape]
        need(all(c % factor == 0 for c in centre), "resize_shape",
             f"{list(cfg.resize_shape)} puts the centre {cfg.image_size}x{cfg.image_size} crop that deployment "
             f"uses at {centre}, off the {factor}-px latent grid of the training crops, so the policy would be "
             f"trained and deployed on different crops; use {fits} (or [{cfg.image_size}, {cfg.image_size}]: "
             f"no crop)")
    return cfg


def load_model_config(preset: str | os.PathLike = "paper", overrides: dict[str, Any] | list[str] | None = None) -> ModelConfig:
    """Build a ModelConfig from a preset name (config/model/<name>.yaml) or a YAML path.

    ``overrides`` is a nested dict or a list of dotted ``key=value`` strings.
    """
    path = Path(preset)
    if path.suffix not in (".yaml", ".yml"):
        path = config_dir() / "model" / f"{preset}.yaml"
        if not path.is_file():
            raise ValueError(f"unknown model preset {str(preset)!r}; choose one of {preset_names()}")
    cfg = OmegaConf.merge(OmegaConf.structured(ModelConfig), OmegaConf.load(path))
    if overrides:
        extra = OmegaConf.from_dotlist(list(overrides)) if isinstance(overrides, list) else OmegaConf.create(overrides)
        cfg = OmegaConf.merge(cfg, extra)
    return validate_model_config(OmegaConf.to_object(cfg))


def model_config_from_dict(data: dict) -> ModelConfig:
    """A ModelConfig from a plain dict (e.g. read back from a checkpoint), schema-checked."""
    cfg = OmegaConf.merge(OmegaConf.structured(ModelConfig), OmegaConf.create(data))
    return validate_model_config(OmegaConf.to_object(cfg))


def model_config_to_dict(cfg: ModelConfig) -> dict:
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)
