# the JSON tree parser of the translation: fixed cases, and a differential
# test against jansson on random and mutated documents (jansson is linked
# for the test only)
add_executable(test_jtree t/unit/test_jtree.c
               ngx_ai_gateway_module/ngx_http_ai_gateway_jtree.c
               ngx_ai_gateway_module/ngx_http_ai_gateway_json.c)
target_include_directories(test_jtree PRIVATE ngx_ai_gateway_module)
target_compile_options(test_jtree PRIVATE -Wall -Wextra -Werror -g -O1)
target_link_libraries(test_jtree ${JANSSON_LIB})
add_test(NAME jtree COMMAND test_jtree)

# the same on the portable (non-SSE2) code
add_executable(test_jtree_portable t/unit/test_jtree.c
               ngx_ai_gateway_module/ngx_http_ai_gateway_jtree.c
               ngx_ai_gateway_module/ngx_http_ai_gateway_json.c)
target_include_directories(test_jtree_portable PRIVATE ngx_ai_gateway_module)
target_compile_definitions(test_jtree_portable PRIVATE
                           NGX_HTTP_AI_GATEWAY_JTREE_NO_SIMD
                           NGX_HTTP_AI_GATEWAY_JSON_NO_SIMD)
target_compile_options(test_jtree_portable PRIVATE -Wall -Wextra -Werror -g -O1)
target_link_libraries(test_jtree_portable ${JANSSON_LIB})
add_test(NAME jtree_portable COMMAND test_jtree_portable)

list(APPEND AI_GATEWAY_UNIT_TESTS test_jtree test_jtree_portable)
