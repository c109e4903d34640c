
/*
 * Unit tests for the response walker and the usage parser: real-looking
 * answers and event sequences of every provider shape, each fed whole,
 * byte by byte, split at every point and in random chunks, with the
 * results written out; malformed input; the usage merge rules; a whole SSE
 * stream through the SSE parser and the walker; and mutated documents
 * (under ASan: no crash, the same results however split, and no valid
 * JSON called malformed).
 */


#define _GNU_SOURCE  /* memmem() */

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_http_ai_gateway_sse.h"
#include "ngx_http_ai_gateway_usage.h"


#define UNIT_RNG_SEED  0x2545f4914f6cdd1dULL
#include "check.h"






static uint64_t
utf8_chars(const char *s, size_t len)
{
    uint64_t  n = 0;
    size_t    i;

    for (i = 0; i < len; i++) {
        if (((unsigned char) s[i] & 0xc0) != 0x80) {
            n++;
        }
    }

    return n;
}


/* whole, valid UTF-8 characters only */

static int
utf8_whole(const unsigned char *p, size_t len)
{
    size_t    i, k, need;

    for (i = 0; i < len; i += need) {
        need = p[i] < 0x80 ? 1 : p[i] >= 0xf0 ? 4 : p[i] >= 0xe0 ? 3
               : p[i] >= 0xc0 ? 2 : 0;

        if (need == 0 || i + need > len) {
            return 0;
        }

        for (k = 1; k < need; k++) {
            if ((p[i + k] & 0xc0) != 0x80) {
                return 0;
            }
        }
    }

    return 1;
}


/* what a run saw */

#define MAX_DOCS  32

typedef struct {
    uint64_t                     chars;
    int                          seen;
    buf_t                        content;
    buf_t                        args;
    char                         model[NGX_HTTP_AI_GATEWAY_SHORT_MAX + 1];
    char                         finish[NGX_HTTP_AI_GATEWAY_SHORT_MAX + 1];
    ngx_http_ai_gateway_usage_t  u;
    int                          captures;
    int                          parse_failed;
    char                         malformed[MAX_DOCS + 1];
    int                          usage_found;
    size_t                       usage_len;
    unsigned char                usage[NGX_HTTP_AI_GATEWAY_USAGE_MAX];

    /* for on_text */
    int                          check_utf8;
    int                          bad_piece;
    int                          pieces;
    int                          stop_at;
} result_t;


static int
on_text(void *data, ngx_http_ai_gateway_text_e kind, const unsigned char *p,
    size_t len)
{
    result_t  *r = data;

    r->pieces++;

    if (len == 0 || (r->check_utf8 && !utf8_whole(p, len))) {
        r->bad_piece++;
    }

    if (kind == NGX_HTTP_AI_GATEWAY_TEXT_ARGUMENTS) {
        buf_add(&r->args, p, len);

    } else if (kind == NGX_HTTP_AI_GATEWAY_TEXT_CONTENT) {
        buf_add(&r->content, p, len);

    } else {
        r->bad_piece++;
    }

    /* bounded, for mutated input */
    if (r->content.len + r->args.len > (1 << 20)) {
        abort();
    }

    return (r->pieces == r->stop_at) ? 5 : 0;
}


enum {
    FEED_WHOLE = 0,
    FEED_BYTES,
    FEED_SPLIT,       /* document split_doc split at split_at */
    FEED_RANDOM
};


static int  split_doc;
static size_t  split_at;


static void
feed(ngx_http_ai_gateway_walk_t *w, const unsigned char *p, size_t len,
    int *rc)
{
    unsigned char  *copy;

    /* an exact copy, so that ASan sees any read beyond it */
    copy = malloc(len ? len : 1);
    memcpy(copy, p, len);

    *rc = ngx_http_ai_gateway_walk_feed(w, copy, len);

    free(copy);
}


static void
run(const char *const *docs, size_t ndocs, unsigned mode, int how,
    int check_utf8, result_t *r)
{
    int                          rc, last;
    size_t                       d, len, pos, n;
    const unsigned char         *s;
    ngx_http_ai_gateway_walk_t  *w;

    memset(r, 0, sizeof(result_t));
    buf_add(&r->content, "", 0);
    buf_add(&r->args, "", 0);
    r->check_utf8 = check_utf8;

    ngx_http_ai_gateway_usage_init(&r->u);

    w = malloc(sizeof(ngx_http_ai_gateway_walk_t));
    ngx_http_ai_gateway_walk_init(w, mode, on_text, r);

    for (d = 0; d < ndocs && d < MAX_DOCS; d++) {
        ngx_http_ai_gateway_walk_reset(w);

        s = (const unsigned char *) docs[d];
        len = strlen(docs[d]);
        last = 0;

        switch (how) {

        case FEED_BYTES:
            for (pos = 0; pos < len; pos++) {
                feed(w, s + pos, 1, &rc);
                if (rc) {
                    last = rc;
                }
            }

            break;

        case FEED_SPLIT:
            if ((int) d == split_doc && split_at <= len) {
                feed(w, s, split_at, &rc);
                last = rc;
                feed(w, s + split_at, len - split_at, &rc);
                if (rc) {
                    last = rc;
                }

                break;
            }

            /* fall through */

        case FEED_WHOLE:
            feed(w, s, len, &last);
            break;

        default: /* FEED_RANDOM */
            for (pos = 0; pos < len; pos += n) {
                n = 1 + rng() % 40;      /* (two statements: a fixed order) */
                n = 1 + rng() % n;
                if (n > len - pos) {
                    n = len - pos;
                }

                feed(w, s + pos, n, &rc);
                if (rc) {
                    last = rc;
                }
            }

            break;
        }

        CHECK((last == -1) == w->malformed || r->stop_at,
              "feed returned %d, malformed %d", last, w->malformed);

        r->malformed[d] = w->malformed ? '1' : '0';

        if (w->usage_new) {
            w->usage_new = 0;
            r->captures++;

            if (ngx_http_ai_gateway_usage_parse(&r->u, w->usage,
                                                w->usage_len)
                != 0)
            {
                r->parse_failed++;
            }
        }

        CHECK(w->usage_len <= NGX_HTTP_AI_GATEWAY_USAGE_MAX
              && w->model_len <= NGX_HTTP_AI_GATEWAY_SHORT_MAX
              && w->finish_len <= NGX_HTTP_AI_GATEWAY_SHORT_MAX,
              "lengths out of bounds");
    }

    r->chars = w->text_chars;
    r->seen = w->text_seen;
    memcpy(r->model, w->model, w->model_len);
    r->model[w->model_len] = '\0';
    memcpy(r->finish, w->finish, w->finish_len);
    r->finish[w->finish_len] = '\0';
    r->usage_found = w->usage_found;
    r->usage_len = w->usage_len;
    memcpy(r->usage, w->usage, w->usage_len);

    free(w);
}


static void
result_free(result_t *r)
{
    buf_free(&r->content);
    buf_free(&r->args);
}


static int
same(result_t *a, result_t *b)
{
    return a->chars == b->chars
           && a->seen == b->seen
           && a->content.len == b->content.len
           && memcmp(a->content.p, b->content.p, a->content.len) == 0
           && a->args.len == b->args.len
           && memcmp(a->args.p, b->args.p, a->args.len) == 0
           && strcmp(a->model, b->model) == 0
           && strcmp(a->finish, b->finish) == 0
           && memcmp(&a->u, &b->u, sizeof(a->u)) == 0
           && a->captures == b->captures
           && a->parse_failed == b->parse_failed
           && strcmp(a->malformed, b->malformed) == 0
           && a->usage_found == b->usage_found
           && a->usage_len == b->usage_len
           && memcmp(a->usage, b->usage, a->usage_len) == 0;
}


/* the fixed cases */

typedef struct {
    const char  *name;
    unsigned     mode;
    const char  *docs[MAX_DOCS];
    const char  *content;
    const char  *args;
    const char  *model;
    const char  *finish;
    int64_t      input, output, total, cached, creation, reasoning;
    const char  *malformed;          /* '1' per malformed doc; NULL: none */
} case_t;


#define JSON  NGX_HTTP_AI_GATEWAY_WALK_JSON
#define SSE   NGX_HTTP_AI_GATEWAY_WALK_SSE


