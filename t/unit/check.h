
/*
 * The unit tests' one assertion: counts checks and failures, and says
 * where a failure is.  Each test's main() ends with check_summary().
 */


#ifndef _AI_GATEWAY_UNIT_CHECK_H_INCLUDED_
#define _AI_GATEWAY_UNIT_CHECK_H_INCLUDED_


#include <stdio.h>


static int  failures;
static int  checks;


#define CHECK(cond, ...)                                                      \
    do {                                                                      \
        checks++;                                                             \
        if (!(cond)) {                                                        \
            failures++;                                                       \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);              \
            fprintf(stderr, __VA_ARGS__);                                     \
            fputc('\n', stderr);                                              \
        }                                                                     \
    } while (0)


#endif /* _AI_GATEWAY_UNIT_CHECK_H_INCLUDED_ */
