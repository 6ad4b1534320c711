"""The book's example requests against a running asynchronous pattern: a job goes from pending to done."""

from mlpatterns.demo import DemoClient, wait_job
from mlpatterns.images import sample_digits


def demo(client: DemoClient) -> None:
    proxy = client.service("proxy")
    digits = sample_digits()
    proxy.get("/health")
    proxy.get("/label")
    # The answer comes at once, with the job's id; the job is already stored, so it is found right away.
    job_id = proxy.get("/predict/test").json()["job_id"]  # the bundled sample, a 7
    wait_job(
        proxy, job_id, answer={"state": "done", "prediction": "7"}
    )  # running (an idle worker took it at once) -> done, "prediction": "7"
    # Ten jobs at once: the two workers share them, the last ones wait in the queue (pending) meanwhile.
    ids = {label: proxy.post("/predict", {"image_data": image}).json()["job_id"] for label, image in digits.items()}
    wait_job(
        proxy, ids["9"], answer={"state": "done", "prediction": "9"}
    )  # pending -> running -> done, "prediction": "9"
    answers = {label: wait_job(proxy, job_id, show=False)["prediction"] for label, job_id in ids.items()}
    print(f"\n  ten digits -> {answers}")
    # Bad input is refused when it is submitted, not failed later by a worker; an unknown job is a 404.
    proxy.post("/predict", {"image_data": "bm90IGFuIGltYWdl"}, expect=422)  # base64 of "not an image"
    proxy.post("/predict", {"image": digits["3"]}, expect=422)
    proxy.get("/job/00000000-0000-4000-8000-000000000000", expect=404)