static const case_t  cases[] = {

    { "openai chat json", JSON, {
      "{\"id\":\"chatcmpl-abc\",\"object\":\"chat.completion\","
      "\"created\":1700000000,\"model\":\"gpt-4o-2024-08-06\","
      "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
      "\"content\":\"Hello, caf\\u00e9 \\ud83d\\ude00 na\\u00efve "
      "\\\"quoted\\\"\\nLine 2 \\u2014 ünïcödé 日本語\\/\\\\ "
      "\\b\\f\\r\\t end\",\"refusal\":null,\"annotations\":[]},"
      "\"logprobs\":null,\"finish_reason\":\"stop\"}],"
      "\"usage\":{\"prompt_tokens\":19,\"completion_tokens\":10,"
      "\"total_tokens\":29,\"prompt_tokens_details\":{\"cached_tokens\":4,"
      "\"audio_tokens\":0},\"completion_tokens_details\":"
      "{\"reasoning_tokens\":2,\"audio_tokens\":0,"
      "\"accepted_prediction_tokens\":0,\"rejected_prediction_tokens\":0}},"
      "\"service_tier\":\"default\",\"system_fingerprint\":\"fp_50cad350e4\"}",
      NULL },
      "Hello, café 😀 naïve \"quoted\"\nLine 2 — ünïcödé 日本語/\\ "
      "\b\f\r\t end",
      "", "gpt-4o-2024-08-06", "stop", 19, 10, 29, 4, -1, 2, NULL },

    { "openai chat json, pretty", JSON, {
      "{\r\n  \"id\" : \"chatcmpl-abc\",\n\t\"model\": \"gpt-4o\" ,\n"
      "  \"choices\": [\n    {\n      \"index\": 0,\n"
      "      \"message\": {\n        \"role\": \"assistant\",\n"
      "        \"content\": \"Two\\nlines\"\n      },\n"
      "      \"finish_reason\": \"length\"\n    }\n  ],\n"
      "  \"usage\": {\n    \"prompt_tokens\": 3,\n"
      "    \"completion_tokens\": 2,\n    \"total_tokens\": 5\n  }\n}\n",
      NULL },
      "Two\nlines", "", "gpt-4o", "length", 3, 2, 5, -1, -1, -1, NULL },

    { "openai chat json, tool calls", JSON, {
      "{\"id\":\"chatcmpl-t\",\"object\":\"chat.completion\",\"created\":1,"
      "\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"message\":"
      "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":"
      "\"call_1\",\"type\":\"function\",\"function\":{\"name\":"
      "\"get_weather\",\"arguments\":\"{\\\"location\\\":\\\"Paris\\\","
      "\\\"unit\\\":\\\"c\\\"}\"}},{\"id\":\"call_2\",\"type\":\"function\","
      "\"function\":{\"name\":\"get_time\",\"arguments\":"
      "\"{\\\"tz\\\":\\\"Europe/Paris\\\"}\"}}]},\"logprobs\":null,"
      "\"finish_reason\":\"tool_calls\"}],\"usage\":{\"prompt_tokens\":80,"
      "\"completion_tokens\":40,\"total_tokens\":120}}",
      NULL },
      "", "{\"location\":\"Paris\",\"unit\":\"c\"}{\"tz\":\"Europe/Paris\"}",
      "gpt-4o-mini", "tool_calls", 80, 40, 120, -1, -1, -1, NULL },

    { "openai completions json", JSON, {
      "{\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1,"
      "\"model\":\"gpt-3.5-turbo-instruct\",\"choices\":[{\"text\":"
      "\"\\n\\nThis is a t\\u00e9st.\",\"index\":0,\"logprobs\":null,"
      "\"finish_reason\":\"length\"}],\"usage\":{\"prompt_tokens\":5,"
      "\"completion_tokens\":7,\"total_tokens\":12}}",
      NULL },
      "\n\nThis is a tést.", "", "gpt-3.5-turbo-instruct", "length",
      5, 7, 12, -1, -1, -1, NULL },

    { "openai embeddings json", JSON, {
      "{\"object\":\"list\",\"data\":[{\"object\":\"embedding\",\"index\":0,"
      "\"embedding\":[0.0023064255,-0.009327292,1.5e-3,-2E+2,0,-0.0]}],"
      "\"model\":\"text-embedding-3-small\",\"usage\":{\"prompt_tokens\":8,"
      "\"total_tokens\":8}}",
      NULL },
      "", "", "text-embedding-3-small", "", 8, -1, 8, -1, -1, -1, NULL },

    { "openai responses json", JSON, {
      "{\"id\":\"resp_1\",\"object\":\"response\",\"created_at\":1741476542,"
      "\"status\":\"completed\",\"error\":null,\"incomplete_details\":null,"
      "\"instructions\":null,\"max_output_tokens\":null,"
      "\"model\":\"gpt-4.1-2025-04-14\",\"output\":[{\"type\":\"reasoning\","
      "\"id\":\"rs_1\",\"summary\":[{\"type\":\"summary_text\","
      "\"text\":\"not counted\"}]},{\"type\":\"message\",\"id\":\"msg_1\","
      "\"status\":\"completed\",\"role\":\"assistant\",\"content\":"
      "[{\"type\":\"output_text\",\"text\":\"In a peaceful grove \\u2014 "
      "a unicorn.\",\"annotations\":[]},{\"type\":\"output_text\","
      "\"text\":\" The end.\",\"annotations\":[]}]}],"
      "\"parallel_tool_calls\":true,\"previous_response_id\":null,"
      "\"reasoning\":{\"effort\":null,\"summary\":null},\"store\":true,"
      "\"temperature\":1.0,\"text\":{\"format\":{\"type\":\"text\"}},"
      "\"tool_choice\":\"auto\",\"tools\":[],\"top_p\":1.0,"
      "\"truncation\":\"disabled\",\"usage\":{\"input_tokens\":36,"
      "\"input_tokens_details\":{\"cached_tokens\":10},"
      "\"output_tokens\":87,\"output_tokens_details\":"
      "{\"reasoning_tokens\":20},\"total_tokens\":123},\"user\":null,"
      "\"metadata\":{}}",
      NULL },
      "In a peaceful grove — a unicorn. The end.", "",
      "gpt-4.1-2025-04-14", "completed", 36, 87, 123, 10, -1, 20, NULL },

    { "anthropic json", JSON, {
      "{\"id\":\"msg_01\",\"type\":\"message\",\"role\":\"assistant\","
      "\"model\":\"claude-sonnet-4-20250514\",\"content\":[{\"type\":"
      "\"thinking\",\"thinking\":\"not counted\",\"signature\":\"x\"},"
      "{\"type\":\"text\",\"text\":\"Hi! I'm Claude. \\u00c9t\\u00e9 "
      "\\ud83c\\udf1e\"},{\"type\":\"tool_use\",\"id\":\"toolu_1\","
      "\"name\":\"get_weather\",\"input\":{\"location\":\"SF\","
      "\"text\":\"not output\"}}],\"stop_reason\":\"tool_use\","
      "\"stop_sequence\":null,\"usage\":{\"input_tokens\":12,"
      "\"cache_creation_input_tokens\":100,\"cache_read_input_tokens\":2000,"
      "\"output_tokens\":50,\"service_tier\":\"standard\"}}",
      NULL },
      "Hi! I'm Claude. Été 🌞", "", "claude-sonnet-4-20250514", "tool_use",
      2112, 50, 2162, 2000, 100, -1, NULL },

    { "openai chat chunks", SSE, {
      "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\","
      "\"created\":1,\"model\":\"gpt-4o-2024-08-06\",\"system_fingerprint\":"
      "\"fp\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\","
      "\"content\":\"\",\"refusal\":null},\"logprobs\":null,"
      "\"finish_reason\":null}],\"usage\":null}",
      "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\","
      "\"created\":1,\"model\":\"gpt-4o-2024-08-06\",\"choices\":[{\"index\":"
      "0,\"delta\":{\"content\":\"Bonjour\"},\"logprobs\":null,"
      "\"finish_reason\":null}],\"usage\":null}",
      "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\","
      "\"created\":1,\"model\":\"gpt-4o-2024-08-06\",\"choices\":[{\"index\":"
      "0,\"delta\":{\"content\":\" \\u00e0 tous \\ud83d\\ude00 "
      "日本\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}",
      "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\","
      "\"created\":1,\"model\":\"gpt-4o-2024-08-06\",\"choices\":[{\"index\":"
      "0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}],"
      "\"usage\":null}",
      "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\","
      "\"created\":1,\"model\":\"gpt-4o-2024-08-06\",\"choices\":[],"
      "\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":5,"
      "\"total_tokens\":15,\"prompt_tokens_details\":{\"cached_tokens\":0},"
      "\"completion_tokens_details\":{\"reasoning_tokens\":0}}}",
      "[DONE]",
      NULL },
      "Bonjour à tous 😀 日本", "", "gpt-4o-2024-08-06", "stop",
      10, 5, 15, 0, -1, 0, "000001" },

    { "openai tool call chunks", SSE, {
      "{\"id\":\"c\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,"
      "\"delta\":{\"role\":\"assistant\",\"content\":null,\"tool_calls\":"
      "[{\"index\":0,\"id\":\"call_abc\",\"type\":\"function\",\"function\":"
      "{\"name\":\"get_weather\",\"arguments\":\"\"}}]},"
      "\"finish_reason\":null}]}",
      "{\"id\":\"c\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,"
      "\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":"
      "\"{\\\"loc\"}}]},\"finish_reason\":null}]}",
      "{\"id\":\"c\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,"
      "\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":"
      "\"ation\\\":\\\"Z\\u00fcrich\\\"}\"}}]},\"finish_reason\":null}]}",
      "{\"id\":\"c\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,"
      "\"delta\":{},\"finish_reason\":\"tool_calls\"}],"
      "\"usage\":{\"prompt_tokens\":50,\"completion_tokens\":20,"
      "\"total_tokens\":70}}",
      NULL },
      "", "{\"location\":\"Zürich\"}", "gpt-4o", "tool_calls",
      50, 20, 70, -1, -1, -1, NULL },

    { "openai completion chunks", SSE, {
      "{\"id\":\"cmpl\",\"object\":\"text_completion\",\"created\":1,"
      "\"choices\":[{\"text\":\"Hello\",\"index\":0,\"logprobs\":null,"
      "\"finish_reason\":null}],\"model\":\"gpt-3.5-turbo-instruct\"}",
      "{\"id\":\"cmpl\",\"object\":\"text_completion\",\"created\":1,"
      "\"choices\":[{\"text\":\" w\\u00f6rld\",\"index\":0,"
      "\"logprobs\":null,\"finish_reason\":\"stop\"}],"
      "\"model\":\"gpt-3.5-turbo-instruct\"}",
      "{\"id\":\"cmpl\",\"object\":\"text_completion\",\"created\":1,"
      "\"choices\":[],\"model\":\"gpt-3.5-turbo-instruct\","
      "\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,"
      "\"total_tokens\":5}}",
      NULL },
      "Hello wörld", "", "gpt-3.5-turbo-instruct", "stop",
      3, 2, 5, -1, -1, -1, NULL },

    { "openai responses events", SSE, {
      "{\"type\":\"response.created\",\"sequence_number\":0,\"response\":"
      "{\"id\":\"resp_1\",\"object\":\"response\",\"created_at\":1,"
      "\"status\":\"in_progress\",\"model\":\"gpt-4.1\",\"output\":[],"
      "\"usage\":null,\"text\":{\"format\":{\"type\":\"text\"}}}}",
      "{\"type\":\"response.in_progress\",\"sequence_number\":1,"
      "\"response\":{\"id\":\"resp_1\",\"status\":\"in_progress\","
      "\"output\":[],\"usage\":null}}",
      "{\"type\":\"response.output_item.added\",\"sequence_number\":2,"
      "\"output_index\":0,\"item\":{\"id\":\"msg_1\",\"type\":\"message\","
      "\"status\":\"in_progress\",\"content\":[],\"role\":\"assistant\"}}",
      "{\"type\":\"response.content_part.added\",\"sequence_number\":3,"
      "\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,"
      "\"part\":{\"type\":\"output_text\",\"annotations\":[],\"text\":\"\"}}",
      "{\"type\":\"response.output_text.delta\",\"sequence_number\":4,"
      "\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,"
      "\"delta\":\"Hi\"}",
      "{\"type\":\"response.output_text.delta\",\"sequence_number\":5,"
      "\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,"
      "\"delta\":\" th\\u00e9r\\u00e9 \\ud83d\\ude00\"}",
      "{\"type\":\"response.output_text.done\",\"sequence_number\":6,"
      "\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,"
      "\"text\":\"Hi th\\u00e9r\\u00e9 \\ud83d\\ude00\"}",
      "{\"type\":\"response.content_part.done\",\"sequence_number\":7,"
      "\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,"
      "\"part\":{\"type\":\"output_text\",\"annotations\":[],"
      "\"text\":\"Hi théré 😀\"}}",
      "{\"type\":\"response.output_item.done\",\"sequence_number\":8,"
      "\"output_index\":0,\"item\":{\"id\":\"msg_1\",\"type\":\"message\","
      "\"status\":\"completed\",\"content\":[{\"type\":\"output_text\","
      "\"annotations\":[],\"text\":\"Hi théré 😀\"}],"
      "\"role\":\"assistant\"}}",
      "{\"type\":\"response.output_item.added\",\"sequence_number\":9,"
      "\"output_index\":1,\"item\":{\"type\":\"function_call\","
      "\"id\":\"fc_1\",\"call_id\":\"call_1\",\"name\":\"get_weather\","
      "\"arguments\":\"\"}}",
      "{\"type\":\"response.function_call_arguments.delta\","
      "\"sequence_number\":10,\"item_id\":\"fc_1\",\"output_index\":1,"
      "\"delta\":\"{\\\"city\\\":\"}",
      "{\"type\":\"response.function_call_arguments.delta\","
      "\"sequence_number\":11,\"item_id\":\"fc_1\",\"output_index\":1,"
      "\"delta\":\"\\\"Paris\\\"}\"}",
      "{\"type\":\"response.function_call_arguments.done\","
      "\"sequence_number\":12,\"item_id\":\"fc_1\",\"output_index\":1,"
      "\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\"}",
      "{\"type\":\"response.completed\",\"sequence_number\":13,"
      "\"response\":{\"id\":\"resp_1\",\"object\":\"response\","
      "\"status\":\"completed\",\"model\":\"gpt-4.1-2025-04-14\","
      "\"output\":[{\"type\":\"message\",\"content\":[{\"type\":"
      "\"output_text\",\"text\":\"Hi théré 😀\"}]},{\"type\":"
      "\"function_call\",\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\"}],"
      "\"usage\":{\"input_tokens\":37,\"input_tokens_details\":"
      "{\"cached_tokens\":0},\"output_tokens\":11,\"output_tokens_details\":"
      "{\"reasoning_tokens\":0},\"total_tokens\":48}}}",
      NULL },
      "Hi théré 😀", "{\"city\":\"Paris\"}", "gpt-4.1-2025-04-14",
      "completed", 37, 11, 48, 0, -1, 0, NULL },

    /* a reasoning model's summary and audio deltas are no answer text; a
     * refusal is; a custom tool's input is arguments */

    { "openai responses reasoning deltas", SSE, {
      "{\"type\":\"response.reasoning_summary_text.delta\","
      "\"output_index\":0,\"summary_index\":0,"
      "\"delta\":\"**Thinking** I should greet.\"}",
      "{\"type\":\"response.reasoning_text.delta\",\"output_index\":0,"
      "\"delta\":\"step one\"}",
      "{\"type\":\"response.audio.delta\",\"delta\":\"UklGRg==\"}",
      "{\"type\":\"response.output_text.delta\",\"output_index\":1,"
      "\"content_index\":0,\"delta\":\"Hello!\"}",
      "{\"type\":\"response.refusal.delta\",\"output_index\":1,"
      "\"content_index\":1,\"delta\":\" No.\"}",
      "{\"type\":\"response.custom_tool_call_input.delta\","
      "\"output_index\":2,\"delta\":\"ls -l\"}",
      NULL },
      "Hello! No.", "ls -l", "", "", -1, -1, -1, -1, -1, -1, NULL },

    { "anthropic events", SSE, {
      "{\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\","
      "\"type\":\"message\",\"role\":\"assistant\",\"content\":[],"
      "\"model\":\"claude-sonnet-4-20250514\",\"stop_reason\":null,"
      "\"stop_sequence\":null,\"usage\":{\"input_tokens\":25,"
      "\"cache_creation_input_tokens\":10,\"cache_read_input_tokens\":100,"
      "\"output_tokens\":1}}}",
      "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":"
      "{\"type\":\"text\",\"text\":\"\"}}",
      "{\"type\": \"ping\"}",
      "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":"
      "{\"type\":\"text_delta\",\"text\":\"Hello \\u4e16\\u754c\"}}",
      "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":"
      "{\"type\":\"text_delta\",\"text\":\"! 😀\"}}",
      "{\"type\":\"content_block_stop\",\"index\":0}",
      "{\"type\":\"content_block_start\",\"index\":1,\"content_block\":"
      "{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"get_weather\","
      "\"input\":{}}}",
      "{\"type\":\"content_block_delta\",\"index\":1,\"delta\":"
      "{\"type\":\"input_json_delta\",\"partial_json\":\"\"}}",
      "{\"type\":\"content_block_delta\",\"index\":1,\"delta\":"
      "{\"type\":\"input_json_delta\",\"partial_json\":"
      "\"{\\\"location\\\": \\\"San\"}}",
      "{\"type\":\"content_block_delta\",\"index\":1,\"delta\":"
      "{\"type\":\"input_json_delta\",\"partial_json\":\" Francisco\\\"}\"}}",
      "{\"type\":\"content_block_stop\",\"index\":1}",
      "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\","
      "\"stop_sequence\":null},\"usage\":{\"output_tokens\":89}}",
      "{\"type\":\"message_stop\"}",
      NULL },
      "Hello 世界! 😀", "{\"location\": \"San Francisco\"}",
      "claude-sonnet-4-20250514", "tool_use", 135, 89, 224, 100, 10, -1,
      NULL },

    /* the text rules of one mode are not the other's */

    { "sse text rules in json mode", JSON, {
      "{\"choices\":[{\"delta\":{\"content\":\"x\"}}],\"delta\":\"y\","
      "\"type\":\"response.output_text.delta\"}",
      NULL },
      "", "", "", "", -1, -1, -1, -1, -1, -1, NULL },

    { "json text rules in sse mode", SSE, {
      "{\"choices\":[{\"message\":{\"content\":\"x\"}}],\"content\":"
      "[{\"text\":\"y\"}],\"status\":\"completed\"}",
      NULL },
      "", "", "", "", -1, -1, -1, -1, -1, -1, NULL },

    /* keys: escaped ones are not ours, near misses and long ones neither */

    { "keys", JSON, {
      "{\"message\":{\"conte\\u006et\":\"a\",\"content_\":\"b\","
      "\"contenT\":\"c\",\"Content\":\"d\",\"contents\":\"e\","
      "\"content\":\"z\",\"contentcontentcontentcontentcontent\":\"f\","
      "\"\":\"g\",\"t\":\"h\",\"text\":\"i\"},"
      "\"mess\\\"age\":{\"content\":\"j\"},"
      "\"choices\":[{\"text\":\"k\",\"tex\":\"l\",\"texts\":\"m\","
      "\"txt\":\"n\",\"tool_calls\":[{\"function\":{\"arguments\":"
      "\"o\",\"argument\":\"p\"}}]}]}",
      NULL },
      "zk", "o", "", "", -1, -1, -1, -1, -1, -1, NULL },

    /* depth: matched down to 8 levels, not below */

    { "depth", JSON, {
      "{\"a\":{\"b\":{\"c\":{\"d\":{\"e\":{\"content\":[{\"text\":\"in\"}]}}}}"
      "},\"x\":{\"a\":{\"b\":{\"c\":{\"d\":{\"e\":{\"content\":[{\"text\":"
      "\"out\"}]}}}}}}}",
      NULL },
      "in", "", "", "", -1, -1, -1, -1, -1, -1, NULL },

    /* a usage too big is dropped, the one before kept; null is nothing */

    { "usage overflow", SSE, {
      "{\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}",
      "{\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":7,\"pad\":\""
      "XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
      "XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
      "XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
      "XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
      "XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
      "XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
      "XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
      "XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
      "XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
      "XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
      "XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
      "XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
      "XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
      "XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
      "XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
      "XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
      "XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
      "XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
      "XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
      "XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
      "XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
      "XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
      "XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
      "XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
      "XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
      "XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
      "XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
      "XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
      "XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
      "XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
      "XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
      "XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
      "\"}}",
      "{\"usage\":null,\"message\":{\"usage\":null},"
      "\"response\":{\"usage\":null}}",
      "{\"choices\":[{\"usage\":{\"prompt_tokens\":99}}],"
      "\"x\":{\"usage\":{\"prompt_tokens\":99}},"
      "\"message\":{\"x\":{\"usage\":{\"prompt_tokens\":99}}}}",
      NULL },
      "", "", "", "", 1, 2, 3, -1, -1, -1, NULL },

    /* the latest model and finish win; empty and null ones do not */

    { "latest wins", SSE, {
      "{\"model\":\"m1\",\"choices\":[{\"finish_reason\":\"f1\"}]}",
      "{\"model\":\"\",\"choices\":[{\"finish_reason\":null}]}",
      "{\"model\":null,\"message\":{\"model\":\"m2\"}}",
      "{\"response\":{\"model\":\"m3\",\"status\":\"incomplete\"}}",
      "{\"delta\":{\"stop_reason\":\"max_tokens\"}}",
      "{\"model\":\"m\\u00e9\\u0301\",\"stop_reason\":\"end_turn\"}",
      NULL },
      "", "", "mé\xcc\x81", "end_turn", -1, -1, -1, -1, -1, -1, NULL },

    { "malformed documents", SSE, {
      "{\"choices\":[{\"delta\":{\"content\":\"ok\"}}]}",
      "<html><body><h1>502 Bad Gateway</h1></body></html>",
      "Internal Server Error",
      "{\"a\":1]",
      "[1}",
      "{\"a\" 1}",
      "{1:2}",
      "{\"a\":1} x",
      "{\"a\":1}{}",
      "{\"a\":tru}",
      "{\"a\":nul,}",
      "{\"a\":1,}",
      "[1,]",
      "]",
      "{\"choices\":[{\"delta\":{\"content\":\"a\\x\"}}]}",
      "{\"choices\":[{\"delta\":{\"content\":\"b\\u12G4\"}}]}",
      "{\"choices\":[{\"delta\":{\"content\":\"c\"}}]}",
      "",
      "  ",
      "{\"a\":\"\\x\"}",
      "{\"model\":\"mm\"",
      "[DONE]",
      "{\"a\":12abc}",
      "[-x]",
      NULL },
      "okabc", "", "mm", "", -1, -1, -1, -1, -1, -1,
      "011111111111111100000111" },

    /*
     * The kind of a responses "delta": arguments when the event's "type",
     * before it, says so; "type" is per event.
     */

    { "responses delta kinds", SSE, {
      "{\"type\":\"response.function_call_arguments.delta\","
      "\"delta\":\"{}\"}",
      "{\"delta\":\"b\"}",
      "{\"delta\":\"c\","
      "\"type\":\"response.function_call_arguments.delta\"}",
      "{\"type\":\"response.output_text.delta\",\"item\":{\"delta\":\"no\"},"
      "\"delta\":\"d\"}",
      "{\"type\":\"response.function_call_arguments.delta\","
      "\"delta\":\"[]\",\"type\":\"response.output_text.delta\","
      "\"delta\":\"e\"}",
      NULL },
      "bcde", "{}[]", "", "", -1, -1, -1, -1, -1, -1, NULL },
};


