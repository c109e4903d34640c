# the literal prefilter of guardrail patterns: what it reads from patterns,
# and, against PCRE2 on random patterns and texts, that it never rules out a
# text a pattern matches (PCRE2 is linked for the test's reference); also
# on the portable (non-SSE2) search and lowercasing
find_library(PCRE2_LIB pcre2-8 REQUIRED)

ai_gateway_unit_test(test_prefilter
  SOURCES t/unit/test_prefilter.c
          ngx_ai_gateway_module/ngx_http_ai_gateway_prefilter.c
  LIBS ${PCRE2_LIB})
ai_gateway_unit_test(test_prefilter_portable
  SOURCES t/unit/test_prefilter.c
          ngx_ai_gateway_module/ngx_http_ai_gateway_prefilter.c
  DEFINES NGX_HTTP_AI_GATEWAY_PREFILTER_NO_SIMD
  LIBS ${PCRE2_LIB})
