"""The asynchronous pattern's worker: `python -m chapter4_serving_patterns.asynchronous_pattern.worker`.

Takes jobs from the queue (`mlpatterns.worker.run_worker`: acknowledged delivery, a dead worker's job taken over
by another, drain on SIGTERM), predicts each job's image with the digits CNN and stores the label and scores.
A job the model cannot take (its payload is not a 3x32x32 image array, e.g. queued by a proxy of another
version) fails with the model's own reason, and the worker goes on with the next job. So does a job that waited
in the queue past JOB_DEADLINE_SECONDS (when set): its answer would come too late to be of use, and a backlog
is worked off faster by skipping it.
"""

import io
import sys
import time

import numpy as np

from chapter4_serving_patterns.asynchronous_pattern.settings import AsyncWorkerSettings
from mlpatterns.dataplane import DataPlane
from mlpatterns.jobs import Job
from mlpatterns.predictor import OnnxPredictor
from mlpatterns.worker import run_worker


class DeadlineExceeded(Exception):
    """The job waited in the queue longer than JOB_DEADLINE_SECONDS."""


def make_handler(settings: AsyncWorkerSettings):
    plane = DataPlane(OnnxPredictor(settings.model_path, settings.label_path).load(), max_items=1)

    def predict(job: Job) -> dict:
        deadline = settings.job_deadline_seconds
        if deadline and job.submitted_at is not None and (waited := time.time() - job.submitted_at) > deadline:
            raise DeadlineExceeded(
                f"waited {waited:.1f} s in the queue, more than JOB_DEADLINE_SECONDS ({deadline:g} s)"
            )
        if not isinstance(job.payload, bytes):
            raise TypeError(f"the payload must be an .npy image array, not {type(job.payload).__name__}")
        image = np.load(io.BytesIO(job.payload), allow_pickle=False)
        if settings.work_delay_seconds:
            time.sleep(settings.work_delay_seconds)
        answer = plane.predict(image[None])  # checked against the model's input first: InvalidInput if it is no image
        return {"prediction": answer.labels[0], "scores": answer.scores[0].tolist(), "model": answer.model}

    return predict


def main() -> int:
    settings = AsyncWorkerSettings()
    return run_worker(settings, make_handler(settings))


if __name__ == "__main__":
    sys.exit(main())
