"""Training recipes and key=value overrides; bad values give one line naming the key."""
import pytest

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
