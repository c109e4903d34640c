# PII detectors and the keyword engine (guardrails), also on the portable
# (non-SSE2) skips; bench_pii times the scan and is no test
ai_gateway_unit_test(test_pii
  SOURCES t/unit/test_pii.c
          ngx_ai_gateway_module/ngx_http_ai_gateway_pii.c)
ai_gateway_unit_test(test_pii_portable
  SOURCES t/unit/test_pii.c
          ngx_ai_gateway_module/ngx_http_ai_gateway_pii.c
  DEFINES NGX_HTTP_AI_GATEWAY_PII_NO_SIMD)

add_executable(bench_pii bench/pii.c
               ngx_ai_gateway_module/ngx_http_ai_gateway_pii.c)
target_include_directories(bench_pii PRIVATE ngx_ai_gateway_module)
target_compile_options(bench_pii PRIVATE -Wall -Wextra -Werror -O2)
