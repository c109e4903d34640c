
/*
 * Copyright (C) ngx_ai_gateway_module authors
 *
 * A driver for counting the instructions of the OpenAI <-> Anthropic
 * translation with callgrind: translates a ~1 KiB chat request and a ~500
 * byte Anthropic answer N times each (default 1).  Not a test.
 *
 *   cd build && make bench_translate
 *   valgrind --tool=callgrind ./bench_translate 1
 *   valgrind --tool=callgrind ./bench_translate 101
 *
 * The difference of the two totals, divided by 100, is the cost of one
 * request and one answer; callgrind_annotate --inclusive=yes splits it by
 * public function.  "req" or "resp" as the second argument runs only one.
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_http_ai_gateway_translate.h"


static const char  bench_request[] =
    "{\"model\":\"gpt-4o-mini\",\"temperature\":0.7,\"max_tokens\":512,"
    "\"stream\":false,\"user\":\"user-1234\",\"messages\":["
    "{\"role\":\"system\",\"content\":\"You are a helpful assistant for a "
    "travel agency. Answer briefly and politely.\\nNever invent prices; "
    "say when you do not know.\"},"
    "{\"role\":\"user\",\"content\":\"Hello! I would like to plan a trip "
    "to Lisbon in May for two people. What neighbourhoods would you "
    "recommend for a first visit, and how many days should we stay?\"},"
    "{\"role\":\"assistant\",\"content\":\"For a first visit, Baixa and "
    "Chiado are central and walkable, Alfama has the old town charm and "
    "the fado houses, and Principe Real is quieter with good restaurants."
    "\\nFour days is enough for the city itself, plus one for Sintra.\"},"
    "{\"role\":\"user\",\"content\":\"Great, thanks. We like food markets "
    "and museums more than nightlife. Could you suggest a rough plan for "
    "each day, with one museum and one place to eat? Also, is the tram 28 "
    "worth it or too crowded in May?\"},"
    "{\"role\":\"assistant\",\"content\":\"Day 1: Time Out Market and the "
    "MAAT. Day 2: Alfama, the Fado Museum, lunch at a tasca. Day 3: Belem, "
    "the Jeronimos Monastery and pasteis de nata.\"},"
    "{\"role\":\"user\",\"content\":\"Perfect. And the tram?\"}]}";

static const char  bench_answer[] =
    "{\"id\":\"msg_01XFDUDYJgAACzvnptvVoYEL\",\"type\":\"message\","
    "\"role\":\"assistant\",\"model\":\"claude-3-5-haiku-20241022\","
    "\"content\":[{\"type\":\"text\",\"text\":\"Tram 28 is worth one ride "
    "for the views through Graca and Alfama, but in May it is crowded from "
    "mid-morning. Board early, before 9, at Martim Moniz, or take the "
    "quieter tram 12 for a similar loop.\\nWalking the same route is also "
    "pleasant if you have comfortable shoes.\"}],"
    "\"stop_reason\":\"end_turn\",\"stop_sequence\":null,"
    "\"usage\":{\"input_tokens\":231,\"cache_creation_input_tokens\":0,"
    "\"cache_read_input_tokens\":0,\"output_tokens\":48}}";


int
main(int argc, char **argv)
{
    int                                       n, i, req, resp;
    ngx_http_ai_gateway_translate_buf_t       out;
    ngx_http_ai_gateway_translate_conf_t      conf;
    ngx_http_ai_gateway_translate_usage_t     u;
    ngx_http_ai_gateway_translate_request_t   r;

    n = (argc > 1) ? atoi(argv[1]) : 1;
    req = (argc <= 2 || strcmp(argv[2], "req") == 0);
    resp = (argc <= 2 || strcmp(argv[2], "resp") == 0);

    memset(&conf, 0, sizeof(conf));
    ngx_http_ai_gateway_translate_buf_init(&out, NULL, NULL);

    for (i = 0; i < n; i++) {
        if (req) {
            out.len = 0;

            if (ngx_http_ai_gateway_translate_request(
                    (const unsigned char *) bench_request,
                    sizeof(bench_request) - 1, &conf, &r, &out)
                != NGX_HTTP_AI_GATEWAY_TRANSLATE_OK)
            {
                fprintf(stderr, "request: %s\n", r.error);
                return 1;
            }
        }

        if (resp) {
            out.len = 0;

            if (ngx_http_ai_gateway_translate_response(
                    (const unsigned char *) bench_answer,
                    sizeof(bench_answer) - 1, 1700000000,
                    (const unsigned char *) "gpt-4o-mini", 11, &u, &out)
                != NGX_HTTP_AI_GATEWAY_TRANSLATE_OK)
            {
                fprintf(stderr, "response failed\n");
                return 1;
            }
        }
    }

    if (argc > 3) {
        printf("%.*s\n", (int) out.len, (char *) out.p);
    }

    printf("request %zu bytes, answer %zu bytes\n",
           sizeof(bench_request) - 1, sizeof(bench_answer) - 1);

    ngx_http_ai_gateway_translate_buf_free(&out);

    return 0;
}
