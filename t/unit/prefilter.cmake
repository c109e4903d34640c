# the literal prefilter of guardrail patterns: what it reads from patterns,
# and, against PCRE2 on random patterns and texts, that it never rules out a
# text a pattern matches (PCRE2 is linked for the test's reference)
find_library(PCRE2_LIB pcre2-8 REQUIRED)

add_executable(test_prefilter t/unit/test_prefilter.c
               ngx_ai_gateway_module/ngx_http_ai_gateway_prefilter.c)
target_include_directories(test_prefilter PRIVATE ngx_ai_gateway_module)
target_compile_options(test_prefilter PRIVATE -Wall -Wextra -Werror -g -O1)
target_link_libraries(test_prefilter ${PCRE2_LIB})
add_test(NAME prefilter COMMAND test_prefilter)

# the same on the portable (non-SSE2) lowercasing
add_executable(test_prefilter_portable t/unit/test_prefilter.c
               ngx_ai_gateway_module/ngx_http_ai_gateway_prefilter.c)
target_include_directories(test_prefilter_portable PRIVATE ngx_ai_gateway_module)
target_compile_definitions(test_prefilter_portable PRIVATE
                           NGX_HTTP_AI_GATEWAY_PREFILTER_NO_SIMD)
target_compile_options(test_prefilter_portable PRIVATE -Wall -Wextra -Werror -g -O1)
target_link_libraries(test_prefilter_portable ${PCRE2_LIB})
add_test(NAME prefilter_portable COMMAND test_prefilter_portable)

list(APPEND AI_GATEWAY_UNIT_TESTS test_prefilter test_prefilter_portable)