/* whole, byte by byte, every split point, random: all the same */

static void
test_cases(void)
{
    size_t       c, ndocs, d, i, len;
    int          k;
    uint64_t     chars;
    result_t     whole, got;
    const case_t  *t;
    char          mal[MAX_DOCS + 1];
    json_t       *j;

    for (c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        t = &cases[c];

        for (ndocs = 0; t->docs[ndocs]; ndocs++) {
            /* the test documents are valid JSON where not said */
            if (strcmp(t->name, "malformed documents") != 0
                && (t->malformed == NULL || t->malformed[ndocs] == '0'))
            {
                j = json_loadb(t->docs[ndocs], strlen(t->docs[ndocs]),
                               JSON_DECODE_ANY, NULL);
                CHECK(j != NULL || strspn(t->docs[ndocs], " ")
                                   == strlen(t->docs[ndocs]),
                      "%s: document %zu is not JSON", t->name, ndocs);
                json_decref(j);
            }
        }

        run(t->docs, ndocs, t->mode, FEED_WHOLE, 1, &whole);

        chars = utf8_chars(t->content, strlen(t->content))
                + utf8_chars(t->args, strlen(t->args));

        CHECK(strcmp(whole.content.p, t->content) == 0,
              "%s: content \"%s\"", t->name, whole.content.p);
        CHECK(strcmp(whole.args.p, t->args) == 0,
              "%s: arguments \"%s\"", t->name, whole.args.p);
        CHECK(whole.chars == chars && whole.seen == (chars > 0),
              "%s: text_chars %llu, expected %llu, seen %d", t->name,
              (unsigned long long) whole.chars, (unsigned long long) chars,
              whole.seen);
        CHECK(whole.bad_piece == 0, "%s: a text piece is not whole UTF-8",
              t->name);
        CHECK(strcmp(whole.model, t->model) == 0, "%s: model \"%s\"",
              t->name, whole.model);
        CHECK(strcmp(whole.finish, t->finish) == 0, "%s: finish \"%s\"",
              t->name, whole.finish);
        CHECK(whole.u.input == t->input && whole.u.output == t->output
              && whole.u.total == t->total
              && whole.u.cached_input == t->cached
              && whole.u.cache_creation == t->creation
              && whole.u.reasoning == t->reasoning,
              "%s: usage %lld %lld %lld %lld %lld %lld", t->name,
              (long long) whole.u.input, (long long) whole.u.output,
              (long long) whole.u.total, (long long) whole.u.cached_input,
              (long long) whole.u.cache_creation,
              (long long) whole.u.reasoning);
        CHECK(whole.parse_failed == 0, "%s: a captured usage did not parse",
              t->name);
        CHECK(whole.usage_found == (t->input >= 0),
              "%s: usage_found %d", t->name, whole.usage_found);

        memset(mal, '0', ndocs);
        mal[ndocs] = '\0';
        if (t->malformed) {
            memcpy(mal, t->malformed, ndocs);
        }

        CHECK(strcmp(whole.malformed, mal) == 0, "%s: malformed %s",
              t->name, whole.malformed);

        run(t->docs, ndocs, t->mode, FEED_BYTES, 1, &got);
        CHECK(same(&whole, &got) && got.bad_piece == 0,
              "%s: byte by byte differs", t->name);
        result_free(&got);

        for (d = 0; d < ndocs; d++) {
            len = strlen(t->docs[d]);

            for (i = 0; i <= len; i++) {
                split_doc = (int) d;
                split_at = i;

                run(t->docs, ndocs, t->mode, FEED_SPLIT, 1, &got);
                CHECK(same(&whole, &got) && got.bad_piece == 0,
                      "%s: split of document %zu at %zu differs", t->name,
                      d, i);
                result_free(&got);
            }
        }

        for (k = 0; k < 50; k++) {
            run(t->docs, ndocs, t->mode, FEED_RANDOM, 1, &got);
            CHECK(same(&whole, &got) && got.bad_piece == 0,
                  "%s: random chunks differ", t->name);
            result_free(&got);
        }

        result_free(&whole);
    }
}


