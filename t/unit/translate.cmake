# OpenAI chat <-> Anthropic messages translation; the stream tests feed
# Anthropic SSE text through the SSE parser as well.  jansson is the test's
# own (it compares outputs structurally): the translation parses with jtree
ai_gateway_unit_test(test_translate
  SOURCES t/unit/test_translate.c
          ngx_ai_gateway_module/ngx_http_ai_gateway_translate.c
          ngx_ai_gateway_module/ngx_http_ai_gateway_jtree.c
          ngx_ai_gateway_module/ngx_http_ai_gateway_json.c
          ngx_ai_gateway_module/ngx_http_ai_gateway_sse.c
  LIBS ${JANSSON_LIB})

# instructions of a request and an answer translation, for callgrind (see
# the file); no test
add_executable(bench_translate bench/translate_bench.c
               ngx_ai_gateway_module/ngx_http_ai_gateway_translate.c
               ngx_ai_gateway_module/ngx_http_ai_gateway_jtree.c
               ngx_ai_gateway_module/ngx_http_ai_gateway_json.c)
target_include_directories(bench_translate PRIVATE ngx_ai_gateway_module)
target_compile_options(bench_translate PRIVATE -Wall -Wextra -Werror -O2)
