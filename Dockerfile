# The slotguard worker image used by docker-compose.yml.
FROM python:3.11-slim

WORKDIR /app
# Only what the package needs: the build context may hold local state (.slotguard/, .venv/).
COPY pyproject.toml README.md ./
COPY slotguard ./slotguard
COPY processor ./processor
COPY connectors ./connectors
COPY schemas ./schemas
RUN pip install --no-cache-dir . \
    && useradd --system --create-home slotguard \
    && mkdir /data && chown slotguard /data

USER slotguard
ENV SLOTGUARD_DATA_DIR=/data
EXPOSE 6066
CMD ["slotguard", "worker"]
