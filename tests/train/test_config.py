"""Training recipes and key=value overrides; bad values give one line naming the key."""
import numpy as np
import pytest
import yaml

from uwm_core.config import config_dir, load_model_config, preset_names
from uwm_core.data import sample_spec
from uwm_core.train import TrainConfig, load_train_config, main


def test_recipes_follow_table_v():
    pre = load_train_config("pretrain", ["datasets=[a,b]"])
    assert isinstance(pre, TrainConfig) and pre.recipe == "pretrain" and pre.datasets == ["a", "b"]
    assert (pre.lr, pre.weight_decay, list(pre.betas), pre.eps) == (1e-4, 1e-6, [0.9, 0.999], 1e-8)
    assert (pre.lr_schedule, pre.clip_grad_norm, pre.batch_size, pre.num_steps) == ("constant", None, 36, 100_000)
    assert pre.model_preset == "paper" and pre.color_jitter.hue == 0.2
    fine = load_train_config("config/train/finetune.yaml", ["datasets=[d]", "init_from=runs/x/checkpoint"])
    assert (fine.lr_schedule, fine.warmup_steps, fine.clip_grad_norm, fine.num_steps) == ("cosine", 1000, 1.0, 10_000)
    co = load_train_config("cotrain", ["datasets=[d]", "video_datasets=[v]", "model.depth=4", "batch_size=8"])
    assert co.video_datasets == ["v"] and co.model == {"depth": 4} and co.batch_size == 8


@pytest.mark.parametrize("recipe, overrides, message", [
    ("pretrain", [], r"^datasets: required by the pretrain recipe"),
    ("cotrain", ["datasets=[d]"], r"^video_datasets: required by the cotrain recipe"),
    ("finetune", ["datasets=[d]"], r"^init_from: required by the finetune recipe"),
    ("pretrain", ["datasets=[d]", "lr=-1"], r"^lr: must be > 0, got -1.0$"),
    ("pretrain", ["datasets=[d]", "batch_size=0"], r"^batch_size: must be a positive integer, got 0$"),
    ("pretrain", ["datasets=[d]", "betas=[0.9,1.5]"], r"^betas: must be two values in \[0, 1\)"),
    ("pretrain", ["datasets=[d]", "lr_schedule=linear"], r"^lr_schedule: must be one of \['constant', 'cosine'\]"),
    ("pretrain", ["datasets=[d]", "ema_decay=1.0"], r"^ema_decay: must be in \[0, 1\)"),
    ("pretrain", ["datasets=[d]", "warmup_steps=200", "num_steps=100"], r"^warmup_steps: must be < num_steps"),
    ("pretrain", ["datasets=[d]", "color_jitter.hue=0.7"], r"^color_jitter.hue: must be in \[0, 0.5\], got 0.7"),
    ("pretrain", ["datasets=[d]", "grad_accum=abc"], r"^grad_accum: Value 'abc' of type 'str' could not be converted"),
    ("pretrain", ["datasets=[d]", "lrr=0.1"], r"^lrr: Key 'lrr' not in 'TrainConfig'"),
    ("pretrain", ["datasets=[d]", "model.cameras=[a]"], r"^model.cameras: comes from the datasets"),
    ("nonsense", ["datasets=[d]"], r"^--config: nonsense does not exist \(recipes: \['cotrain', 'finetune', .*'pretrain'"),
    (None, ["resume=/nowhere/run"], r"^resume: /nowhere/run is not a run directory"),
])
def test_bad_values_name_the_key(recipe, overrides, message):
    with pytest.raises(ValueError, match=message):
        load_train_config(recipe, overrides)


def test_cli_prints_one_line(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["--config", "config/train/pretrain.yaml", "datasets=[d]", "lr=-1"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "uwm-train: error: lr: must be > 0, got -1.0\n"
    with pytest.raises(SystemExit):
        main(["datasets=[d]"])
    assert capsys.readouterr().err == "uwm-train: error: --config: a recipe is required (e.g. --config config/train/pretrain.yaml)\n"


def crop_settings():
    """Every model preset as shipped, and with the model overrides of each recipe and of the demo."""
    cases = [(name, {}) for name in preset_names()]
    for recipe in sorted((config_dir() / "train").glob("*.yaml")):
        data = yaml.safe_load(recipe.read_text())
        cases.append((data.get("model_preset", "paper"), data.get("model") or {}))
    demo = yaml.safe_load((config_dir() / "demo.yaml").read_text())["train"]["overrides"]
    cases.append((demo["model_preset"], [f"{k.split('.', 1)[1]}={v}" for k, v in demo.items() if k.startswith("model.")]))
    return cases


@pytest.mark.parametrize("preset, overrides", crop_settings())
def test_the_deployment_crop_is_one_of_the_training_crops(preset, overrides):
    cfg = load_model_config(preset, overrides)
    spec = sample_spec(cfg, cfg.vae.downsample if cfg.variant_spec.image_diffusion else 1)
    rng = np.random.default_rng(0)
    training = {spec.crop_offsets(rng) for _ in range(2000)}
    assert spec.crop_offsets(None) in training, (spec.crop_offsets(None), sorted(training))


def test_a_resize_that_puts_the_deployment_crop_off_the_latent_grid_is_refused():
    with pytest.raises(ValueError, match=r"^model.resize_shape: \[36, 36\] puts the centre 32x32 crop .* at \[2, 2\], "
                                         r"off the 8-px latent grid .* use \[48, 48\]"):
        load_model_config("small", {"image_size": 32, "resize_shape": [36, 36]})
    load_model_config("small", {"image_size": 32, "resize_shape": [36, 36], "variant": "dp"})  # pixel crops: any
