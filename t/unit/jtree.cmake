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

list(APPEND AI_GATEWAY_UNIT_TESTS test_jtree)
