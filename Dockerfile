# Two images from one file:
#   docker build --target worker -t streamserve .           the worker and the operator's tools
#   docker build --target loadgen -t streamserve-loadgen .  plus the harness: demo model and
#                                                            features, load generator
FROM python:3.11-slim AS worker
WORKDIR /app
COPY pyproject.toml README.md ./
COPY streamserve ./streamserve
# the registry extra: Avro, Protobuf and JSON Schema through the compose file's Schema Registry
RUN pip install --no-cache-dir ".[registry]" && useradd --create-home streamserve
USER streamserve
EXPOSE 9400
CMD ["streamserve", "worker"]

FROM worker AS loadgen
USER root
COPY loadgen ./loadgen
RUN pip install --no-cache-dir "./loadgen[bench]"
USER streamserve
CMD ["streamserve-loadgen", "--help"]
