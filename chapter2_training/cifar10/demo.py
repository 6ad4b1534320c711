"""Three digits, shaped like CIFAR images, sent to the served CNN."""

from mlpatterns.demo import DemoClient
from mlpatterns.training.images import digits_as_cifar


def demo(client: DemoClient) -> None:
    serve = client.service("serve")
    serve.get("/health")
    serve.get("/label")
    images, classes = digits_as_cifar()
    picks = [0, 1, 2]  # the first zero, one and two of scikit-learn's digits
    print(f"\n  sending digits {[classes[images.labels[i]] for i in picks]} as 3x32x32 images")
    serve.post("/predict/label", {"data": images.images[picks].tolist()}, answer={"prediction": ["0", "1", "2"]})
    # One image of one channel, 28x28 as MNIST's, not 3x32x32: a 422 that names both shapes.
    serve.post("/predict/label", {"data": [[[[0.0] * 28] * 28]]}, expect=422)
