# cloudfilm: one image for `serve` (HTTP + DICOM listener + in-process workers) and `worker`.

# The pinned OHIF viewer (the version scripts/fetch_ohif.sh names), served at /ohif/.
FROM node:20-slim AS ohif
COPY scripts/fetch_ohif.sh /tmp/fetch_ohif.sh
RUN sh /tmp/fetch_ohif.sh /opt/ohif
# The built-in viewer's in-browser decoders (scripts/fetch_codecs.sh's pinned npm packages), at /codecs/.
COPY scripts/fetch_codecs.sh /tmp/fetch_codecs.sh
RUN sh /tmp/fetch_codecs.sh /opt/codecs

FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    CLOUDFILM_DATA_DIR=/var/lib/cloudfilm CLOUDFILM_HTTP_HOST=0.0.0.0 CLOUDFILM_OHIF_DIR=/opt/ohif/dist \
    CLOUDFILM_CODECS_DIR=/opt/codecs/dist

RUN apt-get update \
 && apt-get install -y --no-install-recommends curl postgresql-client \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home /var/lib/cloudfilm cloudfilm \
 && install -d -o cloudfilm -g cloudfilm /var/lib/cloudfilm

WORKDIR /opt/cloudfilm
COPY pyproject.toml README.md ./
COPY pacs ./pacs
COPY viewer_api ./viewer_api
COPY ai_plugins ./ai_plugins
COPY migrations ./migrations
COPY --from=ohif /opt/ohif/dist /opt/ohif/dist
COPY --from=ohif /opt/codecs/dist /opt/codecs/dist
# CPU-only PyTorch for the built-in plugin (the project requires torch>=2.3).
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch>=2.3" \
 && pip install ".[ai]"

USER cloudfilm
VOLUME ["/var/lib/cloudfilm"]
EXPOSE 8000 11112
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8000/readyz || exit 1
ENTRYPOINT ["cloudfilm"]
CMD ["serve"]
