# SipHash-2-4 of the request ids, against the reference vector
ai_gateway_unit_test(test_siphash
  SOURCES t/unit/test_siphash.c
          ngx_ai_gateway_module/ngx_http_ai_gateway_siphash.c)
