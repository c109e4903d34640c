
/*
 * Copyright (C) ngx_ai_gateway_module authors
 *
 * AVX2 steps shared by the guardrail scans (_prefilter.c, _pii.c), for
 * functions compiled with __attribute__((target("avx2"))) and called only
 * when the CPU has AVX2.  No nginx dependency.
 */


#ifndef _NGX_HTTP_AI_GATEWAY_SIMD_H_INCLUDED_
#define _NGX_HTTP_AI_GATEWAY_SIMD_H_INCLUDED_


#include <immintrin.h>


/*
 * The "Teddy" lookup of 32 bytes v: for each, the buckets whose tables lo
 * (by the low nibble) and hi (by the high one) both have it; nib is
 * _mm256_set1_epi8(0x0f)
 */
#define ngx_http_ai_gateway_simd_nibbles(lo, hi, v, nib)                      \
    _mm256_and_si256(_mm256_shuffle_epi8(lo, _mm256_and_si256(v, nib)),       \
                     _mm256_shuffle_epi8(hi,                                  \
                            _mm256_and_si256(_mm256_srli_epi16(v, 4), nib)))

/* a table of 16 bytes in both lanes (the shuffle looks up in its lane) */
#define ngx_http_ai_gateway_simd_table(t)                                     \
    _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *) (t)))

/* the bytes x of v with lo <= x < lo + n: x + 0x80 - lo < -0x80 + n, signed */
#define ngx_http_ai_gateway_simd_range(v, lo, n)                              \
    _mm256_cmpgt_epi8(_mm256_set1_epi8((char) (-0x80 + (n))),                 \
                      _mm256_add_epi8(v,                                      \
                                      _mm256_set1_epi8((char) (0x80 - (lo)))))


/* the word bytes of v: [A-Za-z0-9_] */
#define ngx_http_ai_gateway_simd_word(v)                                      \
    _mm256_or_si256(                                                          \
        _mm256_or_si256(                                                      \
            ngx_http_ai_gateway_simd_range(                                   \
                _mm256_or_si256(v, _mm256_set1_epi8(0x20)), 'a', 26),         \
            ngx_http_ai_gateway_simd_range(v, '0', 10)),                      \
        _mm256_cmpeq_epi8(v, _mm256_set1_epi8('_')))


#endif /* _NGX_HTTP_AI_GATEWAY_SIMD_H_INCLUDED_ */
