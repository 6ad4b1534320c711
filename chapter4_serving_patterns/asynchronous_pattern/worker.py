"""The asynchronous pattern's worker: `python -m chapter4_serving_patterns.asynchronous_pattern.worker`.

The core's image-job worker (`mlpatterns.image_worker`, shared with the sync_async pattern) with the digits CNN:
it takes jobs from the queue, predicts each job's image and stores the label and scores. A job the model cannot
take fails with the model's own reason, as does one that waited past JOB_DEADLINE_SECONDS; the worker goes on.
"""

import sys

from mlpatterns.image_worker import main

if __name__ == "__main__":
    sys.exit(main())
