# syntax=docker/dockerfile:1
# The predictor daemon's image: `predictor run --config /etc/predictor/config.yaml` by default; the retraining
# CronJob runs `predictor train ...` from the same image. deploy/ runs it as UID 10001 with a read-only root
# file system and /tmp as an emptyDir.
#
# The base is pinned by its full version tag. A digest pin (python:3.11.14-slim-bookworm@sha256:...) would be
# better, since tags move when Debian security updates land: it could not be resolved from where this file
# was written (no access to the image registry), so add it where the registry is reachable (CI, Renovate).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/predictor
ENV PATH=/opt/predictor/bin:$PATH
WORKDIR /src
# Dependencies first, so a source-only change reuses this layer.
COPY pyproject.toml README.md ./
COPY predictor/ predictor/
RUN pip install --no-cache-dir . \
    && python -m compileall -q /opt/predictor/lib

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="predictor" \
      org.opencontainers.image.description="Predicts SLO breaches of Kubernetes rollouts; pauses or undoes them." \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/predictor/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp
RUN groupadd --system --gid 10001 predictor \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin predictor
COPY --from=build /opt/predictor /opt/predictor
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["predictor"]
CMD ["run", "--config", "/etc/predictor/config.yaml"]
