# One image for the Ray head and the workers: CPU torch, Ray, paretune.
# Build: docker build -t paretune .   (no secrets are baked in; pass tokens at run time)
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 RAY_USAGE_STATS_ENABLED=0
RUN useradd --create-home --uid 1000 paretune
WORKDIR /home/paretune/app

# Same order as scripts/setup.sh: CPU torch first, then the project.
RUN pip install "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY search ./search
COPY spaces ./spaces
COPY objectives ./objectives
COPY studies ./studies
RUN pip install .

USER paretune
# Head:   docker run ... paretune ray start --head --block --node-ip-address=<ip>
# Worker: docker run ... paretune ray start --address=<head-ip>:6379 --block
CMD ["paretune", "--help"]
