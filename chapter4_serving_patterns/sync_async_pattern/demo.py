"""The book's example requests against a running sync_async pattern: the fast model's answer at once, the heavy
model's a second later (the local run's WORK_DELAY_SECONDS), from the job whose id came with the first."""

import time

from mlpatterns.demo import DemoClient, wait_job
from mlpatterns.images import sample_digits


def demo(client: DemoClient) -> None:
    proxy = client.service("proxy")
    digits = sample_digits()
    proxy.get("/health")
    proxy.get("/health/all")  # each model's state: the proxy's own, and the workers alive for the heavy one
    proxy.get("/label")
    # The answer holds the sync model's label and the heavy model's job id; the job is not done yet.
    started = time.perf_counter()
    first = proxy.get("/predict/test").json()  # the bundled sample, a 7
    took = 1000 * (time.perf_counter() - started)
    print(f"  (the sync answer, {first['model']}: {first['prediction']!r}, in {took:.1f} ms)")
    job = wait_job(
        proxy, first["job_id"], answer={"prediction": "7"}
    )  # running -> done, "model": "cifar10", "prediction": "7"
    waited = job["finished_at"] - job["submitted_at"]
    print(f"  (the heavy answer, {job['model']}: {job['prediction']!r}, {waited:.2f} s after the job was stored)")
    # Ten digits: each POST answers at once with the sync label; the two workers take the jobs two at a time.
    answers = {label: proxy.post("/predict", {"image_data": image}).json() for label, image in digits.items()}
    wait_job(
        proxy, answers["9"]["job_id"], answer={"prediction": "9"}
    )  # pending (both workers busy) -> running -> done, "prediction": "9"
    jobs = {label: wait_job(proxy, answer["job_id"], show=False) for label, answer in answers.items()}
    print(f"\n  ten digits, sync  -> {[answers[label]['prediction'] for label in digits]}")
    print(f"  ten digits, async -> {[jobs[label]['prediction'] for label in digits]}")
    # Bad input is refused before anything is predicted or queued; an unknown job is a 404.
    proxy.post("/predict", {"image_data": "bm90IGFuIGltYWdl"}, expect=422)  # base64 of "not an image"
    proxy.post("/predict", {"image": digits["3"]}, expect=422)
    proxy.get("/job/00000000-0000-4000-8000-000000000000", expect=404)