/* one number written out, for the code point counting itself */

static void
test_count(void)
{
    result_t     r;
    const char  *doc[] = { cases[0].docs[0] };

    run(doc, 1, JSON, FEED_BYTES, 1, &r);
    CHECK(r.chars == 60, "text_chars %llu, expected 60",
          (unsigned long long) r.chars);
    result_free(&r);
}


/*
 * Every prefix of a valid document is not malformed, and a usage object
 * is captured only once its closing brace is in.
 */

static void
test_truncated(void)
{
    size_t                       c, d, i, len;
    const char                  *s, *end;
    ngx_http_ai_gateway_walk_t  *w;

    w = malloc(sizeof(ngx_http_ai_gateway_walk_t));

    for (c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        if (strcmp(cases[c].name, "malformed documents") == 0) {
            continue;
        }

        for (d = 0; cases[c].docs[d]; d++) {
            if (cases[c].malformed && cases[c].malformed[d] == '1') {
                continue;
            }

            s = cases[c].docs[d];
            len = strlen(s);
            end = strstr(s, "\"usage\":");

            while (end && end[8] == ' ') {
                end++;
            }

            if (end && end[8] != '{') {
                end = NULL;
            }

            if (end) {
                /* the usage object's closing brace: the test documents
                 * have no strings with braces in their usage */
                int  depth = 0;

                for (end = strchr(end, '{'); ; end++) {
                    depth += (*end == '{') - (*end == '}');
                    if (depth == 0) {
                        break;
                    }
                }
            }

            for (i = 0; i <= len; i++) {
                ngx_http_ai_gateway_walk_init(w, cases[c].mode, NULL, NULL);

                CHECK(ngx_http_ai_gateway_walk_feed(w,
                                              (const unsigned char *) s, i)
                      == 0 && !w->malformed,
                      "%s: prefix %zu of document %zu is malformed",
                      cases[c].name, i, d);

                if (strcmp(cases[c].name, "usage overflow") == 0) {
                    continue;
                }

                CHECK(w->usage_found
                      == (end != NULL && i > (size_t) (end - s)),
                      "%s: prefix %zu of document %zu: usage_found %d",
                      cases[c].name, i, d, w->usage_found);
            }
        }
    }

    free(w);
}


/* after a malformed document: -1 until reset; results kept */

static void
test_malformed_state(void)
{
    ngx_http_ai_gateway_walk_t  *w;
    const char                  *ok = "{\"model\":\"m\",\"usage\":{\"a\":1}}";

    w = malloc(sizeof(ngx_http_ai_gateway_walk_t));
    ngx_http_ai_gateway_walk_init(w, JSON, NULL, NULL);

    CHECK(ngx_http_ai_gateway_walk_feed(w, (const unsigned char *) ok,
                                        strlen(ok)) == 0,
          "valid document");
    CHECK(ngx_http_ai_gateway_walk_feed(w, (const unsigned char *) " }", 2)
          == -1 && w->malformed, "text after the document");
    CHECK(ngx_http_ai_gateway_walk_feed(w, (const unsigned char *) " ", 1)
          == -1, "more after malformed");
    CHECK(w->usage_found && w->usage_len == 7 && w->model_len == 1,
          "results kept");

    ngx_http_ai_gateway_walk_reset(w);
    CHECK(!w->malformed && w->usage_found && w->model_len == 1,
          "reset: malformed cleared, results kept");
    CHECK(ngx_http_ai_gateway_walk_feed(w, (const unsigned char *) "[]", 2)
          == 0 && !w->malformed, "after reset");

    /* too deep */
    {
        size_t          i;
        unsigned char   deep[1100];

        ngx_http_ai_gateway_walk_reset(w);
        memset(deep, '[', sizeof(deep));
        CHECK(ngx_http_ai_gateway_walk_feed(w, deep, 1024) == 0
              && !w->malformed, "1024 levels");
        CHECK(ngx_http_ai_gateway_walk_feed(w, deep, 1) == -1
              && w->malformed, "1025 levels");

        ngx_http_ai_gateway_walk_reset(w);
        for (i = 0; i < 500; i++) {
            deep[i] = '[';
            deep[1000 - 1 - i] = ']';
        }
        CHECK(ngx_http_ai_gateway_walk_feed(w, deep, 1000) == 0
              && !w->malformed, "500 levels, closed");
    }

    free(w);
}


/* on_text stops the walk: its value is returned, then 0 until reset */

static void
test_stop(void)
{
    int                          rc;
    result_t                     r;
    ngx_http_ai_gateway_walk_t  *w;
    const char                  *doc = "{\"choices\":[{\"delta\":{\"content\":"
                                       "\"a\\nb\"}}],\"model\":\"m\"}";

    memset(&r, 0, sizeof(result_t));
    r.stop_at = 2;

    w = malloc(sizeof(ngx_http_ai_gateway_walk_t));
    ngx_http_ai_gateway_walk_init(w, SSE, on_text, &r);

    rc = ngx_http_ai_gateway_walk_feed(w, (const unsigned char *) doc,
                                       strlen(doc));
    CHECK(rc == 5 && r.pieces == 2 && !w->malformed && w->model_len == 0,
          "stop: rc %d, pieces %d", rc, r.pieces);

    rc = ngx_http_ai_gateway_walk_feed(w, (const unsigned char *) "x", 1);
    CHECK(rc == 0 && r.pieces == 2, "stopped: rc %d", rc);

    ngx_http_ai_gateway_walk_reset(w);
    rc = ngx_http_ai_gateway_walk_feed(w, (const unsigned char *) doc,
                                       strlen(doc));
    CHECK(rc == 0 && r.pieces == 5 && w->model_len == 1,
          "after reset: rc %d, pieces %d", rc, r.pieces);

    result_free(&r);
    free(w);
}


/* escapes and UTF-8 at every place relative to the SIMD steps */

static void
test_strings(void)
{
    static const struct {
        const char  *in;
        const char  *out;
    } specials[] = {
        { "\\u00e9", "é" },
        { "\\ud83d\\ude00", "😀" },
        { "\\uD83D\\uDE00", "😀" },
        { "😀", "😀" },
        { "é", "é" },
        { "€", "€" },
        { "\\n", "\n" },
        { "\\\"", "\"" },
        { "\\\\", "\\" },
        { "\\u0041", "A" },
        { "\\ud83d", "\xef\xbf\xbd" },                 /* lone high half */
        { "\\ude00", "\xef\xbf\xbd" },                 /* lone low half */
        { "\\ud83dx", "\xef\xbf\xbdx" },
        { "\\ud83d\\n", "\xef\xbf\xbd\n" },
        { "\\ud83d\\u0041", "\xef\xbf\xbd" "A" },
        { "\\ud83d\\ud83d\\ude00", "\xef\xbf\xbd😀" },
        { "\\u0000", "\0" },
    };
    char         doc[512], expect[512];
    const char  *docs[1];
    size_t       i, pre, post, n, e, elen;
    int          k;
    result_t     whole, got;

    docs[0] = doc;

    for (i = 0; i < sizeof(specials) / sizeof(specials[0]); i++) {
        for (pre = 0; pre < 20; pre++) {
            for (post = 0; post < 20; post += 3) {
                n = (size_t) sprintf(doc, "{\"choices\":[{\"delta\":"
                                     "{\"content\":\"");
                e = 0;

                memset(doc + n, 'a', pre);
                memset(expect + e, 'a', pre);
                n += pre;
                e += pre;

                n += (size_t) sprintf(doc + n, "%s", specials[i].in);
                elen = strlen(specials[i].out);
                if (elen == 0) {
                    elen = 1;   /* "\0" */
                }
                memcpy(expect + e, specials[i].out, elen);
                e += elen;

                for (k = 0; k < (int) post; k++) {
                    memcpy(doc + n, "ü", 2);
                    memcpy(expect + e, "ü", 2);
                    n += 2;
                    e += 2;
                }

                n += (size_t) sprintf(doc + n, "\"}}]}");

                run(docs, 1, SSE, FEED_WHOLE, 1, &whole);
                CHECK(whole.content.len == e
                      && memcmp(whole.content.p, expect, e) == 0
                      && whole.chars == utf8_chars(expect, e)
                      && whole.bad_piece == 0,
                      "string %zu (%zu, %zu): \"%s\"", i, pre, post,
                      whole.content.p);

                run(docs, 1, SSE, FEED_BYTES, 1, &got);
                CHECK(same(&whole, &got) && got.bad_piece == 0,
                      "string %zu (%zu, %zu): byte by byte", i, pre, post);
                result_free(&got);

                for (k = 0; k < 5; k++) {
                    run(docs, 1, SSE, FEED_RANDOM, 1, &got);
                    CHECK(same(&whole, &got) && got.bad_piece == 0,
                          "string %zu (%zu, %zu): random", i, pre, post);
                    result_free(&got);
                }

                result_free(&whole);
            }
        }
    }
}


/* the model is cut at its limit, at a character boundary */

static void
test_short(void)
{
    char         doc[1024];
    const char  *docs[1];
    size_t       n, i;
    result_t     r;

    docs[0] = doc;

    n = (size_t) sprintf(doc, "{\"model\":\"");
    for (i = 0; i < 127; i++) {
        doc[n++] = 'm';
    }
    n += (size_t) sprintf(doc + n, "é\",\"stop_reason\":\"");
    for (i = 0; i < 200; i++) {
        doc[n++] = 's';
    }
    sprintf(doc + n, "\"}");

    run(docs, 1, JSON, FEED_BYTES, 1, &r);
    CHECK(strlen(r.model) == 127 && strspn(r.model, "m") == 127,
          "model cut at a character: %zu", strlen(r.model));
    CHECK(strlen(r.finish) == NGX_HTTP_AI_GATEWAY_SHORT_MAX,
          "finish cut: %zu", strlen(r.finish));
    result_free(&r);
}


/* keys of any length, split anywhere, are read into a bounded buffer */

static void
test_long_key(void)
{
    char         *doc;
    const char   *docs[1];
    size_t        n, len;
    result_t      r;

    for (len = 20; len <= 6000; len += (len < 40 ? 1 : 1499)) {
        doc = malloc(len + 256);
        n = (size_t) sprintf(doc, "{\"message\":{\"");
        memset(doc + n, 'k', len);
        n += len;
        sprintf(doc + n, "\":{\"model\":\"no\"},\"content\":\"yes\"},"
                "\"model\":\"m\"}");
        docs[0] = doc;

        run(docs, 1, JSON, FEED_BYTES, 1, &r);
        CHECK(strcmp(r.content.p, "yes") == 0 && strcmp(r.model, "m") == 0
              && r.malformed[0] == '0',
              "key of %zu bytes: \"%s\", \"%s\"", len, r.content.p, r.model);
        result_free(&r);

        free(doc);
    }
}


/*
 * Documents that start alike, as the chunks of a stream do: the walker
 * remembers a document's bytes up to its first output text and sets its
 * state at once when the next one starts with them.  Fed whole (where
 * that happens) and byte by byte (where it cannot), the results are the
 * same, and those of the rules.
 */

/*
 * choice_seen: whether a document's top-level "choices" has an element, so
 * that the filter cuts only a usage chunk without one.  Walked in full and
 * after a remembered prefix (the second and fourth documents start like
 * the first), whole and byte by byte.
 */

