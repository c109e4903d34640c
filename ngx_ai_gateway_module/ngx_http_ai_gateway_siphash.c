
/*
 * Copyright (C) ngx_ai_gateway_module authors
 *
 * SipHash-2-4 of one 64-bit word: two compression rounds for the word, two
 * for the length block (8 bytes: 0x08 in the top byte), four to finish.
 */


#include "ngx_http_ai_gateway_siphash.h"


#define ngx_http_ai_gateway_rotl(x, b)  (((x) << (b)) | ((x) >> (64 - (b))))

#define ngx_http_ai_gateway_sipround(v0, v1, v2, v3)                          \
    v0 += v1; v1 = ngx_http_ai_gateway_rotl(v1, 13); v1 ^= v0;                \
    v0 = ngx_http_ai_gateway_rotl(v0, 32);                                    \
    v2 += v3; v3 = ngx_http_ai_gateway_rotl(v3, 16); v3 ^= v2;                \
    v0 += v3; v3 = ngx_http_ai_gateway_rotl(v3, 21); v3 ^= v0;                \
    v2 += v1; v1 = ngx_http_ai_gateway_rotl(v1, 17); v1 ^= v2;                \
    v2 = ngx_http_ai_gateway_rotl(v2, 32)


uint64_t
ngx_http_ai_gateway_siphash(const uint64_t key[2], uint64_t m)
{
    uint64_t  v0, v1, v2, v3, b;

    v0 = key[0] ^ 0x736f6d6570736575ULL;
    v1 = key[1] ^ 0x646f72616e646f6dULL;
    v2 = key[0] ^ 0x6c7967656e657261ULL;
    v3 = key[1] ^ 0x7465646279746573ULL;

    v3 ^= m;
    ngx_http_ai_gateway_sipround(v0, v1, v2, v3);
    ngx_http_ai_gateway_sipround(v0, v1, v2, v3);
    v0 ^= m;

    /* the last block: the length, 8, and no message bytes */
    b = (uint64_t) 8 << 56;

    v3 ^= b;
    ngx_http_ai_gateway_sipround(v0, v1, v2, v3);
    ngx_http_ai_gateway_sipround(v0, v1, v2, v3);
    v0 ^= b;

    v2 ^= 0xff;
    ngx_http_ai_gateway_sipround(v0, v1, v2, v3);
    ngx_http_ai_gateway_sipround(v0, v1, v2, v3);
    ngx_http_ai_gateway_sipround(v0, v1, v2, v3);
    ngx_http_ai_gateway_sipround(v0, v1, v2, v3);

    return v0 ^ v1 ^ v2 ^ v3;
}
