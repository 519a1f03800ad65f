# The streamserve image: the worker, the CLI tools and the load generator.
#   docker build -t streamserve .
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY streamserve ./streamserve
COPY loadgen ./loadgen
RUN pip install --no-cache-dir ".[loadgen]" && useradd --create-home streamserve
USER streamserve
EXPOSE 9400
CMD ["streamserve", "worker"]
