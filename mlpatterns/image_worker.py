"""The image-job worker: `python -m mlpatterns.image_worker` (the asynchronous and sync_async patterns' workers).

Takes jobs from the queue (`mlpatterns.worker.run_worker`: acknowledged delivery, a dead worker's job taken over
by another, drain on SIGTERM), predicts each job's image (queued by `mlpatterns.image_jobs` as an .npy array)
with its model, the digits CNN by default, and stores the label, the scores and the model's name. A job the
model cannot take (its payload is not an image array of the model's input shape, e.g. queued by a proxy of
another version) fails with the model's own reason, and the worker goes on with the next job. So does a job
that waited in the queue past JOB_DEADLINE_SECONDS (when set): its answer would come too late to be of use,
and a backlog is worked off faster by skipping it.

With BATCH_MAX_JOBS > 1 the jobs waiting together (up to that many) are predicted in one model call; each is
checked first on its own, so a job the model cannot take fails alone, and each gets the answer it would alone.
"""

import sys
import time
from pathlib import Path

import numpy as np
from pydantic import Field

from mlpatterns.dataplane import Answer, DataPlane
from mlpatterns.image_jobs import DIGITS_MODEL, from_payload
from mlpatterns.jobs import Job
from mlpatterns.predictor import OnnxPredictor
from mlpatterns.settings import ModelPath
from mlpatterns.worker import BatchHandler, Handler, WorkerSettings, run_worker


class ImageWorkerSettings(WorkerSettings):
    """A worker: takes image jobs from the queue, predicts them with its model, stores the results."""

    model_path: ModelPath = DIGITS_MODEL
    work_delay_seconds: float = Field(
        0.0,
        ge=0,
        description="Extra seconds each job takes, a stand-in for a slow model: local runs set it so a person sees a "
        "job pending and running, tests to make 'mid-job' or 'later' certain; 0 in compose and Kubernetes.",
    )
    job_deadline_seconds: float = Field(
        0.0,
        ge=0,
        description="A job that waited longer than this in the queue (from its submission) fails without a "
        "prediction: its client has given up. 0: no deadline.",
    )

    @property
    def label_path(self) -> Path:
        return self.model_path.with_name("labels.json")


class DeadlineExceeded(Exception):
    """The job waited in the queue longer than JOB_DEADLINE_SECONDS."""


def make_handlers(settings: ImageWorkerSettings) -> tuple[Handler, BatchHandler]:
    """The worker's handler of one job and of several taken together, around one data plane."""
    plane = DataPlane(OnnxPredictor(settings.model_path, settings.label_path).load(), max_items=1)

    def checked(job: Job) -> np.ndarray:
        """The job's image as the model's input (1, C, H, W), or the reason it fails."""
        deadline = settings.job_deadline_seconds
        if deadline and job.submitted_at is not None and (waited := time.time() - job.submitted_at) > deadline:
            raise DeadlineExceeded(
                f"waited {waited:.1f} s in the queue, more than JOB_DEADLINE_SECONDS ({deadline:g} s)"
            )
        return plane.to_input(from_payload(job.payload)[None])  # InvalidInput if it is no image the model takes

    def result(answer: Answer, row: int) -> dict:
        return {"prediction": answer.labels[row], "scores": answer.scores[row].tolist(), "model": answer.model}

    def predict(job: Job) -> dict:
        batch = checked(job)
        if settings.work_delay_seconds:
            time.sleep(settings.work_delay_seconds)
        return result(plane.predict_input(batch), 0)

    def predict_together(jobs: list[Job]) -> list:
        outcomes: list = []
        batches = []
        for job in jobs:
            try:
                batches.append(checked(job))
                outcomes.append(len(batches) - 1)  # its row in the model call
            except Exception as error:
                outcomes.append(error)
        if not batches:
            return outcomes
        if settings.work_delay_seconds:  # one model call, one delay
            time.sleep(settings.work_delay_seconds)
        answer = plane.predict_input(np.concatenate(batches))
        return [result(answer, outcome) if isinstance(outcome, int) else outcome for outcome in outcomes]

    return predict, predict_together


def main() -> int:
    settings = ImageWorkerSettings()
    return run_worker(settings, *make_handlers(settings))


if __name__ == "__main__":
    sys.exit(main())
