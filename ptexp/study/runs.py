"""A study in MLflow: its parent run (tags: the study's settings, each cell's grid and chosen recipe), a stage
parent per stage (``grid``, ``fill``, ``seeds``) under it, the jobs' runs under the stages; and the study's
finished runs, found by the ``study_key`` tag that each job carries (the study's key)."""

from __future__ import annotations

import json

from omegaconf import DictConfig

from ptexp.store import connect
from ptexp.study.spec import JOB_TAG, Job

PARENT, STAGE = "parent", "stage"


class StudyStore:
    """The study's MLflow client and experiment (the base config's ``tracking.experiment``)."""

    def __init__(self, cfg: DictConfig, key: str):
        self.client, self.experiment_id = connect(cfg)
        self.key = key

    def _find(self, filter_string: str) -> str | None:
        found = self.client.search_runs([self.experiment_id], filter_string, order_by=["attributes.start_time DESC"],
                                        max_results=1)  # fmt: skip
        return found[0].info.run_id if found else None

    def open(self, name: str, tags: dict[str, str], parent: str | None = None) -> str:
        """The study's parent run (``parent`` None) or its stage ``name`` under ``parent``: an earlier one set
        RUNNING again (a re-run goes on under the same runs), else a new one."""
        if parent is None:
            query = f"tags.`ptexp.study` = '{PARENT}' and tags.`ptexp.study_key` = '{self.key}'"
        else:
            query = f"tags.`mlflow.parentRunId` = '{parent}' and tags.`ptexp.study_stage` = '{name}'"
        run_id = self._find(query)
        if run_id is None:
            tags = {**tags, "ptexp.study": STAGE if parent else PARENT, "ptexp.study_key": self.key}
            if parent:
                tags.update({"mlflow.parentRunId": parent, "ptexp.study_stage": name})
            return self.client.create_run(self.experiment_id, run_name=name, tags=tags).info.run_id
        self.client.update_run(run_id, status="RUNNING")
        self.set_tags(run_id, tags)
        return run_id

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, v[:5000]) for k, v in tags.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, tags=items[i : i + 100])

    def close(self, run_id: str, status: str) -> None:
        if self.client.get_run(run_id).info.status == "RUNNING":
            self.client.set_terminated(run_id, status)

    def running(self) -> bool:
        """Whether a job's run of this study is still RUNNING (closing after an interrupt)."""
        return bool(self._job_runs("RUNNING", max_results=1))

    def finished(self) -> list:
        """Every FINISHED run of this study's jobs (tag ``study_key`` = its key), oldest first."""
        return sorted(self._job_runs("FINISHED", max_results=50000), key=lambda r: r.info.start_time)

    def _job_runs(self, status: str, max_results: int) -> list:
        query = f"tags.`{JOB_TAG}` = '{self.key}' and attributes.status = '{status}'"
        return self.client.search_runs([self.experiment_id], query, max_results=max_results)


def run_of(job: Job, runs: list) -> object | None:
    """The latest of ``runs`` whose params match the job's identity (cell, recipe, seed)."""
    found = matching(runs, job.identity())
    return found[-1] if found else None


def matching(runs: list, params: dict[str, str]) -> list:
    """The runs whose logged params have these values."""
    return [r for r in runs if all(r.data.params.get(k) == v for k, v in params.items())]


def json_tag(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))