static void
test_choice_seen(void)
{
    int                        i, k, seen[6], usage[6];
    size_t                     j, len;
    ngx_http_ai_gateway_walk_t  *w;
    static const char *const   docs[] = {
        "{\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}",
        "{\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"b\"},"
            "\"finish_reason\":\"stop\"}],\"usage\":{\"total_tokens\":3}}",
        "{\"id\":\"c\",\"choices\":[],\"usage\":{\"total_tokens\":3}}",
        "{\"id\":\"c\",\"usage\":{\"total_tokens\":3},\"x\":{\"choices\":[{}]}}",
        "{\"id\":\"c\",\"usage\":{\"total_tokens\":3},\"x\":{\"choices\":{}}}",
        "{\"id\":\"c\",\"choices\":{\"a\":{}},\"usage\":{\"total_tokens\":3}}",
    };
    static const int  want_seen[6] = { 1, 1, 0, 0, 0, 0 };

    w = malloc(sizeof(ngx_http_ai_gateway_walk_t));

    for (k = 0; k < 2; k++) {
        ngx_http_ai_gateway_walk_init(w, SSE, NULL, NULL);

        for (i = 0; i < 6; i++) {
            len = strlen(docs[i]);

            if (k == 0) {
                (void) ngx_http_ai_gateway_walk_feed(w,
                                    (const unsigned char *) docs[i], len);

            } else {
                for (j = 0; j < len; j++) {
                    (void) ngx_http_ai_gateway_walk_feed(w,
                                (const unsigned char *) docs[i] + j, 1);
                }
            }

            seen[i] = w->choice_seen;
            usage[i] = w->usage_new;
            w->usage_new = 0;
            ngx_http_ai_gateway_walk_reset(w);

            CHECK(seen[i] == want_seen[i] && usage[i] == (i > 0),
                  "choice_seen, document %d fed %s: seen %d usage %d", i,
                  k ? "byte by byte" : "whole", seen[i], usage[i]);
        }
    }

    free(w);
}


static void
test_prefix(void)
{
    result_t                  whole, bytes;
    static const char *const  sse_docs[] = {
        "{\"type\":\"x_arguments\",\"delta\":\"{}\"}",
        "{\"type\":\"x_arguments\",\"delta\":\"[]\"}",
        "{\"model\":\"a\",\"choices\":[{\"delta\":{\"content\":\"x\"}}]}",
        "{\"model\":\"a\",\"choices\":[{\"delta\":{\"content\":[]}}]}",
        "{\"model\":\"a\",\"choices\":[{\"delta\":{\"content\":\"yz\"},"
            "\"finish_reason\":\"stop\"}],\"usage\":{\"total_tokens\":1}}",
        "{\"model\":\"b\",\"choices\":[{\"finish_reason\":\"length\"}]}",
        "{\"model\":\"a\",\"choices\":[{\"delta\":{\"content\":\"w\"}}]}",
    };
    static const char *const  json_docs[] = {
        "{\"message\":{\"content\":[\"a\"]}}",
        "{\"message\":{\"content\":[]}}",
        "{\"message\":{\"content\":[\"b\",\"c\"]}}",
        "{\"message\":{\"content\":[\"d\"}}",
        "{\"message\":{\"content\":[\"e\"]}}",
    };

    run(sse_docs, 7, SSE, FEED_WHOLE, 1, &whole);
    run(sse_docs, 7, SSE, FEED_BYTES, 1, &bytes);
    CHECK(same(&whole, &bytes) && strcmp(whole.content.p, "xyzw") == 0
          && strcmp(whole.args.p, "{}[]") == 0
          && strcmp(whole.model, "a") == 0
          && strcmp(whole.finish, "length") == 0
          && strcmp(whole.malformed, "0000000") == 0 && whole.captures == 1,
          "prefix, SSE: \"%s\" \"%s\" %s %s %s", whole.content.p,
          whole.args.p, whole.model, whole.finish, whole.malformed);
    result_free(&whole);
    result_free(&bytes);

    run(json_docs, 5, JSON, FEED_WHOLE, 1, &whole);
    run(json_docs, 5, JSON, FEED_BYTES, 1, &bytes);
    CHECK(same(&whole, &bytes) && strcmp(whole.content.p, "abcde") == 0
          && strcmp(whole.malformed, "00010") == 0,
          "prefix, JSON: \"%s\" %s", whole.content.p, whole.malformed);
    result_free(&whole);
    result_free(&bytes);
}


/*
 * After a remembered prefix and its text, the bytes up to the document's
 * end are remembered too when they only close it: the next document with
 * the same prefix and the same end is done at once.  A different end (a
 * finish reason, a usage object, trailing bytes, a document cut short)
 * must give what a full walk gives: fed whole (where the memos work) and
 * byte by byte (where they cannot), the results are the same.
 */

static void
test_suffix(void)
{
    result_t                  whole, bytes;

#define SFX_PRE  "{\"id\":\"c1\",\"model\":\"m\",\"choices\":[{\"index\":0," \
                 "\"delta\":{\"content\":\""
#define SFX_END  "\"},\"finish_reason\":null}]}"

    static const char *const  docs[] = {
        SFX_PRE "a" SFX_END,
        SFX_PRE "b" SFX_END,
        SFX_PRE "c" SFX_END "  ",
        SFX_PRE "d\"},\"finish_reason\":\"stop\"}]}",
        SFX_PRE "e" SFX_END ",",
        SFX_PRE "f" SFX_END,
        SFX_PRE "g\"},\"finish_reason\":null}],\"usage\":"
            "{\"prompt_tokens\":2,\"completion_tokens\":7,"
            "\"total_tokens\":9}}",
        SFX_PRE "h" SFX_END,
        SFX_PRE "i\"},\"finish_reason\":null}]",
        SFX_PRE "j" SFX_END "x",
        SFX_PRE "k\"},\"finish_reason\":null}]}}",
        SFX_PRE "l\"},\"finish_reason\":null,\"model\":\"n\"}]}",
        SFX_PRE "m" SFX_END,
    };

#undef SFX_PRE
#undef SFX_END

    run(docs, 13, SSE, FEED_WHOLE, 1, &whole);
    run(docs, 13, SSE, FEED_BYTES, 1, &bytes);
    CHECK(same(&whole, &bytes)
          && strcmp(whole.content.p, "abcdefghijklm") == 0
          && strcmp(whole.finish, "stop") == 0
          && strcmp(whole.model, "m") == 0
          && strcmp(whole.malformed, "0000100001100") == 0
          && whole.captures == 1 && whole.u.total == 9 && whole.u.output == 7,
          "suffix: \"%s\" %s %s %s, %d captures", whole.content.p,
          whole.finish, whole.model, whole.malformed, whole.captures);
    result_free(&whole);
    result_free(&bytes);
}


/* the merge rules of usage_parse */

static void
test_usage_parse(void)
{
    ngx_http_ai_gateway_usage_t  u;

#define PARSE(s)                                                              \
    ngx_http_ai_gateway_usage_parse(&u, (const unsigned char *) (s),          \
                                    strlen(s))

#define USAGE_IS(i, o, t, c, w, r)                                            \
    (u.input == (i) && u.output == (o) && u.total == (t)                      \
     && u.cached_input == (c) && u.cache_creation == (w)                      \
     && u.reasoning == (r))

    ngx_http_ai_gateway_usage_init(&u);
    CHECK(USAGE_IS(-1, -1, -1, -1, -1, -1), "init");

    CHECK(PARSE("[1]") == -1 && PARSE("garbage") == -1 && PARSE("") == -1
          && PARSE("null") == -1 && PARSE("{\"a\":") == -1
          && USAGE_IS(-1, -1, -1, -1, -1, -1),
          "not objects");

    CHECK(PARSE("{}") == 0 && USAGE_IS(-1, -1, -1, -1, -1, -1), "empty");

    /* Anthropic: message_start, then message_delta */
    ngx_http_ai_gateway_usage_init(&u);
    CHECK(PARSE("{\"input_tokens\":25,\"cache_creation_input_tokens\":10,"
                "\"cache_read_input_tokens\":100,\"output_tokens\":1}") == 0
          && USAGE_IS(135, 1, 136, 100, 10, -1), "anthropic start");
    CHECK(PARSE("{\"output_tokens\":89}") == 0
          && USAGE_IS(135, 89, 224, 100, 10, -1), "anthropic delta");

    /* a newer message_delta repeats all the counts */
    CHECK(PARSE("{\"input_tokens\":25,\"cache_creation_input_tokens\":10,"
                "\"cache_read_input_tokens\":100,\"output_tokens\":90,"
                "\"server_tool_use\":{\"web_search_requests\":1}}") == 0
          && USAGE_IS(135, 90, 225, 100, 10, -1), "anthropic full delta");

    /* input_tokens alone after an Anthropic object: still Anthropic's */
    CHECK(PARSE("{\"input_tokens\":30}") == 0
          && USAGE_IS(140, 90, 230, 100, 10, -1), "anthropic input only");

    /* cache counts alone: the uncached part is kept */
    CHECK(PARSE("{\"cache_read_input_tokens\":0}") == 0
          && USAGE_IS(40, 90, 130, 0, 10, -1), "anthropic cache only");

    /* Anthropic without cache fields, first */
    ngx_http_ai_gateway_usage_init(&u);
    CHECK(PARSE("{\"input_tokens\":7,\"output_tokens\":3}") == 0
          && USAGE_IS(7, 3, 10, -1, -1, -1), "input/output only");

    /* OpenAI responses */
    ngx_http_ai_gateway_usage_init(&u);
    CHECK(PARSE("{\"input_tokens\":36,\"input_tokens_details\":"
                "{\"cached_tokens\":10},\"output_tokens\":87,"
                "\"output_tokens_details\":{\"reasoning_tokens\":20},"
                "\"total_tokens\":123}") == 0
          && USAGE_IS(36, 87, 123, 10, -1, 20), "responses");

    /* OpenAI chat, total given (even when not the sum) */
    ngx_http_ai_gateway_usage_init(&u);
    CHECK(PARSE("{\"prompt_tokens\":19,\"completion_tokens\":10,"
                "\"total_tokens\":30,\"prompt_tokens_details\":"
                "{\"cached_tokens\":4},\"completion_tokens_details\":"
                "{\"reasoning_tokens\":2}}") == 0
          && USAGE_IS(19, 10, 30, 4, -1, 2), "chat");

    /* fields absent stay; total recomputed when not given */
    CHECK(PARSE("{\"completion_tokens\":11}") == 0
          && USAGE_IS(19, 11, 30, 4, -1, 2), "chat, later output");

    /* embeddings: no output, total given */
    ngx_http_ai_gateway_usage_init(&u);
    CHECK(PARSE("{\"prompt_tokens\":8,\"total_tokens\":8}") == 0
          && USAGE_IS(8, -1, 8, -1, -1, -1), "embeddings");

    /* no total and no output: total stays unknown */
    ngx_http_ai_gateway_usage_init(&u);
    CHECK(PARSE("{\"prompt_tokens\":8}") == 0
          && USAGE_IS(8, -1, -1, -1, -1, -1), "input only");

    /* wrong types and negative numbers are ignored; reals are taken */
    ngx_http_ai_gateway_usage_init(&u);
    CHECK(PARSE("{\"prompt_tokens\":\"8\",\"completion_tokens\":-1,"
                "\"total_tokens\":null,\"prompt_tokens_details\":5,"
                "\"completion_tokens_details\":{\"reasoning_tokens\":2.0}}")
          == 0 && USAGE_IS(-1, -1, -1, -1, -1, 2), "types");

#undef PARSE
#undef USAGE_IS
}


/*
 * A whole SSE stream through both parsers, as the module does it: each
 * data piece to the walker, and at each event the usage merged and the
 * walker reset.  Fed in chunks of every size from 1 to 64.
 */

