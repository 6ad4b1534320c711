"""The parameter-based proxy: chapter 4's fan-out to the one-vs-rest iris services (`mlpatterns/serving/fan_out.py`),
whose answers become decisions by parameters read from the environment when the proxy starts:

    SERVICE_<NAME>     the backend's URL, one variable per backend (as in chapter 4)
    ACTIVATE_<NAME>    1: ask the backend; 0: leave it out (never asked to predict, no key in the answers).
                       Required for every backend: a model is never on or off by accident.
    THRESHOLD_<NAME>   the probability of its species from which the backend's decision is 1 (else 0)
    DEFAULT_THRESHOLD  the threshold of a backend without THRESHOLD_<NAME> (0.95)

    POST /predict {"data": [[5.1, 3.5, 1.4, 0.2]]}  ->  {"setosa": 1, "versicolor": 0}

A backend that failed (down, too slow) is `null` in the decisions: unknown, not "no"; the proxy logs why and
`proxy_backend_seconds{backend, status}` counts it. A parameter that is missing, not 1 or 0 (a switch), not a
number from 0 to 1 (a threshold) or that names no backend stops the proxy at start, with every problem in one
message: a mistake in the settings is a proxy that does not start, never an answer that is wrong.
"""

import logging
import os
from collections import Counter
from collections.abc import Mapping
from typing import Annotated, Literal

from fastapi import APIRouter, FastAPI
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from mlpatterns import metrics
from mlpatterns.serving.app import add_post_routes
from mlpatterns.serving.fan_out import (
    FAN_OUT_ERRORS,
    POSITIVE,
    PREFIX,
    BackendCalls,
    BinaryScores,
    FanOutSettings,
    Reply,
    create_fan_out_app,
    discover_backends,
    fan_out,
    fan_out_response,
)

logger = logging.getLogger(__name__)

DECISIONS = metrics.counter(
    "parameter_decisions_total",
    "Rows decided, by backend and decision (1, 0, or unknown: it failed)",
    ["backend", "decision"],
)
_decisions = metrics.DeferredChildren(DECISIONS)

SWITCH = "ACTIVATE_"
THRESHOLD = "THRESHOLD_"
_switch = TypeAdapter(bool)  # 1/0, and true/false, yes/no, on/off as every boolean setting of the project
_threshold = TypeAdapter(Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)])


class ParameterSettings(FanOutSettings):
    """The proxy's settings; the per-backend parameters are read beside them (`read_parameters`)."""

    default_threshold: float = Field(
        0.95, ge=0, le=1, description="The threshold of a backend that has no THRESHOLD_<NAME> variable."
    )


class BackendParameters(BaseModel):
    url: str = Field(description="Where the backend is (its SERVICE_<NAME> variable).")
    active: bool = Field(description="ACTIVATE_<NAME>: asked, or left out of every prediction.")
    threshold: float = Field(description="THRESHOLD_<NAME>: the probability from which its decision is 1.")


class ParameterError(ValueError):
    """A parameter is missing or wrong: the proxy does not start."""


def read_parameters(
    environ: Mapping[str, str], backends: dict[str, str], default_threshold: float
) -> dict[str, BackendParameters]:
    """Each backend's switch and threshold; every problem found is named in one ParameterError."""
    problems = []

    def setting(key: str) -> str | None:
        return environ.get(key, "").strip() or None  # an empty variable is not set

    for key in sorted(environ):
        for prefix in (SWITCH, THRESHOLD):
            suffix = key.removeprefix(prefix)
            if key.startswith(prefix) and suffix.lower() not in backends:
                problems.append(f"{key} names no backend (there is no {PREFIX}{suffix})")
    parameters = {}
    for name, url in backends.items():
        switch, threshold = SWITCH + name.upper(), THRESHOLD + name.upper()
        raw_switch, raw_threshold = setting(switch), setting(threshold)
        active = value = None
        if raw_switch is None:
            problems.append(f"{switch} is not set: every backend needs its switch, 1 to ask it or 0 to leave it out")
        else:
            try:
                active = _switch.validate_python(raw_switch)
            except ValidationError:
                problems.append(f"{switch} must be 1 (ask {name}) or 0 (leave it out); got {raw_switch!r}")
        try:
            value = default_threshold if raw_threshold is None else _threshold.validate_python(raw_threshold)
        except ValidationError:
            problems.append(f"{threshold} must be a number from 0 to 1; got {raw_threshold!r}")
        if active is not None and value is not None:
            parameters[name] = BackendParameters(url=url, active=active, threshold=value)
    if problems:
        raise ParameterError("; ".join(problems) + f" (the backends: {', '.join(backends)})")
    if not any(backend.active for backend in parameters.values()):
        raise ParameterError(
            f"every backend is switched off ({', '.join(SWITCH + name.upper() + '=0' for name in backends)}): "
            "switch one on at least"
        )
    return parameters


