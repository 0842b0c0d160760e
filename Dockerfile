# The service image. It needs an external PostgreSQL: set TELEPHONY_DATABASE_URL
# (the embedded cluster of `make run` is for laptops and tests, not containers)
# and TELEPHONY_MASTER_KEY (base64 of 32 random bytes). See docker-compose.yml.
# The wheel is built apart: rtp/_batch.c needs a C compiler, which the image does not keep.
FROM python:3.11-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY telephony ./telephony
COPY storage ./storage
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    TELEPHONY_HOST=0.0.0.0 \
    TELEPHONY_PORT=8080 \
    TELEPHONY_DATA_DIR=/var/lib/telephony

RUN groupadd --system telephony \
 && useradd --system --gid telephony --home-dir /var/lib/telephony --shell /usr/sbin/nologin telephony \
 && mkdir -p /var/lib/telephony \
 && chown telephony:telephony /var/lib/telephony \
 && chmod 0700 /var/lib/telephony

COPY --from=build /wheels /wheels
RUN pip install --no-compile /wheels/*.whl && rm -rf /wheels

USER telephony
VOLUME ["/var/lib/telephony"]
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status == 200 else 1)"]
CMD ["telephony", "serve"]
