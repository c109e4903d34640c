# PII detectors and the keyword engine (guardrails); bench_pii times the
# scan and is no test
add_executable(test_pii t/unit/test_pii.c
               ngx_ai_gateway_module/ngx_http_ai_gateway_pii.c)
target_include_directories(test_pii PRIVATE ngx_ai_gateway_module)
target_compile_options(test_pii PRIVATE -Wall -Wextra -Werror -g -O1)
add_test(NAME pii COMMAND test_pii)

# the same tests on the portable (non-SSE2) skips
add_executable(test_pii_portable t/unit/test_pii.c
               ngx_ai_gateway_module/ngx_http_ai_gateway_pii.c)
target_include_directories(test_pii_portable PRIVATE ngx_ai_gateway_module)
target_compile_definitions(test_pii_portable PRIVATE
                           NGX_HTTP_AI_GATEWAY_PII_NO_SIMD)
target_compile_options(test_pii_portable PRIVATE -Wall -Wextra -Werror -g -O1)
add_test(NAME pii_portable COMMAND test_pii_portable)

add_executable(bench_pii bench/pii.c
               ngx_ai_gateway_module/ngx_http_ai_gateway_pii.c)
target_include_directories(bench_pii PRIVATE ngx_ai_gateway_module)
target_compile_options(bench_pii PRIVATE -Wall -Wextra -Werror -O2)

list(APPEND AI_GATEWAY_UNIT_TESTS test_pii test_pii_portable)