typedef struct {
    ngx_http_ai_gateway_walk_t   *w;
    ngx_http_ai_gateway_usage_t   u;
    int                           events;
    int                           malformed;
} stream_t;


static int
stream_data(void *data, const unsigned char *p, size_t len)
{
    stream_t  *st = data;

    /* not the walker's -1: a malformed event must not stop the stream */
    (void) ngx_http_ai_gateway_walk_feed(st->w, p, len);

    return 0;
}


static int
stream_event(void *data, const unsigned char *name, size_t len)
{
    stream_t  *st = data;

    (void) name;
    (void) len;

    st->events++;
    st->malformed += st->w->malformed;

    if (st->w->usage_new) {
        st->w->usage_new = 0;
        (void) ngx_http_ai_gateway_usage_parse(&st->u, st->w->usage,
                                               st->w->usage_len);
    }

    ngx_http_ai_gateway_walk_reset(st->w);

    return 0;
}


static void
test_stream(void)
{
    size_t                      i, chunk, pos, n;
    buf_t                       s;
    result_t                    r;
    stream_t                    st;
    const case_t               *t;
    ngx_http_ai_gateway_sse_t   sse;

    const char                 *head, *tail;

    t = NULL;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (strcmp(cases[i].name, "anthropic events") == 0) {
            t = &cases[i];
        }
    }

    memset(&s, 0, sizeof(buf_t));

    for (i = 0; t->docs[i]; i++) {
        head = (i % 2) ? "event: x\r\ndata: " : "event: y\ndata:";
        tail = (i % 2) ? "\r\n\r\n: ping\r\n\r\n" : "\n\n";

        buf_add(&s, head, strlen(head));
        buf_add(&s, t->docs[i], strlen(t->docs[i]));
        buf_add(&s, tail, strlen(tail));
    }

    for (chunk = 1; chunk <= 64; chunk++) {
        memset(&r, 0, sizeof(result_t));
        buf_add(&r.content, "", 0);
        buf_add(&r.args, "", 0);
        r.check_utf8 = 1;

        memset(&st, 0, sizeof(stream_t));
        st.w = malloc(sizeof(ngx_http_ai_gateway_walk_t));
        ngx_http_ai_gateway_walk_init(st.w, SSE, on_text, &r);
        ngx_http_ai_gateway_usage_init(&st.u);
        ngx_http_ai_gateway_sse_init(&sse, stream_data, stream_event, &st);

        for (pos = 0; pos < s.len; pos += n) {
            n = s.len - pos < chunk ? s.len - pos : chunk;
            CHECK(ngx_http_ai_gateway_sse_feed(&sse,
                                      (const unsigned char *) s.p + pos, n)
                  == 0, "stream feed");
        }

        CHECK(st.events == 13 && st.malformed == 0
              && strcmp(r.content.p, t->content) == 0
              && strcmp(r.args.p, t->args) == 0
              && st.w->text_chars == utf8_chars(t->content,
                                                strlen(t->content))
                                     + utf8_chars(t->args, strlen(t->args))
              && r.bad_piece == 0
              && st.u.input == t->input && st.u.output == t->output
              && st.u.total == t->total
              && st.w->finish_len == strlen(t->finish),
              "stream in chunks of %zu: %d events, \"%s\"", chunk, st.events,
              r.content.p);

        free(st.w);
        result_free(&r);
    }

    buf_free(&s);
}


/*
 * Mutated documents: no crash, no read or write out of bounds (ASan), the
 * same results however split, and what jansson accepts is not malformed.
 */

static void
test_mutations(void)
{
    static const char  specials[] = "\"\\{}[]:,0-u\xc3\xa9\xe2\x82\xf0\x9f"
                                    "dD8tn \n";
    int                 k, m, nm;
    size_t              c, d, ndocs, len, cap, pos, i;
    char               *doc;
    const char         *docs[1];
    result_t            whole, got;
    json_t             *j;

    docs[0] = NULL;

    for (k = 0; k < 30000; k++) {
        c = rng() % (sizeof(cases) / sizeof(cases[0]));

        for (ndocs = 0; cases[c].docs[ndocs]; ndocs++) {
            /* void */
        }

        d = rng() % ndocs;
        len = strlen(cases[c].docs[d]);

        cap = len * 2 + 64;
        doc = malloc(cap);
        memcpy(doc, cases[c].docs[d], len + 1);

        nm = 1 + rng() % 4;

        for (m = 0; m < nm; m++) {
            pos = len ? rng() % len : 0;

            switch (rng() % 6) {

            case 0:   /* replace a byte */
                if (len) {
                    doc[pos] = specials[rng() % (sizeof(specials) - 1)];
                }
                break;

            case 1:   /* insert a byte */
                if (len + 2 >= cap) {
                    break;
                }

                memmove(doc + pos + 1, doc + pos, len - pos + 1);
                doc[pos] = specials[rng() % (sizeof(specials) - 1)];
                len++;
                break;

            case 2:   /* delete a byte */
                if (len) {
                    memmove(doc + pos, doc + pos + 1, len - pos);
                    len--;
                }
                break;

            case 3:   /* truncate */
                doc[pos] = '\0';
                len = pos;
                break;

            case 4:   /* a random byte */
                if (len) {
                    doc[pos] = (char) (1 + rng() % 255);
                }
                break;

            default:  /* repeat a piece */
                i = rng() % 16;
                if (pos + i <= len && len + i + 1 < cap) {
                    memmove(doc + pos + i, doc + pos, len - pos + 1);
                    len += i;
                }
                break;
            }
        }

        doc[len] = '\0';
        docs[0] = doc;

        run(docs, 1, cases[c].mode, FEED_WHOLE, 0, &whole);

        run(docs, 1, cases[c].mode, FEED_RANDOM, 0, &got);
        CHECK(same(&whole, &got), "mutation %d: random chunks differ: %s",
              k, doc);
        result_free(&got);

        if (k % 10 == 0) {
            run(docs, 1, cases[c].mode, FEED_BYTES, 0, &got);
            CHECK(same(&whole, &got), "mutation %d: bytes differ: %s", k,
                  doc);
            result_free(&got);
        }

        j = json_loadb(doc, len, 0, NULL);

        if (j != NULL) {
            CHECK(whole.malformed[0] == '0',
                  "mutation %d: valid JSON called malformed: %s", k, doc);
        }

        json_decref(j);
        result_free(&whole);
        free(doc);
    }
}


/*
 * usage_parse reads the usual shapes in a fast loop and anything else with
 * the general scan; a leading space always takes the general scan.  So
 * each object, parsed as is and after a space, must give the same results
 * from the same state: thousands of random objects in the shapes
 * providers write (and near them: white space, escapes, reals, negative
 * numbers, arrays, deeper objects, leading zeros, cut texts).
 */

static unsigned long long  ufast_state = 0x9e3779b97f4a7c15ULL;

static unsigned
ufast_rnd(unsigned n)
{
    ufast_state ^= ufast_state << 13;
    ufast_state ^= ufast_state >> 7;
    ufast_state ^= ufast_state << 17;
    return (unsigned) (ufast_state >> 11) % n;
}


static void
ufast_value(char *buf, size_t *len, int depth)
{
    static const char  *keys[] = {
        "prompt_tokens", "completion_tokens", "total_tokens", "input_tokens",
        "output_tokens", "cache_read_input_tokens",
        "cache_creation_input_tokens", "prompt_tokens_details",
        "completion_tokens_details", "input_tokens_details",
        "output_tokens_details", "cached_tokens", "reasoning_tokens",
        "audio_tokens", "service_tier", "server_tool_use", "x"
    };
    static const char  *others[] = {
        "null", "true", "false", "-3", "1.5", "2e3", "07", "\"standard\"",
        "\"a\\\"b\"", "[]", "[1,2]", "{}", "\"\"", "0", "123456789012345678",
        "99999999999999999", "100000000000000000000"
    };

    size_t  i, n;

    if (depth < 3 && ufast_rnd(depth ? 6 : 1) == 0) {
        buf[(*len)++] = '{';
        n = ufast_rnd(6);

        for (i = 0; i < n; i++) {
            if (i) {
                buf[(*len)++] = ',';
            }

            if (ufast_rnd(20) == 0) {
                buf[(*len)++] = ' ';
            }

            *len += sprintf(buf + *len, "\"%s\":",
                            keys[ufast_rnd(sizeof(keys) / sizeof(keys[0]))]);
            ufast_value(buf, len, depth + 1);
        }

        buf[(*len)++] = '}';
        return;
    }

    if (ufast_rnd(4) == 0) {
        *len += sprintf(buf + *len, "%s",
                        others[ufast_rnd(sizeof(others) / sizeof(others[0]))]);
        return;
    }

    *len += sprintf(buf + *len, "%u", ufast_rnd(100000));
}


/*
 * One text read as it is and after a space (the general scan), from the
 * same state: fresh, or one time in three after an Anthropic
 * message_start.  The text at buf (len bytes, with room for two more) is
 * first cut short or given a byte after it, one time in n each (*cut
 * says which: 0 cut, 1 a byte added).  1 when both reads agree; the state
 * before them in *u0, the general scan's result in *u and *rc.
 */

static int
ufast_both(char *buf, size_t len, unsigned n, unsigned *cut, int *rc,
    ngx_http_ai_gateway_usage_t *u0, ngx_http_ai_gateway_usage_t *u)
{
    int                          rc1;
    char                         padded[4098];
    ngx_http_ai_gateway_usage_t  u1;

    static const char  *start = "{\"input_tokens\":5,"
        "\"cache_creation_input_tokens\":2,\"cache_read_input_tokens\":7}";

    *cut = ufast_rnd(n);

    if (*cut == 0 && len > 1) {
        len -= 1 + ufast_rnd((unsigned) len - 1);

    } else if (*cut == 1) {
        buf[len++] = ufast_rnd(2) ? ' ' : '}';
    }

    buf[len] = '\0';
    padded[0] = ' ';
    memcpy(padded + 1, buf, len + 1);

    ngx_http_ai_gateway_usage_init(u0);

    if (ufast_rnd(3) == 0) {
        (void) ngx_http_ai_gateway_usage_parse(u0,
                                   (const unsigned char *) start, strlen(start));
    }

    u1 = *u0;
    *u = *u0;

    rc1 = ngx_http_ai_gateway_usage_parse(&u1, (const unsigned char *) buf,
                                          len);
    *rc = ngx_http_ai_gateway_usage_parse(u, (const unsigned char *) padded,
                                          len + 1);

    return rc1 == *rc && memcmp(&u1, u, sizeof(u1)) == 0;
}


static void
test_usage_fast(void)
{
    int                          rc, i, same;
    char                         buf[4096];
    size_t                       len;
    unsigned                     cut;
    ngx_http_ai_gateway_usage_t  u0, u1;

    static const char  *chat = "{\"prompt_tokens\":231,"
        "\"completion_tokens\":48,\"total_tokens\":279,"
        "\"prompt_tokens_details\":{\"cached_tokens\":3,\"audio_tokens\":0},"
        "\"completion_tokens_details\":{\"reasoning_tokens\":7,"
        "\"audio_tokens\":0}}";

    same = 1;

    for (i = 0; i < 20000 && same; i++) {
        len = 0;
        ufast_value(buf, &len, 0);

        /* some texts cut short, or with a byte after the object */
        same = ufast_both(buf, len, 30, &cut, &rc, &u0, &u1);

        CHECK(same, "fast and general usage scans differ on %s", buf);
    }

    /* the usual objects themselves */
    ngx_http_ai_gateway_usage_init(&u1);
    CHECK(ngx_http_ai_gateway_usage_parse(&u1, (const unsigned char *) chat,
                                          strlen(chat)) == 0
          && u1.input == 231 && u1.output == 48 && u1.total == 279
          && u1.cached_input == 3 && u1.reasoning == 7,
          "OpenAI chat usage");
}


