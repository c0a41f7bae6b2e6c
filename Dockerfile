# The slotguard worker image used by docker-compose.yml: pure Python, one stage.
FROM python:3.11-slim
WORKDIR /src
# Only what the package needs: the build context may hold local state (.slotguard/, .venv/).
COPY pyproject.toml requirements.lock README.md ./
COPY slotguard ./slotguard
COPY processor ./processor
COPY connectors ./connectors
COPY schemas ./schemas
RUN pip install --no-cache-dir -c requirements.lock . && cd / && rm -rf /src \
    && useradd --system --create-home slotguard \
    && mkdir /data && chown slotguard /data

WORKDIR /app
USER slotguard
ENV SLOTGUARD_DATA_DIR=/data
EXPOSE 6066
CMD ["slotguard", "worker"]
