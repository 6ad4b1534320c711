"""compare.py: records found among log lines, paired by request id, agreement counted row by row."""

import json

from chapter6_operation_management.shadow_ab_pattern.compare import compare, main, read_records


def record(rid: str, model: str, labels: list[str]) -> str:
    rows = [[0.9, 0.1, 0.0]] * len(labels)
    return json.dumps(
        {"request_id": rid, "job_id": "j", "model": model, "input": [[1.0, 2.0, 3.0, 4.0]] * len(labels)}
        | {"prediction": rows, "label": labels}
    )


A_LOG = [
    "[2026-12-01 05:10:14 +0000] [16671] [INFO] Starting gunicorn 27.0.1",  # the server's own lines are passed over
    record("r1", "iris_svc", ["setosa"]),
    "{not json",
    record("r2", "iris_svc", ["versicolor", "virginica"]),
    record("r3", "iris_svc", ["setosa"]),
]
B_LOG = [record("r2", "iris_rf", ["virginica", "virginica"]), record("r1", "iris_rf", ["setosa"])]
B_LOG += [record("r4", "iris_rf", ["setosa"]), '{"level": "INFO", "message": "a JSON log line, no record"}']


def test_records_are_paired_by_request_id_and_compared_row_by_row():
    comparison = compare(read_records(A_LOG), read_records(B_LOG))
    assert [(a["request_id"], b["request_id"]) for a, b in comparison.pairs] == [("r1", "r1"), ("r2", "r2")]
    assert (comparison.rows, comparison.agreeing_rows) == (3, 2)
    assert [(a["request_id"], row) for a, row in comparison.disagreements()] == [("r2", 0)]
    assert [r["request_id"] for r in comparison.only_a] == ["r3"]
    assert [r["request_id"] for r in comparison.only_b] == ["r4"]


def test_the_command_prints_the_summary(tmp_path, capsys):
    (tmp_path / "a.log").write_text("\n".join(A_LOG))
    (tmp_path / "b.log").write_text("\n".join(B_LOG))
    assert main([str(tmp_path / "a.log"), str(tmp_path / "b.log")]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "2 requests recorded by both models (3 rows): labels agree on 2 rows (66.7%)",
        "  r2 row 0 [1.0, 2.0, 3.0, 4.0]: iris_svc versicolor [0.9, 0.1, 0.0], iris_rf virginica [0.9, 0.1, 0.0]",
        "1 recorded by A only, 1 by B only",
    ]
    assert main([str(tmp_path / "a.log"), str(tmp_path / "missing.log")]) == 2
