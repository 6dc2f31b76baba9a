"""One run on two processes: a real ``torchrun --nproc_per_node=2 -m ptexp`` (gloo on CPU) against the same run on
one process. With dropout off, DistributedDataParallel must train the same model: the same per-step train losses,
eval loss and accuracy, and adapter weights, up to float rounding. Only rank 0 logs (one MLflow run) and writes
(one run folder, rank 0's: the test gives each rank its own Hydra run dir, so the other one must be dropped).

The global batch of 7 does not split evenly over 2 ranks (4 + 3 rows), and the epoch's last batch has 1 row, so one
rank has none (its zero-weight row keeps it in the gradient sync); eval batches of 8 are sharded 2 + 2.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ptexp.trainer import run_experiment
from tests.conftest import TINY, make_config, run_cli, runs_in

ARGS = [
    *TINY,  # 64 train / 32 eval rows, 1 epoch
    "trainer.batch_size=7",  # 10 steps: 9 of 7 rows, 1 of 1 row
    "trainer.eval_batch_size=8",
    "trainer.log_every=1",
    "trainer.eval_every=5",
    "trainer.threads=1",
    "model.classifier_dropout=0",
    "+model.config_overrides.hidden_dropout_prob=0",
    "+model.config_overrides.attention_probs_dropout_prob=0",
]
STEPS = 10


def rows(run_dir: Path, key: str) -> list[tuple[int, float]]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [(r["step"], r[key]) for r in map(json.loads, lines) if key in r]


@pytest.fixture
def single_threaded():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)  # trainer.threads=1 in-process would slow the tests after this one


@pytest.mark.slow  # kept out of the default suite for time; `make test-slow` runs it
@pytest.mark.parametrize("method", ["full", "prefix"])
def test_torchrun_on_two_processes_trains_what_one_process_does(tmp_path, method, single_threaded):
    # measured on CPU: train losses within 1.3e-7 relative, eval losses equal, adapters within 2.3e-8
    check_ddp_equals_single(tmp_path, [*ARGS, f"method={method}", "trainer.device=cpu"], "gloo", rel=1e-5, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2, reason="needs 2 CUDA devices")
@pytest.mark.parametrize("method", ["full", "prefix"])
def test_torchrun_on_two_gpus_trains_what_one_gpu_does(tmp_path, method):
    # plain fp32 (no bf16 autocast, no TF32) so that both sides compute the same thing; GPU kernels round differently
    args = [*ARGS, f"method={method}", "trainer.device=cuda", "trainer.precision=fp32"]
    check_ddp_equals_single(tmp_path, args, "nccl", rel=1e-4, atol=1e-5)


def check_ddp_equals_single(tmp_path: Path, args: list[str], backend: str, rel: float, atol: float) -> None:
    ddp_root, single_root = tmp_path / "ddp", tmp_path / "single"
    proc = run_cli(
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "ptexp",
        *args,
        f"output_root={ddp_root}",
        f"hydra.run.dir={ddp_root}/run_rank${{oc.env:RANK}}",  # a folder per rank: rank 0's must win
        module="torch.distributed.run",
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    ddp_dir = ddp_root / "run_rank0"
    assert not (ddp_root / "run_rank1").exists(), "rank 1 left its own run folder"
    assert sorted(p.name for p in ddp_root.iterdir() if p.is_dir()) == ["cache", "mlartifacts", "run_rank0"]
    assert proc.stdout.count(" parameters train ") == 1  # rank 0 alone reports

    result = run_experiment(make_config(*args, output_root=single_root), single_root / "run")

    (run,) = runs_in(ddp_root / "mlflow.db")  # exactly one MLflow run for the two processes
    assert run.info.status == "FINISHED"
    assert run.data.tags["ptexp.world_size"] == "2" and run.data.tags["ptexp.dist_backend"] == backend
    assert run.data.params["trainer.batch_size"] == "7"
    assert run.data.metrics["eval/accuracy"] == result["eval/accuracy"]

    ddp_losses, single_losses = rows(ddp_dir, "train/loss"), rows(single_root / "run", "train/loss")
    assert [step for step, _ in ddp_losses] == list(range(1, STEPS + 1))  # one row per step: rank 0 logs alone
    assert [step for step, _ in single_losses] == list(range(1, STEPS + 1))
    for (_, ddp), (_, one) in zip(ddp_losses, single_losses, strict=True):
        assert ddp == pytest.approx(one, rel=rel)
    ddp_eval, single_eval = rows(ddp_dir, "eval/loss"), rows(single_root / "run", "eval/loss")
    assert [s for s, _ in ddp_eval] == [s for s, _ in single_eval] == [5, STEPS]
    for (_, ddp), (_, one) in zip(ddp_eval, single_eval, strict=True):
        assert ddp == pytest.approx(one, rel=rel)
    assert rows(ddp_dir, "eval/accuracy") == rows(single_root / "run", "eval/accuracy")
    done = json.loads((ddp_dir / "result.json").read_text())
    assert done["eval/accuracy"] == result["eval/accuracy"]
    assert done["train/steps"] == STEPS
    assert done["train/real_token_fraction"] <= 1  # the ranks' tokens, summed

    # the outputs the ranks gathered are back in the eval split's row order: the same predictions as one process's
    ddp_rows, single_rows = (
        [json.loads(line) for line in (folder / "predictions" / "eval.jsonl").read_text().splitlines()]
        for folder in (ddp_dir, single_root / "run")
    )
    assert [r["id"] for r in ddp_rows] == list(range(32)) and [r["id"] for r in single_rows] == list(range(32))
    assert [(r["label"], r["prediction"]) for r in ddp_rows] == [(r["label"], r["prediction"]) for r in single_rows]
    for ddp, one in zip(ddp_rows, single_rows, strict=True):
        assert ddp["logits"] == pytest.approx(one["logits"], rel=rel, abs=atol)

    ddp_adapter = load_file(str(ddp_dir / "adapter" / "adapter.safetensors"))
    single_adapter = load_file(str(single_root / "run" / "adapter" / "adapter.safetensors"))
    assert ddp_adapter.keys() == single_adapter.keys()
    for name, tensor in single_adapter.items():
        torch.testing.assert_close(ddp_adapter[name], tensor, atol=atol, rtol=0, msg=name)


@pytest.mark.parametrize(
    ("overrides", "unused"),
    [(["method=full"], False), (["method=full", "model.pooling=mean"], True), (["method=prefix"], False)],
)
def test_ddp_is_told_about_trained_parameters_the_forward_leaves_unused(tiny_config, overrides, unused):
    """BERT's pooler trains under method=full but gets no gradient with mean pooling: DDP then needs
    find_unused_parameters. The probe's forward + backward leaves no gradient behind and the RNG where it was."""
    from ptexp.data import Collator, encode
    from ptexp.distributed import unused_trainable
    from ptexp.experiment import build_experiment, prepare_config

    cfg = tiny_config(*overrides, "tracking.enabled=false")
    prepare_config(cfg)
    built = build_experiment(cfg, torch.device("cpu"))
    train_set = encode(built.dataset.train, built.tokenizer, cfg.data.max_length)
    rng = torch.get_rng_state()
    collate = Collator(built.tokenizer.pad_token_id)
    assert unused_trainable(built.model, train_set, collate, torch.device("cpu")) is unused
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(p.grad is None for p in built.model.parameters())
