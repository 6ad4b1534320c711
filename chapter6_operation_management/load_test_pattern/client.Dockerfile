# Load test pattern: the load client. The scenario (locustfile.py), the job that runs it headless and the report,
# on the project's base image with the lock's [load] category (locust and what it brings) added to its venv.
# Build from the repository root after the base images (`make build` does both). The job runs once and exits:
# 0 when the gate passes, 1 when it fails; the reports go to /reports.
FROM mlpatterns/base:0.1.0
USER 0
COPY --from=mlpatterns/train-base:0.1.0 /opt/requirements/load.txt /opt/requirements/load.txt
RUN pip --python /opt/venv/bin/python install --no-cache-dir --require-hashes -r /opt/requirements/load.txt \
    && mkdir /reports \
    && chown app:app /reports
WORKDIR /app
COPY chapter6_operation_management/__init__.py chapter6_operation_management/
COPY chapter6_operation_management/load_test_pattern chapter6_operation_management/load_test_pattern
ENV REPORT_DIR=/reports
USER 10001
CMD ["python", "-m", "chapter6_operation_management.load_test_pattern.loadtest"]
