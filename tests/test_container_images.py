"""The images tier (`make images`): every image of every pattern, found from its compose file and Dockerfiles,
built with the real Dockerfiles on one daemon, and every container proven to serve (mlpatterns/images_tier.py).

Heavy (Docker builds), so it runs only with MLPATTERNS_IMAGES=1, which `make images` sets; `make test` skips
it. A new pattern is a new test id here the day it lands: the list comes from the chapter directories.
"""

import os

import pytest
import yaml

from mlpatterns import images_tier
from mlpatterns.runner.run import stop_on_signals

pytestmark = pytest.mark.skipif(
    os.environ.get("MLPATTERNS_IMAGES") != "1", reason="the images tier runs with `make images`"
)

PATTERNS = [str(d.relative_to(images_tier.ROOT)) for d in images_tier.pattern_dirs()]
REPORTS: dict[str, images_tier.PatternReport] = {}


@pytest.fixture(scope="module")
def tier():
    """The daemon (private, or DOCKER_HOST's), the Python base (or its stand-in) and the shared bases; the
    daemon and every container are removed at the end, whatever failed. The summary (sizes, times, what
    served) goes to build/images/report.txt, which `make images` prints."""
    stop_on_signals()  # SIGTERM or SIGHUP stop the tier as Ctrl-C does: containers and the daemon removed on the way
    with images_tier.docker_daemon() as docker:
        tier = images_tier.Tier(docker)
        failure = None
        try:
            tier.prepare()
        except images_tier.TierError as error:
            failure = str(error)
        if failure:  # outside the except block: the message alone, not a chained traceback
            pytest.fail(failure, pytrace=False)
        yield tier
        summary = tier.summary([REPORTS[p] for p in PATTERNS if p in REPORTS])
        (images_tier.BUILD / "images").mkdir(parents=True, exist_ok=True)
        (images_tier.BUILD / "images" / "report.txt").write_text("\n".join(summary) + "\n")


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("pattern", PATTERNS)
def test_images_build_and_every_container_serves(tier, pattern):
    failure = None
    try:
        REPORTS[pattern] = tier.check_pattern(pattern)
    except images_tier.TierError as error:
        failure = str(error)
    if failure:  # outside the except block: the message alone, not a chained traceback
        pytest.fail(failure, pytrace=False)


@pytest.mark.parametrize(
    ("pattern", "image", "holds"),
    [
        ("chapter3_release_patterns/model_in_image_pattern", "mlpatterns/model_in_image_pattern:0.1.0", True),
        ("chapter3_release_patterns/model_load_pattern", "mlpatterns/model_load_pattern_api:0.1.0", False),
    ],
)
def test_model_in_image_holds_its_model_and_the_model_load_api_none(tier, pattern, image, holds):
    """As the two READMEs say: the model-in-image image serves the model it carries; the model-load API
    image carries none and serves what the loader put in its volume."""
    if pattern not in REPORTS:
        pytest.skip(f"{pattern} was not checked in this run")
    models = REPORTS[pattern].models[image]
    assert bool(models) is holds, f"{image} holds {models or 'no model'}"


# --- the tier's own faults: what a user sees when an image or a container is broken ------------------------


def test_a_dockerfile_that_fails_names_the_pattern_and_the_step(tier, tmp_path):
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM mlpatterns/base:0.1.0\nRUN echo the first step works\nRUN exit 3\n")
    image = images_tier.Image("mlpatterns/broken:0.1.0", "chapter9/broken_pattern", str(dockerfile))
    with pytest.raises(images_tier.TierError) as failure:
        images_tier.build(tier.docker, image, {})
    message = str(failure.value)
    assert message.startswith(f"chapter9/broken_pattern: building mlpatterns/broken:0.1.0 from {dockerfile} failed")
    assert "failed at Step 3/3 : RUN exit 3" in message


def test_a_container_that_dies_before_it_is_healthy_shows_its_last_lines_and_nothing_is_left(tier, tmp_path):
    crash = "print('cannot load models/iris_svc/model.onnx', flush=True); raise SystemExit(3)"
    api = {
        "image": "mlpatterns/base:0.1.0",
        "command": ["python", "-c", crash],
        "ports": ["8000:8000"],
        "healthcheck": {"test": ["CMD", "python", "-m", "mlpatterns.healthcheck", "/health"]},
    }
    (tmp_path / "docker-compose.yml").write_text(yaml.safe_dump({"services": {"api": api}}))
    with pytest.raises(images_tier.TierError) as failure:
        with images_tier.ComposeRun(tier.docker, str(tmp_path), "fault-test") as run:
            run.run()
    message = str(failure.value)
    assert "api exited with code 3 before it was healthy" in message
    assert "--- last log lines of" in message and "cannot load models/iris_svc/model.onnx" in message
    left = tier.docker("ps", "-a", "-q", "--filter", f"label={images_tier.LABEL}=fault-test").stdout.split()
    assert left == []
