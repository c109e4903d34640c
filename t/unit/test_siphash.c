
/*
 * SipHash-2-4 against the reference implementation's test vector for an
 * 8-byte message: key 00 01 .. 0f, message 00 01 .. 07.
 */


#include <stdio.h>
#include <stdint.h>

#include "ngx_http_ai_gateway_siphash.h"

#include "check.h"


int
main(void)
{
    uint64_t  key[2], h, h2;

    /* bytes 00..07 and 08..0f, little-endian */
    key[0] = 0x0706050403020100ULL;
    key[1] = 0x0f0e0d0c0b0a0908ULL;

    /* vectors_sip64[8] of the reference: 62 24 93 9a 79 f5 f5 93 */
    h = ngx_http_ai_gateway_siphash(key, 0x0706050403020100ULL);
    CHECK(h == 0x93f5f5799a932462ULL, "reference vector: %016llx",
          (unsigned long long) h);

    /* another key, another value; the same inputs, the same value */
    key[0] ^= 1;
    h2 = ngx_http_ai_gateway_siphash(key, 0x0706050403020100ULL);
    CHECK(h2 != h && h2 == ngx_http_ai_gateway_siphash(key,
                                                  0x0706050403020100ULL),
          "keyed and deterministic");

    printf("%d passed, %d failed\n", checks - failures, failures);

    return failures ? 1 : 0;
}
