"""The drift statistics on data whose answer is known: the training rows themselves, shifted copies, flags."""

import numpy as np
import pytest

from mlpatterns.drift import Monitor, Reference, Thresholds, check_window, psi, relative_mean_shift

RNG_SEED = 7


@pytest.fixture(scope="module")
def training() -> np.ndarray:
    rng = np.random.default_rng(RNG_SEED)
    # Four features rounded to 0.1 as the iris measurements are: ties on the deciles, which the edges must avoid.
    return np.round(rng.normal([5.8, 3.0, 3.8, 1.2], [0.8, 0.4, 1.7, 0.7], (150, 4)).clip(0.1), 1)


@pytest.fixture(scope="module")
def reference(training) -> Reference:
    return Reference.from_rows(training)


def test_reference_is_the_training_rows(reference, training):
    assert reference.means == pytest.approx(training.mean(axis=0))
    for i, (edges, shares) in enumerate(zip(reference.edges, reference.shares, strict=True)):
        assert list(edges) == sorted(set(edges)) and len(edges) >= 5
        assert len(shares) == len(edges) + 1 and sum(shares) == pytest.approx(1.0)
        # No edge on a measured value: each sits halfway between two neighbouring distinct values.
        assert not np.isin(np.round(edges, 6), training[:, i]).any()


def test_reference_round_trips_through_json(reference, tmp_path):
    path = tmp_path / "reference.json"
    path.write_text(reference.dumps())
    assert Reference.load(path) == reference


def test_reference_refuses_rows_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"reference rows must be \(N >= 10, 4\), got \(150, 3\)"):
        Reference.from_rows(np.zeros((150, 3)))


def test_mean_shift_is_relative():
    assert relative_mean_shift(np.array([5.5, 6.5]), 5.0) == pytest.approx(0.2)
    assert relative_mean_shift(np.array([4.5]), 5.0) == pytest.approx(-0.1)


def test_psi_is_zero_on_the_reference_and_grows_with_a_shift(reference, training):
    column, edges, shares = training[:, 0], reference.edges[0], reference.shares[0]
    assert psi(column, edges, shares) == pytest.approx(0.0, abs=1e-12)
    small, large = psi(column * 1.02, edges, shares), psi(column * 1.10, edges, shares)
    assert 0 < small < large
    assert large > Thresholds().psi


def test_psi_of_an_empty_bin_is_finite(reference):
    everything_in_one_bin = np.full(100, 100.0)
    value = psi(everything_in_one_bin, reference.edges[0], reference.shares[0])
    assert np.isfinite(value) and value > 1


def test_a_clean_window_raises_nothing(reference, training):
    summary = check_window(training, np.zeros(150, bool), reference, Thresholds(), 0.0, 60.0)
    assert summary.alerts == []
    assert summary.rows == 150 and summary.outlier_rate == 0.0
    assert summary.mean_shifts["sepal_length"] == pytest.approx(0.0, abs=1e-12)


def test_a_shifted_feature_raises_mean_and_psi_for_that_feature_only(reference, training):
    shifted = training.copy()
    shifted[:, 2] *= 1.10
    summary = check_window(shifted, np.zeros(150, bool), reference, Thresholds(), 10.0, 70.0)
    assert {(a.check, a.feature) for a in summary.alerts} == {("mean", "petal_length"), ("psi", "petal_length")}
    mean_alert = next(a for a in summary.alerts if a.check == "mean")
    assert mean_alert.value == pytest.approx(0.10)
    assert (mean_alert.threshold, mean_alert.window_start, mean_alert.window_end, mean_alert.rows) == (
        0.05,
        10.0,
        70.0,
        150,
    )
    assert mean_alert.message().startswith("petal_length mean out of threshold: +0.1000 (threshold 0.05) over 150")


def test_the_outlier_rate_alerts_above_its_threshold_only(reference, training):
    flags = np.zeros(150, bool)
    flags[:30] = True  # 0.2: at the threshold, not above it
    assert check_window(training, flags, reference, Thresholds(), 0, 1).alerts == []
    flags[30] = True
    (alert,) = check_window(training, flags, reference, Thresholds(), 0, 1).alerts
    assert (alert.check, alert.feature, alert.value, alert.threshold) == ("outlier_rate", None, 31 / 150, 0.2)


def test_a_window_with_too_few_rows_is_not_judged(reference, training):
    summary = check_window(training[:29] * 2, np.ones(29, bool), reference, Thresholds(min_rows=30), 0, 1)
    assert summary.alerts == [] and summary.rows == 29 and summary.outlier_rate is None


def test_the_monitor_slides_its_window_on_its_clock(reference, training):
    asked = []

    def source(start, end):
        asked.append((start, end))
        return (training * 1.2 if start >= 100 else training), np.zeros(150, bool)

    now = [50.0]
    monitor = Monitor(source, reference, window_seconds=30, clock=lambda: now[0])
    assert monitor.check().alerts == []
    now[0] = 130.0
    assert {a.check for a in monitor.check().alerts} == {"mean", "psi"}
    assert monitor.check(now=60.0).alerts == []
    assert asked == [(20.0, 50.0), (100.0, 130.0), (30.0, 60.0)]


def test_the_monitor_refuses_a_window_of_no_length(reference):
    with pytest.raises(ValueError, match="window_seconds must be a positive number, got 0"):
        Monitor(lambda s, e: (np.zeros((0, 4)), np.zeros(0, bool)), reference, window_seconds=0)
