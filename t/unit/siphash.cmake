# SipHash-2-4 of the request ids, against the reference vector
add_executable(test_siphash t/unit/test_siphash.c
               ngx_ai_gateway_module/ngx_http_ai_gateway_siphash.c)
target_include_directories(test_siphash PRIVATE ngx_ai_gateway_module)
target_compile_options(test_siphash PRIVATE -Wall -Wextra -Werror -g -O1)
add_test(NAME siphash COMMAND test_siphash)

list(APPEND AI_GATEWAY_UNIT_TESTS test_siphash)
