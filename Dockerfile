# syntax=docker/dockerfile:1
# wacall: answer WhatsApp calls with a local voice agent. Everything runs offline: the speech models are
# Python packages pinned (with hashes) in requirements.lock, and the default flow and the model manifest
# ship inside the wacall wheel.
#
#   docker build -t wacall .
#   docker run --rm wacall simulate                     # a simulated call through the whole stack
#   docker run -d --name wacall --network host -v wacall-data:/data \
#     -e WHATSAPP_TOKEN -e WHATSAPP_PHONE_NUMBER_ID -e WHATSAPP_APP_SECRET -e WHATSAPP_VERIFY_TOKEN wacall
#
# Your own flows: mount them and point WACALL_FLOW at one (-v "$PWD/flows:/flows:ro" -e WACALL_FLOW=/flows/x.yaml).
# A bind mount for /data must be writable by uid 10001; a named volume gets that ownership from the image.
# tests/test_image_conditions.py reproduces this image's runtime conditions without Docker: the installed
# wheel, a non-root user, a working directory without prompts/, /data the only writable place, the HEALTHCHECK.

# The wheel is built in its own stage so that the build backend never reaches the runtime image.
FROM python:3.12-slim AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY agent ./agent
COPY prompts ./prompts
COPY models ./models
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

FROM python:3.12-slim
# Offline in every respect: no model hub, and no onnxruntime telemetry (it would upload, and write a device id
# into a home directory that does not exist).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    HF_HUB_OFFLINE=1 \
    ORT_DISABLE_TELEMETRY=1 \
    WACALL_DATA_DIR=/data \
    WACALL_HOST=0.0.0.0 \
    WACALL_PORT=8080

# Dependencies exactly as locked, wheels only (nothing compiles here), then wacall itself with nothing else.
RUN --mount=type=bind,source=requirements.lock,target=/tmp/requirements.lock \
    pip install --no-cache-dir --require-hashes --no-deps --only-binary=:all: -r /tmp/requirements.lock
RUN --mount=type=bind,from=wheel,source=/dist,target=/tmp/dist \
    pip install --no-cache-dir --no-index --no-deps /tmp/dist/wacall-*.whl

# The call records (SQLite) live in /data, the only place the agent can write to.
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin wacall \
    && install -d -o wacall -g wacall -m 0750 /data
VOLUME /data
# Root-owned and empty: a relative path in a setting cannot write outside the volume, and the default flow
# is the one inside the installed package.
WORKDIR /app
# Numeric, so that Kubernetes' runAsNonRoot can check it.
USER 10001:10001

# Webhooks over HTTP (put TLS in front); media uses UDP ports chosen by ICE, so run with host networking
# or set WACALL_MEDIA_HOSTS to the address the container is reachable on. Change the port with WACALL_PORT
# (the health check follows it), not with --port.
EXPOSE 8080
# Python turns SIGINT into a clean shutdown at any point, also while the models load; as PID 1 it would
# ignore SIGTERM until uvicorn is up.
STOPSIGNAL SIGINT
# Loading the models and pre-synthesising the flow's lines takes a while before /healthz answers.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('WACALL_PORT', '8080'), timeout=4)"]
ENTRYPOINT ["wacall"]
CMD ["serve"]
