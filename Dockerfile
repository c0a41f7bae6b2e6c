# The slotguard worker image used by docker-compose.yml.

# Build stage: the full Python image has the C compiler setup.py's mypyc build of the core's fast path
# needs (the slim image has none, and would install the fast path interpreted: correct, slower).
FROM python:3.11 AS build
WORKDIR /src
# Only what the package needs: the build context may hold local state (.slotguard/, .venv/, *.so).
COPY pyproject.toml setup.py README.md ./
COPY slotguard ./slotguard
COPY processor ./processor
COPY connectors ./connectors
COPY schemas ./schemas
RUN find . -name '*.so' -delete && pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
WORKDIR /app
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
    && useradd --system --create-home slotguard \
    && mkdir /data && chown slotguard /data

USER slotguard
ENV SLOTGUARD_DATA_DIR=/data
EXPOSE 6066
CMD ["slotguard", "worker"]