/*
 * The memo of the last usage object's shape: random objects as above, each
 * followed by variants with other counts (some of them leading zeros, 18
 * digits, or a text cut short or followed by a byte), read as they are (the
 * memo, when the shape is the one remembered) and after a space (the
 * general scan), alone and as the usage of a whole answer read from its
 * end: the same results.  The memo must have read most variants.
 */

#if (NGX_HTTP_AI_GATEWAY_UMEMO_COUNT)
extern unsigned long  ngx_http_ai_gateway_umemo_hits;
#endif


static void
umemo_vary(const char *in, size_t len, char *out, size_t *olen)
{
    size_t  i, o;

    i = 0;
    o = 0;

    while (i < len) {
        if (in[i] >= '1' && in[i] <= '9' && i > 0 && in[i - 1] == ':') {
            while (i < len && in[i] >= '0' && in[i] <= '9') {
                i++;
            }

            switch (ufast_rnd(16)) {
            case 0:
                o += sprintf(out + o, "0%u", ufast_rnd(10));
                break;
            case 1:
                o += sprintf(out + o, "123456789012345678");
                break;
            case 2:
                o += sprintf(out + o, "0");
                break;
            default:
                o += sprintf(out + o, "%u", 1 + ufast_rnd(999999));
            }

            continue;
        }

        out[o++] = in[i++];
    }

    *olen = o;
}


static void
test_usage_memo(void)
{
    int                          rc, i, j, same, counted;
    char                         base[4096], buf[4096], doc[4200];
    size_t                       blen, len;
    unsigned                     cut;
    unsigned long                variants;
    ngx_http_ai_gateway_usage_t  u0, u1, u3;

#if (NGX_HTTP_AI_GATEWAY_UMEMO_COUNT)
    unsigned long  hits0 = ngx_http_ai_gateway_umemo_hits;
#endif

    same = 1;
    variants = 0;
    counted = 0;

    for (i = 0; i < 3000 && same; i++) {
        blen = 0;
        ufast_value(base, &blen, 0);
        base[blen] = '\0';

        /* the shape, remembered when the fast scan reads it */
        ngx_http_ai_gateway_usage_init(&u1);
        (void) ngx_http_ai_gateway_usage_parse(&u1,
                                    (const unsigned char *) base, blen);

        for (j = 0; j < 8 && same; j++) {
            umemo_vary(base, blen, buf, &len);

            same = ufast_both(buf, len, 20, &cut, &rc, &u0, &u1);
            CHECK(same, "memo and general usage scans differ on %s", buf);

            /* in a whole answer, read from its end */
            if (same && cut > 1 && rc == 0 && buf[0] == '{') {
                sprintf(doc, "{\"id\":\"x\",\"usage\":%s,\"n\":1}", buf);
                u3 = u0;
                same = (ngx_http_ai_gateway_usage_find_tail(&u3,
                                  (const unsigned char *) doc, strlen(doc))
                            == 0
                        && memcmp(&u3, &u1, sizeof(u3)) == 0);
                CHECK(same, "memo and general usage scans differ at the "
                      "end of %s", doc);
                counted++;
            }

            variants++;
        }
    }

    CHECK(counted > 1000, "answers read from their end: %d", counted);

#if (NGX_HTTP_AI_GATEWAY_UMEMO_COUNT)
    CHECK(ngx_http_ai_gateway_umemo_hits - hits0 > variants / 4,
          "the memo read %lu of %lu variants",
          ngx_http_ai_gateway_umemo_hits - hits0, variants);
#endif
}


/*
 * The stream's fast path: random streams of OpenAI chunks (plain text,
 * text with escapes or UTF-8, tool call arguments, model and finish
 * changes, the usage chunk, [DONE]) mixed with Anthropic events (with
 * "event:" lines), comments, "\r\n" line ends and "data:" without a space,
 * fed in random pieces through sse_feed() alone and through walk_stream():
 * the same events at the same offsets with the same walker results, and
 * the same text.
 */

typedef struct {
    ngx_http_ai_gateway_sse_t   sse;
    ngx_http_ai_gateway_walk_t  w;
    char                        log[65536];
    size_t                      log_len;
    char                        text[65536];
    size_t                      text_len;
    int                         pause;
    unsigned                    chunks;
    int                         kind;
    unsigned                    end_events;
} wstream_t;


static int
wstream_text(void *data, ngx_http_ai_gateway_text_e kind,
    const unsigned char *p, size_t len)
{
    wstream_t  *s = data;

    /* what the filter keeps: the text of each kind, however split */

    if (s->text_len + len + 1 < sizeof(s->text)) {
        if (s->text_len == 0 || (int) kind != s->kind) {
            s->text[s->text_len++] = kind == NGX_HTTP_AI_GATEWAY_TEXT_ARGUMENTS
                                     ? 'A' : 'C';
            s->kind = kind;
        }

        memcpy(s->text + s->text_len, p, len);
        s->text_len += len;
    }

    return 0;
}


static int
wstream_is_end(const unsigned char *name, size_t len)
{
    return (len == 12 && memcmp(name, "message_stop", 12) == 0)
           || (len == 18 && memcmp(name, "response.completed", 18) == 0);
}


static int
wstream_data(void *data, const unsigned char *p, size_t len)
{
    wstream_t  *s = data;

    if (!s->w.malformed) {
        (void) ngx_http_ai_gateway_walk_feed(&s->w, p, len);
    }

    return 0;
}


/* what the filter keeps of each event, and the walker's reset */

static int
wstream_end(wstream_t *s)
{
    int  n;

    /* at the event's end the filter reads the usage; the rest after the
     * reset, which walks a document cut within the prefix */
    n = snprintf(s->log + s->log_len, sizeof(s->log) - s->log_len,
                 "%llu-%llu %d %d %.*s ",
                 (unsigned long long) s->sse.event_start,
                 (unsigned long long) s->sse.offset,
                 s->w.usage_new,
                 /* whether the usage chunk is cut: read with usage only */
                 s->w.usage_new ? (int) s->w.choice_seen : 0,
                 s->w.usage_new ? (int) s->w.usage_len : 0, s->w.usage);

    if (n > 0 && (size_t) n < sizeof(s->log) - s->log_len) {
        s->log_len += n;
    }

    s->w.usage_new = 0;
    ngx_http_ai_gateway_walk_reset(&s->w);

    n = snprintf(s->log + s->log_len, sizeof(s->log) - s->log_len,
                 "%llu %d %.*s|%.*s\n",
                 (unsigned long long) s->w.text_chars, s->w.text_seen,
                 (int) s->w.model_len, s->w.model,
                 (int) s->w.finish_len, s->w.finish);

    if (n > 0 && (size_t) n < sizeof(s->log) - s->log_len) {
        s->log_len += n;
    }

    return 0;
}


static int
wstream_event(void *data, const unsigned char *name, size_t name_len)
{
    wstream_t  *s = data;

    /* what the filter does with a name: end the stream or not */
    s->end_events += wstream_is_end(name, name_len);

    (void) wstream_end(s);

    return s->pause ? NGX_HTTP_AI_GATEWAY_WALK_PAUSE : 0;
}


static int
wstream_chunk(void *data)
{
    wstream_t  *s = data;

    s->chunks++;

    return wstream_end(s);
}


static size_t
wstream_make(char *buf, size_t size)
{
    size_t       len;
    unsigned     i, n, k;
    const char  *eol, *eol2;

    static const char  *texts[] = {
        " word", " the", "", " caf\xc3\xa9", " a \\\"quote\\\"", "\\n",
        " 42", " x", " \xf0\x9f\x98\x80", "\xe4\xbd\xa0\xe5\xa5\xbd",
        " \xc3\x28", " \xc0\xaf", "\xed\xa0\x80", "\x80x", " \xe4\xbd",
        "\xf4\x90\x80\x80"
    };
    static const char  *models[] = { "gpt-4o-mini", "gpt-4o" };
    static const char  *names[] = {
        "content_block_delta", "message_stop", "", "response.completed",
        "content_block_delta_with_a_name_far_too_long_for_the_parser_to_keep_"
        "it_whole"
    };

    len = 0;
    n = 20 + ufast_rnd(60);

#define WS_ADD(...)                                                           \
    len += snprintf(buf + len, size - len, __VA_ARGS__)

    for (i = 0; i < n && len + 600 < size; i++) {
        eol = ufast_rnd(25) ? "\n" : "\r\n";

        /* mostly the same line end twice; sometimes another, or an "id"
         * line between the data and the blank line */
        eol2 = ufast_rnd(10) ? eol : ufast_rnd(2) ? "\r\n" : "\nid: 7\n";
        k = ufast_rnd(100);

        if (k < 60) {
            WS_ADD("data%s{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion"
                   ".chunk\",\"created\":1,\"model\":\"%s\",\"choices\":[{"
                   "\"index\":0,\"delta\":{\"content\":\"%s\"},"
                   "\"finish_reason\":null}]}%s%s",
                   ufast_rnd(20) ? ": " : ":",
                   models[ufast_rnd(10) == 0],
                   texts[ufast_rnd(sizeof(texts) / sizeof(texts[0]))],
                   eol, eol2);

        } else if (k < 70) {
            WS_ADD("data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion"
                   ".chunk\",\"created\":1,\"model\":\"gpt-4o-mini\","
                   "\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{"
                   "\"index\":0,\"function\":{\"arguments\":\"%s\"}}]},"
                   "\"finish_reason\":null}]}%s%s",
                   ufast_rnd(2) ? "{\\\"a\\\"" : "1}", eol, eol);

        } else if (k < 75) {
            WS_ADD("data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion"
                   ".chunk\",\"created\":1,\"model\":\"gpt-4o-mini\","
                   "\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":"
                   "\"%s\"}]}%s%s", ufast_rnd(2) ? "stop" : "length", eol,
                   eol);

        } else if (k < 80) {
            WS_ADD("data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion"
                   ".chunk\",\"created\":1,\"model\":\"gpt-4o-mini\","
                   "\"choices\":[],\"usage\":{\"prompt_tokens\":%u,"
                   "\"completion_tokens\":%u,\"total_tokens\":%u}}%s%s",
                   i, 2 * i, 3 * i, eol, eol);

        } else if (k < 88) {
            /* mostly the usual name; sometimes one that ends the stream,
             * none, one too long for the parser, or no space */
            WS_ADD("event%s%s%sdata: {\"type\":"
                   "\"content_block_delta\",\"index\":0,\"delta\":{\"type\":"
                   "\"text_delta\",\"text\":\"%s\"}}%s%s",
                   ufast_rnd(15) ? ": " : ":",
                   names[ufast_rnd(10) ? 0 : ufast_rnd(sizeof(names)
                                                       / sizeof(names[0]))],
                   ufast_rnd(8) ? eol : "\r\n",
                   texts[ufast_rnd(sizeof(texts) / sizeof(texts[0]))],
                   eol, eol);

        } else if (k < 92) {
            WS_ADD(": keepalive%s%s", eol, eol);

        } else if (k < 96) {
            WS_ADD("data: {\"id\":\"chatcmpl-1\",%sdata: \"object\":1}%s%s",
                   eol, eol, eol);

        } else if (k < 98) {
            /* a document cut within the prefix: not JSON, but walked */
            WS_ADD("data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion"
                   ".chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",%s%s",
                   eol, eol);

        } else {
            WS_ADD("data: [DONE]%s%s", eol, eol);
        }
    }

#undef WS_ADD

    return len;
}


