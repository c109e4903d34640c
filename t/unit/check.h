
/*
 * The unit tests' one assertion: counts checks and failures, and says
 * where a failure is.  Each test's main() ends with check_summary().
 */


#ifndef _AI_GATEWAY_UNIT_CHECK_H_INCLUDED_
#define _AI_GATEWAY_UNIT_CHECK_H_INCLUDED_


#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


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


/* a growable byte buffer, NUL-terminated */

typedef struct {
    char    *p;
    size_t   len;
    size_t   cap;
} buf_t;


static inline void
buf_add(buf_t *b, const void *p, size_t len)
{
    if (b->len + len + 1 > b->cap) {
        b->cap = (b->len + len + 1) * 2;
        b->p = realloc(b->p, b->cap);
        if (b->p == NULL) {
            abort();
        }
    }

    memcpy(b->p + b->len, p, len);
    b->len += len;
    b->p[b->len] = '\0';
}


static inline void
buf_free(buf_t *b)
{
    free(b->p);
    memset(b, 0, sizeof(buf_t));
}


/* a deterministic PRNG (xorshift64), so that failures reproduce */

#ifndef UNIT_RNG_SEED
#define UNIT_RNG_SEED  0x9e3779b97f4a7c15ULL
#endif

static uint64_t  rng_state = UNIT_RNG_SEED;

static inline uint64_t
rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}


#endif /* _AI_GATEWAY_UNIT_CHECK_H_INCLUDED_ */
