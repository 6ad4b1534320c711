# The model repository of the model-load pattern: the models, trained in a build stage, behind a read-only
# HTTP file server (standing in for the object store the original downloaded from).
FROM mlpatterns/train-base:0.1.0 AS models
RUN python -m mlpatterns.training.iris all --out /app/models

FROM mlpatterns/base:0.1.0
WORKDIR /app
COPY --from=models /app/models models
ENV PORT=8080 \
    DIRECTORY=models
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["python", "-m", "mlpatterns.healthcheck", "/health"]
CMD ["python", "-m", "mlpatterns.fileserver"]
