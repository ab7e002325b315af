# CPU image: the tabular, decision, gates and push steps of the pipeline (pipeline.base_image in the
# gcp profile). Build from the repository root (the .dockerignore there keeps the context small):
#   docker build -f docker/cpu.Dockerfile -t REGISTRY/cpu:TAG .      (or `make images`)
FROM python:3.11.7-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY pyproject.toml constraints.txt README.md ./
COPY retention ./retention
COPY components ./components
COPY pipelines ./pipelines
COPY serving ./serving
COPY retention_cli ./retention_cli
COPY configs ./configs
ARG TORCH_VERSION=2.13.0
# torch first from the CPU index so nothing later pulls the CUDA build; the rest pinned by constraints.
RUN pip install "torch==${TORCH_VERSION}" --index-url https://download.pytorch.org/whl/cpu \
 && pip install -c constraints.txt '.[pipeline,tabular,decision]'

FROM python:3.11.7-slim-bookworm
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 RAY_USAGE_STATS_ENABLED=0
# libgomp1: OpenMP runtime of xgboost and lightgbm.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1=12.2.0-14+deb12u1 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 10001 retention \
 && install -d -o 10001 -g 10001 /opt/retention
COPY --from=build /opt/venv /opt/venv
COPY --from=build /src/configs /opt/retention/configs
# The commit the image was built from (`make images` passes `git rev-parse HEAD`): the
# registry records it as the code version of what a run in this image pushes.
ARG RETENTION_CODE_VERSION=""
ENV RETENTION_CODE_VERSION=${RETENTION_CODE_VERSION}
USER 10001
WORKDIR /opt/retention
ENTRYPOINT ["retention"]
CMD ["--help"]
