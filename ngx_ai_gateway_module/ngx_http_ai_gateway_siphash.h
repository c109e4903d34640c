
/*
 * Copyright (C) ngx_ai_gateway_module authors
 *
 * SipHash-2-4 (Aumasson and Bernstein, 2012) of a 64-bit word: a keyed
 * pseudorandom function, for request ids made of a worker's secret key and
 * a counter (ngx_http_ai_gateway_record.c).  No nginx dependency:
 * unit-tested alone against the reference vectors (t/unit/test_siphash.c).
 */


#ifndef _NGX_HTTP_AI_GATEWAY_SIPHASH_H_INCLUDED_
#define _NGX_HTTP_AI_GATEWAY_SIPHASH_H_INCLUDED_


#include <stdint.h>


/* key[0] and key[1]: the 16 key bytes read as two little-endian words;
 * m: the 8 message bytes read as one */
uint64_t ngx_http_ai_gateway_siphash(const uint64_t key[2], uint64_t m);


#endif /* _NGX_HTTP_AI_GATEWAY_SIPHASH_H_INCLUDED_ */
