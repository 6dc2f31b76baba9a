"""Config composition with Hydra's compose API: defaults, groups, the top-level prefix_length, and bad values."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError

from ptexp.errors import UserError
from ptexp.experiment import prepare_config, use_method_epochs, validate
from tests.conftest import CONF_DIR, make_config


def test_defaults_compose_minilm_full_embedded_adamw():
    cfg = make_config()
    assert (cfg.model.name, cfg.method.name, cfg.data.name, cfg.optimizer.name.value) == (
        "minilm",
        "full",
        "embedded",
        "adamw",
    )
    assert cfg.prefix_length is None and cfg.prefix is None
    assert cfg.optimizer.lr == pytest.approx(2e-4)
    validate(cfg)


def test_prefix_method_reads_top_level_prefix_length_and_sets_its_own_lr():
    cfg = make_config("method=prefix", "prefix_length=5")
    assert cfg.method.name == "prefix"
    assert cfg.prefix_length == 5
    assert cfg.prefix.projection is False
    assert cfg.optimizer.lr == pytest.approx(2e-2)
    validate(cfg)


def test_command_line_lr_beats_the_method_default():
    assert make_config("method=prefix", "optimizer.lr=0.003").optimizer.lr == pytest.approx(3e-3)


@pytest.mark.parametrize(
    "group,option",
    [
        ("model", "tiny"),
        ("model", "bert_base"),
        ("data", "sst2"),
        ("data", "files"),
        ("optimizer", "adam"),
        ("optimizer", "sgd"),
    ],
)
def test_every_group_option_composes(group, option):
    cfg = make_config(f"{group}={option}")
    assert cfg[group].name == option or cfg[group].name.value == option


def test_unknown_group_option_names_the_valid_ones():
    with pytest.raises(ConfigCompositionException, match="method/nope"):
        make_config("method=nope")


@pytest.mark.parametrize(
    "override,key",
    [
        ("optimizer.lr=abc", "optimizer.lr"),
        ("prefix_length=1.5", "prefix_length"),
        ("model.pooling=max", "model.pooling"),
        ("trainer.epochs=two", "trainer.epochs"),
    ],
)
def test_wrong_types_fail_while_composing(override, key):
    with pytest.raises((ConfigCompositionException, ValidationError)) as info:
        make_config("method=prefix", override)
    assert key in str(info.value) or key in str(info.value.__cause__)


def test_unknown_key_fails_while_composing():
    with pytest.raises(ConfigCompositionException, match=r"optimizer\.learning_rate"):
        make_config("optimizer.learning_rate=0.1")


@pytest.mark.parametrize(
    "override,key",
    [
        ("prefix_length=-1", "prefix_length"),
        ("optimizer.lr=-0.1", "optimizer.lr"),
        ("trainer.batch_size=0", "trainer.batch_size"),
        ("prefix.dropout=1.5", "prefix.dropout"),
        ("optimizer.warmup_ratio=1.0", "optimizer.warmup_ratio"),
        ("data.max_train_samples=0", "data.max_train_samples"),
        ("trainer.epochs=0", "trainer.epochs"),
        ("+trainer.method_epochs.prefix=-1", "trainer.method_epochs.prefix"),
        ("+trainer.method_epochs.prefixx=2", "trainer.method_epochs.prefixx"),
        ("+optimizer.task_lr.glue_rte.prefix=-1", "optimizer.task_lr.glue_rte.prefix"),
        ("+optimizer.task_lr.glue_rte.prefixx=1e-3", "optimizer.task_lr.glue_rte.prefixx"),
        ("+trainer.task_epochs.glue_rte.prefix=0", "trainer.task_epochs.glue_rte.prefix"),
        ("+trainer.task_epochs.glue_rte.prefixx=2", "trainer.task_epochs.glue_rte.prefixx"),
    ],
)
def test_cross_checks_name_the_key(override, key):
    with pytest.raises(UserError, match=key.replace(".", r"\.")):
        validate(make_config("method=prefix", override))


def test_files_data_without_files_names_the_missing_key():
    with pytest.raises(UserError, match=r"data\.train_file"):
        prepare_config(make_config("data=files"))


def test_prefix_length_is_dropped_for_methods_that_do_not_use_it(capsys):
    cfg = make_config("method=full", "prefix_length=5")
    prepare_config(cfg)
    assert cfg.prefix_length is None
    assert "does not apply" in capsys.readouterr().err


def test_tutorial_preset_matches_the_tutorial_and_sweeps_full_and_prefix():
    cfg = make_config("experiment=tutorial", "method=prefix")
    assert (cfg.model.name, cfg.optimizer.name.value, cfg.data.name) == ("bert_base", "adam", "embedded")
    assert cfg.optimizer.lr == pytest.approx(1e-5) and cfg.trainer.epochs == 3
    assert cfg.data.max_length == 10 and cfg.prefix_length == 5
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        full = compose(config_name="config", overrides=["experiment=tutorial"], return_hydra_config=True)
    assert full.hydra.sweeper.params.method == "full,prefix"
    assert make_config("experiment=tutorial", "model=minilm").model.name == "minilm"


def test_sst2_compare_preset_sweeps_five_methods_over_three_seeds():
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=["experiment=sst2_compare"], return_hydra_config=True)
    assert cfg.data.name == "sst2"
    assert cfg.hydra.sweeper.params.method == "full,prefix,prompt,lora,linear_probe"
    assert cfg.hydra.sweeper.params.seed == "1,2,3"


@pytest.mark.parametrize("method,epochs", [("full", 1), ("prefix", 1.5), ("lora", 1.4), ("prompt", 1)])
def test_sst2_compare_gives_each_method_its_tuned_epochs(method, epochs):
    cfg = make_config("experiment=sst2_compare", f"method={method}", "data.data_dir=/data/glue/sst2")
    prepare_config(cfg)
    use_method_epochs(cfg)
    assert cfg.trainer.epochs == pytest.approx(epochs)


def test_task_lr_replaces_the_learning_rate_of_that_task_and_method_only(capsys):
    rates = ["+optimizer.task_lr.glue_rte.prefix=0.05", "+optimizer.task_lr.glue_mrpc.full=1e-4"]
    for data, method, expected in (("glue_rte", "prefix", 0.05), ("glue_rte", "full", 2e-4), ("sst2", "prefix", 2e-2)):
        cfg = make_config(f"data={data}", f"method={method}", "data.data_dir=/data", *rates)
        prepare_config(cfg)
        use_method_epochs(cfg)
        assert cfg.optimizer.lr == pytest.approx(expected)
        noted = "optimizer.task_lr.glue_rte.prefix=0.05 replaces optimizer.lr=0.02" in capsys.readouterr().err
        assert noted == (expected == 0.05)


def test_task_epochs_replaces_the_epochs_of_that_task_and_method_over_method_epochs(capsys):
    over = ["trainer.epochs=3", "+trainer.method_epochs.prefix=5", "+trainer.task_epochs.glue_rte.prefix=7"]
    for data, method, expected in (("glue_rte", "prefix", 7), ("glue_mrpc", "prefix", 5), ("glue_rte", "full", 3)):
        cfg = make_config(f"data={data}", f"method={method}", "data.data_dir=/data", *over)
        prepare_config(cfg)
        use_method_epochs(cfg)
        assert cfg.trainer.epochs == expected
        noted = "trainer.task_epochs.glue_rte.prefix=7 replaces trainer.epochs=5" in capsys.readouterr().err
        assert noted == (expected == 7)
