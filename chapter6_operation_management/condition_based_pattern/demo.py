"""The condition live: the same image with and without `target: speech`, answered by different models."""

import json
from pathlib import Path

from mlpatterns.demo import DemoClient
from mlpatterns.image_jobs import SAMPLE

SPEECH = {"target": "speech"}  # the one condition of haproxy.cfg and the VirtualService
DIGITS_7 = {"model": "digits", "prediction": "7"}
WORDS_7 = {"model": "words", "prediction": "seven"}
WORDS = list(json.loads(Path(__file__).with_name("words.json").read_text()).values())  # the words model's labels


def demo(client: DemoClient) -> None:
    proxy = client.service("proxy")
    proxy.get("/health")
    # One image, two routes: no header -> the digits model ("7"); `target: speech` -> the words model ("seven").
    proxy.post("/predict", {"image_data": SAMPLE["7"]}, answer=DIGITS_7)
    proxy.post("/predict", {"image_data": SAMPLE["7"]}, headers=SPEECH, answer=WORDS_7)
    proxy.get("/predict/test", answer=DIGITS_7)
    proxy.get("/predict/test", headers=SPEECH, answer=WORDS_7)
    proxy.get("/label", headers=SPEECH)
    # The match is exact, as Istio's `exact: speech`: another value (the original's client sent one) or another
    # case goes the default way; the header's name is case-insensitive, as every HTTP header name is.
    for headers, model, label in [
        ({"target": "plant"}, "digits", "3"),
        ({"target": "Speech"}, "digits", "3"),
        ({"TARGET": "speech"}, "words", "three"),
    ]:
        answer = {"model": model, "prediction": label}
        proxy.post("/predict", {"image_data": SAMPLE["3"]}, headers=headers, answer=answer)
    # Every sample digit on both routes: one model answers digits, the other words.
    print()
    for digit, image in SAMPLE.items():
        plain = client.http.post(proxy.base_url + "/predict", json={"image_data": image}).json()
        spoken = client.http.post(proxy.base_url + "/predict", json={"image_data": image}, headers=SPEECH).json()
        print(
            f"  digit {digit}:  no header -> {plain['model']:<6} {plain['prediction']!r:<8}"
            f"  target: speech -> {spoken['model']:<6} {spoken['prediction']!r}"
        )
        expected = ("digits", digit, "words", WORDS[int(digit)])
        if (plain["model"], plain["prediction"], spoken["model"], spoken["prediction"]) != expected:
            client.unexpected.append(f"digit {digit}: not {expected}")  # make demo fails on it
    # Bad input is refused by the model the request reached, whichever it is.
    proxy.post("/predict", {"image_data": "not base64!"}, expect=422)
    proxy.post("/predict", {"image_data": "aGVsbG8="}, expect=422, headers=SPEECH)
    proxy.post("/predict", {"data": [SAMPLE["1"]]}, expect=422)
