# the JSON tree parser of the translation: fixed cases, a differential test
# against jansson on random and mutated documents (jansson is linked for the
# test only), and the request facts read from a tree against the scanner's;
# also on the portable (non-SSE2) string scan and code point count
ai_gateway_unit_test(test_jtree
  SOURCES t/unit/test_jtree.c
          ngx_ai_gateway_module/ngx_http_ai_gateway_jtree.c
          ngx_ai_gateway_module/ngx_http_ai_gateway_json.c
  LIBS ${JANSSON_LIB})
ai_gateway_unit_test(test_jtree_portable
  SOURCES t/unit/test_jtree.c
          ngx_ai_gateway_module/ngx_http_ai_gateway_jtree.c
          ngx_ai_gateway_module/ngx_http_ai_gateway_json.c
  DEFINES NGX_HTTP_AI_GATEWAY_JSON_NO_SIMD
  LIBS ${JANSSON_LIB})