# -- the decisions -----------------------------------------------------------------------------------------

Decisions = Annotated[
    dict[str, Literal[0, 1] | None],
    Field(
        description="Per active backend: 1 if its probability of its species is at least its threshold, else 0; "
        "null if it did not answer.",
        examples=[{"setosa": 1, "versicolor": 0}],
    ),
]
DecisionAnswer = Decisions | list[Decisions]  # one object for a one-row batch (the original's answer), else a list


def decide(replies: dict[str, Reply], parameters: dict[str, BackendParameters]) -> list[dict[str, int | None]]:
    """Per row, each backend's decision by its threshold; None where the backend failed."""
    scores = {name: reply.answer["prediction"] if reply.ok else None for name, reply in replies.items()}
    rows = len(next(s for s in scores.values() if s is not None))  # the same in every answer: checked as it came
    decisions = [
        {
            name: None if rows_scores is None else int(rows_scores[row][POSITIVE] >= parameters[name].threshold)
            for name, rows_scores in scores.items()
        }
        for row in range(rows)
    ]
    for (name, decision), count in Counter((name, row[name]) for row in decisions for name in row).items():
        _decisions[name, "unknown" if decision is None else str(decision)].inc(count)
    return decisions


class ParameterMetadata(BaseModel):
    backends: dict[str, BackendParameters]
    default_threshold: float
    backend_timeout_seconds: float
    data_sample: list


def add_parameter_routes(
    router: APIRouter, calls: BackendCalls, settings: ParameterSettings, parameters: dict[str, BackendParameters]
) -> None:
    PredictRequest = calls.PredictRequest

    def active() -> dict:
        """The backends switched on: the only ones asked to predict."""
        return {name: upstream for name, upstream in calls.upstreams.items() if parameters[name].active}

    def answer(replies: dict[str, Reply]):
        decisions = decide(replies, parameters)
        return fan_out_response(decisions[0] if len(decisions) == 1 else decisions, replies)

    @router.get("/metadata", response_model=ParameterMetadata)
    def metadata():
        return {
            "backends": parameters,
            "default_threshold": settings.default_threshold,
            "backend_timeout_seconds": calls.timeout,
            "data_sample": settings.sample_input,
        }

    @router.get("/predict/get/test", response_model=DecisionAnswer, responses=FAN_OUT_ERRORS)
    async def predict_get_test():
        """Each active backend's own GET /predict/test, decided."""
        return answer(await fan_out(active(), calls.get("/predict/test", BinaryScores)))

    @router.get("/predict/post/test", response_model=DecisionAnswer, responses=FAN_OUT_ERRORS)
    async def predict_post_test():
        """The sample batch posted to each active backend, decided."""
        return answer(await fan_out(active(), calls.predict(settings.sample_input)))

    async def predict(body: PredictRequest):
        return answer(await fan_out(active(), calls.predict(calls.checked(body.data))))

    add_post_routes(router, [("/predict", predict, DecisionAnswer)], responses=FAN_OUT_ERRORS)


def create_app(environ: Mapping[str, str] = os.environ) -> FastAPI:
    settings = ParameterSettings()
    backends = discover_backends(environ)
    parameters = read_parameters(environ, backends, settings.default_threshold)
    app = create_fan_out_app(
        settings, backends, lambda router, calls: add_parameter_routes(router, calls, settings, parameters)
    )
    switches = (f"{name} {'on' if p.active else 'off'} (threshold {p.threshold:g})" for name, p in parameters.items())
    logger.info("parameters: %s", ", ".join(switches))  # after the app: it configures the logging
    return app
