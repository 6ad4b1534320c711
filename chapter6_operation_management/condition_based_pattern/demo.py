"""The condition live: the same image with and without `target: speech`, answered by different models."""

from mlpatterns.demo import DemoClient
from mlpatterns.image_jobs import SAMPLE

SPEECH = {"target": "speech"}  # the one condition of haproxy.cfg and the VirtualService


def demo(client: DemoClient) -> None:
    proxy = client.service("proxy")
    proxy.get("/health")
    # One image, two routes: no header -> the digits model ("7"); `target: speech` -> the words model ("seven").
    proxy.post("/predict", {"image_data": SAMPLE["7"]})
    proxy.post("/predict", {"image_data": SAMPLE["7"]}, headers=SPEECH)
    proxy.get("/predict/test")
    proxy.get("/predict/test", headers=SPEECH)
    proxy.get("/label", headers=SPEECH)
    # The match is exact, as Istio's `exact: speech`: another value (the original's client sent one) or another
    # case goes the default way; the header's name is case-insensitive, as every HTTP header name is.
    for headers in ({"target": "plant"}, {"target": "Speech"}, {"TARGET": "speech"}):
        proxy.post("/predict", {"image_data": SAMPLE["3"]}, headers=headers)
    # Every sample digit on both routes: one model answers digits, the other words.
    print()
    for digit, image in SAMPLE.items():
        plain = client.http.post(proxy.base_url + "/predict", json={"image_data": image}).json()
        spoken = client.http.post(proxy.base_url + "/predict", json={"image_data": image}, headers=SPEECH).json()
        print(
            f"  digit {digit}:  no header -> {plain['model']:<6} {plain['prediction']!r:<8}"
            f"  target: speech -> {spoken['model']:<6} {spoken['prediction']!r}"
        )
    # Bad input is refused by the model the request reached, whichever it is.
    proxy.post("/predict", {"image_data": "not base64!"}, expect=422)
    proxy.post("/predict", {"image_data": "aGVsbG8="}, expect=422, headers=SPEECH)
    proxy.post("/predict", {"data": [SAMPLE["1"]]}, expect=422)
