# nginx + the AI gateway module + the quickstart, on Debian bookworm.
#   ../shared/tools/docker-base.sh     (builds debian:bookworm locally)
#   docker build --network host -t ai-gateway .
#   docker run --rm --network host ai-gateway          # mock provider
#   docker run --rm --network host -e OPENAI_API_KEY ai-gateway
FROM debian:bookworm

COPY . /opt/ai-gateway
WORKDIR /opt/ai-gateway

# the README's set-up: Debian packages, then the CMake build of the module
RUN ./scripts/setup.sh \
    && install -D -m 644 build/ngx_http_ai_gateway_module.so \
         /usr/lib/nginx/modules/ngx_http_ai_gateway_module.so \
    && rm -rf /var/lib/apt/lists/*

EXPOSE 8080
CMD ["./scripts/run-gateway.sh", "/usr/lib/nginx/modules/ngx_http_ai_gateway_module.so"]
