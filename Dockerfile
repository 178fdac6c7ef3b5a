# One image for the Ray head and the workers: CPU torch 2.13.0, Ray (with the job
# server and runtime_env agent), paretune. No secrets are baked in: the Ray token is
# mounted or passed at run time (docs/cluster.md).
# Build: docker build -t paretune .
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=token
RUN useradd --create-home --uid 1000 paretune
WORKDIR /home/paretune/app

# Same order as scripts/setup.sh: CPU torch first (pip never pulls a CUDA build), then
# the project, whose dependencies include ray[tune,default].
RUN pip install "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY search ./search
COPY spaces ./spaces
COPY objectives ./objectives
COPY studies ./studies
RUN pip install . && paretune --help >/dev/null

USER paretune
# Head:   docker run ... paretune ray start --head --block --node-ip-address=<ip> ...
# Worker: docker run ... paretune ray start --block --address=<head-ip>:6379 ...
CMD ["paretune", "--help"]