static void
wstream_run(wstream_t *s, const char *buf, size_t len, int fast)
{
    size_t  off, n;

    memset(s, 0, sizeof(wstream_t));
    ngx_http_ai_gateway_sse_init(&s->sse, wstream_data, wstream_event, s);
    ngx_http_ai_gateway_walk_init(&s->w, NGX_HTTP_AI_GATEWAY_WALK_SSE,
                                  wstream_text, s);
    s->pause = fast;
    /* the reference walks cut prefixes at once */
    s->w.no_wait = !fast;

    for (off = 0; off < len; off += n) {
        n = ufast_rnd(4) ? 1 + ufast_rnd(700) : 1 + ufast_rnd(8);

        if (n > len - off) {
            n = len - off;
        }

        if (fast) {
            (void) ngx_http_ai_gateway_walk_stream(&s->sse, &s->w,
                                       (const unsigned char *) buf + off, n,
                                       wstream_chunk, wstream_is_end, s);

        } else {
            (void) ngx_http_ai_gateway_sse_feed(&s->sse,
                                       (const unsigned char *) buf + off, n);
        }
    }

    /* a stream may end anywhere: the results as they are then */
    (void) ngx_http_ai_gateway_walk_flush(&s->w);
    s->log_len += snprintf(s->log + s->log_len, sizeof(s->log) - s->log_len,
                           "end %llu %d %.*s|%.*s\n",
                           (unsigned long long) s->w.text_chars,
                           s->w.text_seen, (int) s->w.model_len, s->w.model,
                           (int) s->w.finish_len, s->w.finish);
}


static void
test_walk_stream(void)
{
    int         i, same;
    size_t      len;
    unsigned    chunks;
    unsigned long long  state;
    wstream_t  *a, *b;

    static char  buf[60000];

    a = malloc(sizeof(wstream_t));
    b = malloc(sizeof(wstream_t));
    chunks = 0;
    same = 1;

    for (i = 0; i < 3000 && same; i++) {
        len = wstream_make(buf, sizeof(buf));

        if (ufast_rnd(4) == 0) {
            /* cut anywhere */
            len = ufast_rnd((unsigned) len);
        }

        /* the same pieces for both: where a "\r\n" is cut moves the
         * end of an event by its '\n' (see sse.c) */
        state = ufast_state;
        wstream_run(a, buf, len, 0);
        ufast_state = state;
        wstream_run(b, buf, len, 1);

        chunks += b->chunks;

        same = a->log_len == b->log_len
               && memcmp(a->log, b->log, a->log_len) == 0
               && a->text_len == b->text_len
               && memcmp(a->text, b->text, a->text_len) == 0
               && a->end_events == b->end_events
               && a->sse.offset == b->sse.offset;

        if (!same) {
            fprintf(stderr, "offsets %llu %llu text %zu %zu\n",
                    (unsigned long long) a->sse.offset,
                    (unsigned long long) b->sse.offset, a->text_len,
                    b->text_len);
        }

        CHECK(same, "the fast path differs on stream %d:\n%.*s\n-- general:"
              "\n%.*s\n-- fast:\n%.*s", i, (int) len, buf, (int) a->log_len,
              a->log, (int) b->log_len, b->log);
    }

    /* the fast path was taken, and often */
    CHECK(chunks > 3000, "fast chunks: %u", chunks);

    free(a);
    free(b);
}


/*
 * usage_find_tail() against jansson: whenever it reads a usage in a text
 * jansson takes as valid JSON, it is that of the top-level "usage" member
 * jansson keeps (the last one), as usage_parse() reads it; and in a whole
 * valid text with one "usage" and no backslash, it finds it.
 */

static int
usage_eq(const ngx_http_ai_gateway_usage_t *a,
    const ngx_http_ai_gateway_usage_t *b)
{
    return a->input == b->input && a->output == b->output
           && a->total == b->total && a->cached_input == b->cached_input
           && a->cache_creation == b->cache_creation
           && a->reasoning == b->reasoning;
}


static int
tail_check(const char *doc, size_t len, int complete, const char *what)
{
    int                           rc;
    char                         *text;
    json_t                       *j, *u;
    json_error_t                  err;
    const char                   *q;
    ngx_http_ai_gateway_usage_t   got, want, none;

    ngx_http_ai_gateway_usage_init(&got);
    ngx_http_ai_gateway_usage_init(&none);

    rc = ngx_http_ai_gateway_usage_find_tail(&got,
                                             (const unsigned char *) doc, len);

    j = json_loadb(doc, len, JSON_ALLOW_NUL, &err);
    u = (j && json_is_object(j)) ? json_object_get(j, "usage") : NULL;

    if (rc == 0) {
        if (j != NULL) {
            ngx_http_ai_gateway_usage_init(&want);
            text = json_is_object(u) ? json_dumps(u, JSON_COMPACT) : NULL;

            CHECK(text != NULL
                  && ngx_http_ai_gateway_usage_parse(&want,
                         (const unsigned char *) text, strlen(text)) == 0
                  && usage_eq(&got, &want),
                  "%s: find_tail read another usage than jansson's", what);

            free(text);
        }

    } else {
        CHECK(usage_eq(&got, &none), "%s: find_tail failed, u changed", what);

        q = len ? memmem(doc, len, "\"usage\"", 7) : NULL;

        if (complete && j != NULL && json_is_object(u)
            && memchr(doc, '\\', len) == NULL
            && q != NULL && memmem(q + 1, len - (q + 1 - doc), "\"usage\"", 7)
                            == NULL)
        {
            CHECK(0, "%s: find_tail missed the usage of valid JSON", what);
        }
    }

    json_decref(j);

    return rc;
}


/* a random JSON value: strings with escapes and backslashes at their ends,
 * brackets in strings, "usage" keys and strings at any depth */

static void
tail_value(buf_t *b, int depth)
{
    static const char  *strs[] = {
        "\"\"", "\"a\"", "\"}\"", "\"{\\\"usage\\\":{}}\"", "\"\\\\\"",
        "\"x\\\\\\\"y\"", "\"usage\"", "\"\\u0041]\"", "\"caf\xc3\xa9\""
    };
    static const char  *lits[] = {
        "0", "-12.5e+3", "true", "false", "null", "42"
    };
    static const char  *keys[] = {
        "\"usage\"", "\"id\"", "\"u\\\"sage\"", "\"usage\\\\\"", "\"x}\""
    };
    static const char  *ws[] = { "", "", " ", "\n  ", "\t" };
    int                 i, n, k;

    k = (depth > 3) ? (int) (rng() % 2) : (int) (rng() % 5);

    switch (k) {

    case 0:
        n = rng() % (sizeof(strs) / sizeof(strs[0]));
        buf_add(b, strs[n], strlen(strs[n]));
        return;

    case 1:
        n = rng() % (sizeof(lits) / sizeof(lits[0]));
        buf_add(b, lits[n], strlen(lits[n]));
        return;

    case 2:
        buf_add(b, "[", 1);
        n = rng() % 4;

        for (i = 0; i < n; i++) {
            if (i) {
                buf_add(b, ",", 1);
            }

            tail_value(b, depth + 1);
        }

        buf_add(b, "]", 1);
        return;

    default:
        buf_add(b, "{", 1);
        n = rng() % 5;

        for (i = 0; i < n; i++) {
            if (i) {
                buf_add(b, ",", 1);
            }

            k = rng() % (sizeof(ws) / sizeof(ws[0]));
            buf_add(b, ws[k], strlen(ws[k]));
            k = rng() % (sizeof(keys) / sizeof(keys[0]));
            buf_add(b, keys[k], strlen(keys[k]));
            k = rng() % (sizeof(ws) / sizeof(ws[0]));
            buf_add(b, ws[k], strlen(ws[k]));
            buf_add(b, ":", 1);

            if (rng() % 3 == 0) {
                buf_add(b, "{\"prompt_tokens\":7,\"completion_tokens\":3}",
                        41);

            } else {
                tail_value(b, depth + 1);
            }

            k = rng() % (sizeof(ws) / sizeof(ws[0]));
            buf_add(b, ws[k], strlen(ws[k]));
        }

        buf_add(b, "}", 1);
        return;
    }
}


static void
test_find_tail(void)
{
    int                           k, m, found;
    size_t                        c, d, len, pos;
    buf_t                         b;
    const char                   *doc;
    ngx_http_ai_gateway_usage_t   u;

    /* the JSON answers of every provider shape, whole and cut short */

    for (c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        if (cases[c].mode != JSON) {
            continue;
        }

        for (d = 0; cases[c].docs[d]; d++) {
            len = strlen(cases[c].docs[d]);

            for (pos = 0; pos <= len; pos++) {
                (void) tail_check(cases[c].docs[d], pos, pos == len,
                                  cases[c].name);
            }
        }
    }

#define TAIL(s)                                                               \
    (ngx_http_ai_gateway_usage_init(&u),                                      \
     ngx_http_ai_gateway_usage_find_tail(&u, (const unsigned char *) (s),     \
                                         strlen(s)))

    /* an OpenAI answer: the usage, then system_fingerprint */

    doc = "{\"id\":\"c\",\"choices\":[{\"message\":{\"content\":"
          "\"say \\\"usage\\\":{} }\"}}],\"usage\":{\"prompt_tokens\":5,"
          "\"completion_tokens\":2,\"total_tokens\":7},"
          "\"system_fingerprint\":\"fp_1\"}\n";

    CHECK(TAIL(doc) == 0 && u.input == 5 && u.output == 2 && u.total == 7,
          "find_tail: OpenAI's usage before system_fingerprint");

    doc = "{\n  \"usage\" : {\"input_tokens\": 9, \"output_tokens\": 4},\n"
          "  \"type\": \"message\", \"x\": [1, {\"a\": \"]}\"}], "
          "\"t\": true\n}\n";

    CHECK(TAIL(doc) == 0 && u.input == 9 && u.output == 4,
          "find_tail: white space, members after the usage");

    /* a usage object one level down is not the answer's */

    CHECK(TAIL("{\"choices\":[{\"usage\":{\"prompt_tokens\":1}}]}") == -1
          && u.input == -1, "find_tail: a nested usage");

    CHECK(TAIL("{\"usage\":{\"prompt_tokens\":1},\"a\":{\"usage\":{}}}") == -1,
          "find_tail: the last usage key nested");

    CHECK(TAIL("{\"usage\":{\"prompt_tokens\":1},"
               "\"usage\":{\"prompt_tokens\":2}}") == 0 && u.input == 2,
          "find_tail: the last of two usage keys, as jansson");

    CHECK(TAIL("{\"usage\":null}") == -1, "find_tail: usage not an object");

    CHECK(TAIL("{\"x\\\"usage\":{\"prompt_tokens\":1}}") == -1,
          "find_tail: a key that ends in an escaped quote and usage");

    CHECK(TAIL("{\"usage\":{\"prompt_tokens\":1}} x") == -1,
          "find_tail: text after the document");

    CHECK(TAIL("[{\"usage\":{\"prompt_tokens\":1}}]") == -1,
          "find_tail: not an object");

#undef TAIL

    /* random documents, and mutated ones */

    found = 0;
    memset(&b, 0, sizeof(b));

    for (k = 0; k < 40000; k++) {
        b.len = 0;
        tail_value(&b, 0);

        if (k % 2) {
            for (m = 1 + rng() % 3; m > 0 && b.len; m--) {
                pos = rng() % b.len;
                b.p[pos] = "\"\\{}[],: u"[rng() % 10];
            }
        }

        if (tail_check(b.p, b.len, 1, "random document") == 0) {
            found++;
        }
    }

    CHECK(found > 1000, "find_tail: random documents with a usage: %d",
          found);

    buf_free(&b);
}

int
main(void)
{
    test_cases();
    test_count();
    test_truncated();
    test_malformed_state();
    test_stop();
    test_strings();
    test_short();
    test_long_key();
    test_prefix();
    test_suffix();
    test_usage_parse();
    test_usage_memo();
    test_usage_fast();
    test_find_tail();
    test_walk_stream();
    test_choice_seen();
    test_stream();
    test_mutations();

    printf("%d passed, %d failed\n", checks - failures, failures);

    return failures ? 1 : 0;
}
