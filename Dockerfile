# Two images from one file:
#   docker build --target worker -t streamserve .           the worker and the operator's tools
#   docker build --target loadgen -t streamserve-loadgen .  plus the harness: demo model and
#                                                            features, load generator
FROM python:3.11-slim AS worker
WORKDIR /app
# the dependencies first, in a layer of their own: a change to the source does not reinstall
# them (the registry extra: Avro, Protobuf and JSON Schema through a Schema Registry)
COPY pyproject.toml README.md ./
RUN mkdir streamserve && touch streamserve/__init__.py \
    && pip install --no-cache-dir ".[registry]" \
    && pip uninstall --yes streamserve && rm -r streamserve
COPY streamserve ./streamserve
RUN pip install --no-cache-dir --no-deps . \
    && groupadd --gid 10001 streamserve \
    && useradd --uid 10001 --gid 10001 --create-home streamserve
# numeric, so a cluster's runAsNonRoot can check it (deploy/kubernetes runs it as 10001)
USER 10001:10001
EXPOSE 9400
# /healthz: the worker loop turned within STREAMSERVE_LIVENESS_TIMEOUT_S
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s CMD ["streamserve", "probe"]
CMD ["streamserve", "worker"]

FROM worker AS loadgen
USER root
COPY loadgen ./loadgen
RUN pip install --no-cache-dir "./loadgen[bench]"
USER 10001:10001
HEALTHCHECK NONE
CMD ["streamserve-loadgen", "--help"]
