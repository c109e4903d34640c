
/*
 * Unit tests for the OpenAI chat <-> Anthropic messages translation.
 * Outputs are compared structurally: parsed with jansson and json_equal()
 * to the expected document, and checked to be compact.  The JSON in this
 * file is written with ' for " (see q()), so that it reads as JSON.
 *
 *   - requests: every mapping, and the bodies that are refused;
 *   - JSON answers and error answers;
 *   - streams: text, tool calls, thinking, usage, errors, malformed and
 *     mutated events; the fast path for compact deltas against the general
 *     one; one stream also as SSE text through the SSE parser, split at
 *     every byte, with the same output whatever the split;
 *   - buffers: a pool-like allocator, and one that fails at every step.
 */


#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_http_ai_gateway_sse.h"
#include "ngx_http_ai_gateway_translate.h"


#include "check.h"


#define OK       NGX_HTTP_AI_GATEWAY_TRANSLATE_OK
#define INVALID  NGX_HTTP_AI_GATEWAY_TRANSLATE_INVALID
#define NOMEM    NGX_HTTP_AI_GATEWAY_TRANSLATE_NOMEM

#define CREATED  1700000000

typedef ngx_http_ai_gateway_translate_buf_t      tbuf_t;
typedef ngx_http_ai_gateway_translate_conf_t     tconf_t;
typedef ngx_http_ai_gateway_translate_request_t  treq_t;
typedef ngx_http_ai_gateway_translate_stream_t   tstream_t;
typedef ngx_http_ai_gateway_translate_usage_t    tusage_t;


static const tconf_t  conf_plain = { 0, 0, NULL, 0 };


/* ' -> ", a malloc'd copy */

static char *
q(const char *s)
{
    char    *r;
    size_t   i, n;

    n = strlen(s);
    r = malloc(n + 1);
    if (r == NULL) {
        abort();
    }

    for (i = 0; i <= n; i++) {
        r[i] = (s[i] == '\'') ? '"' : s[i];
    }

    return r;
}


static json_t *
load_q(const char *s, int line)
{
    char         *t;
    json_t       *j;
    json_error_t  err;

    t = q(s);
    j = json_loads(t, JSON_ALLOW_NUL, &err);

    if (j == NULL) {
        fprintf(stderr, "line %d: bad expectation: %s: %s\n", line, err.text,
                t);
        abort();
    }

    free(t);

    return j;
}


/* no whitespace outside strings */

static int
compact(const unsigned char *p, size_t len)
{
    int     in_str, esc;
    size_t  i;

    in_str = 0;
    esc = 0;

    for (i = 0; i < len; i++) {
        if (in_str) {
            if (esc) {
                esc = 0;

            } else if (p[i] == '\\') {
                esc = 1;

            } else if (p[i] == '"') {
                in_str = 0;
            }

            continue;
        }

        if (p[i] == '"') {
            in_str = 1;

        } else if (p[i] == ' ' || p[i] == '\n' || p[i] == '\t'
                   || p[i] == '\r')
        {
            return 0;
        }
    }

    return 1;
}


static void
expect_json(int line, const char *what, const unsigned char *p, size_t len,
    const char *expect)
{
    char         *s;
    json_t       *got, *want;
    json_error_t  err;

    want = load_q(expect, line);
    got = json_loadb((const char *) p, len, JSON_ALLOW_NUL, &err);

    CHECK(got != NULL, "line %d %s: not JSON (%s): %.*s", line, what,
          err.text, (int) len, p);
    CHECK(compact(p, len), "line %d %s: not compact: %.*s", line, what,
          (int) len, p);

    if (got != NULL) {
        s = json_dumps(want, JSON_COMPACT);
        CHECK(json_equal(got, want), "line %d %s:\n  got    %.*s\n"
              "  expect %s", line, what, (int) len, p, s);
        free(s);
    }

    json_decref(got);
    json_decref(want);
}


/* requests */


static void
req_run(int line, const char *body, const tconf_t *conf, treq_t *req,
    const char *expect)
{
    int      rc;
    char    *b;
    tbuf_t   out;

    b = q(body);
    ngx_http_ai_gateway_translate_buf_init(&out, NULL, NULL);

    rc = ngx_http_ai_gateway_translate_request((unsigned char *) b,
                                               strlen(b),
                                               conf ? conf : &conf_plain,
                                               req, &out);

    CHECK(rc == OK, "line %d: rc %d: %s", line, rc, req->error);

    if (rc == OK) {
        expect_json(line, "request", out.p, out.len, expect);
    }

    ngx_http_ai_gateway_translate_buf_free(&out);
    free(b);
}


static void
req_ok(int line, const char *body, const tconf_t *conf, const char *expect)
{
    treq_t  req;

    req_run(line, body, conf, &req, expect);
}


/* body as it is (no ' conversion when raw) */

static void
req_bad(int line, const char *body, int raw, const char *message)
{
    int      rc;
    char    *b;
    treq_t   req;
    tbuf_t   out;

    b = raw ? strdup(body) : q(body);
    ngx_http_ai_gateway_translate_buf_init(&out, NULL, NULL);

    rc = ngx_http_ai_gateway_translate_request((unsigned char *) b,
                                               strlen(b), &conf_plain, &req,
                                               &out);

    CHECK(rc == INVALID, "line %d: rc %d, output %.*s", line, rc,
          (int) out.len, out.p ? (char *) out.p : "");
    CHECK(req.status == 400, "line %d: status %u", line, req.status);
    CHECK(strstr(req.error, message) != NULL,
          "line %d: error \"%s\", expected \"%s\"", line, req.error, message);
    CHECK(out.len == 0, "line %d: output left: %zu bytes", line, out.len);

    ngx_http_ai_gateway_translate_buf_free(&out);
    free(b);
}


static void
test_request_plain(void)
{
    treq_t  req;

    req_run(__LINE__,
        "{'model':'gpt-4o','messages':[{'role':'user','content':'Hello'}]}",
        NULL, &req,
        "{'model':'gpt-4o','max_tokens':4096,"
        "'messages':[{'role':'user','content':'Hello'}]}");

    CHECK(req.model_len == 6 && memcmp(req.model, "gpt-4o", 6) == 0,
          "client model: %.*s", (int) req.model_len, req.model);
    CHECK(!req.stream && !req.include_usage, "stream flags");
    CHECK(req.max_tokens == 4096, "max_tokens %llu",
          (unsigned long long) req.max_tokens);

    /* a conversation; fields Anthropic does not know are dropped */

    req_ok(__LINE__,
        "{'model':'gpt-4o','messages':["
        "{'role':'user','content':'Hi','name':'bob'},"
        "{'role':'assistant','content':'Hello, how can I help?'},"
        "{'role':'user','content':'Tell me a joke'}],"
        "'frequency_penalty':0.5,'presence_penalty':0.1,'logit_bias':{'1':2},"
        "'seed':7,'response_format':{'type':'json_object'},'logprobs':false,"
        "'store':true,'metadata':{'a':'b'},'service_tier':'auto','n':1,"
        "'reasoning_effort':'low','top_logprobs':null,'modalities':['text']}",
        NULL,
        "{'model':'gpt-4o','max_tokens':4096,'messages':["
        "{'role':'user','content':'Hi'},"
        "{'role':'assistant','content':'Hello, how can I help?'},"
        "{'role':'user','content':'Tell me a joke'}]}");

    /* strings: escapes, control characters, UTF-8 as it is */

    req_ok(__LINE__,
        "{'model':'m','messages':[{'role':'user','content':"
        "'line\\nbreak \\'quoted\\' tab\\t \\u0001 \\u0000 caf\\u00e9 "
        "\xe2\x82\xac \\ud83d\\ude00 back\\\\slash /'}]}",
        NULL,
        "{'model':'m','max_tokens':4096,'messages':[{'role':'user','content':"
        "'line\\nbreak \\'quoted\\' tab\\t \\u0001 \\u0000 caf\xc3\xa9 "
        "\xe2\x82\xac \xf0\x9f\x98\x80 back\\\\slash /'}]}");
}


static void
test_request_utf8_raw(void)
{
    int      rc;
    char    *b;
    treq_t   req;
    tbuf_t   out;

    b = q("{'model':'m','messages':[{'role':'user','content':"
          "'caf\\u00e9 \\u0007 \\u001f'}],'temperature':0.7,'top_p':0.1}");
    ngx_http_ai_gateway_translate_buf_init(&out, NULL, NULL);

    rc = ngx_http_ai_gateway_translate_request((unsigned char *) b,
                                               strlen(b), &conf_plain, &req,
                                               &out);

    CHECK(rc == OK, "rc %d", rc);
    CHECK(out.p != NULL && strstr((char *) out.p, "caf\xc3\xa9") != NULL,
          "UTF-8 kept: %s", out.p);
    CHECK(out.p != NULL && strstr((char *) out.p, "\\u0007 \\u001f") != NULL,
          "control characters escaped: %s", out.p);
    CHECK(out.p != NULL && strstr((char *) out.p, "\"temperature\":0.7}")
          != NULL, "shortest real: %s", out.p);
    CHECK(out.p != NULL && out.p[out.len] == '\0', "NUL-terminated");

    ngx_http_ai_gateway_translate_buf_free(&out);
    free(b);
}


static void
test_request_system(void)
{
    req_ok(__LINE__,
        "{'model':'m','messages':["
        "{'role':'system','content':'You are terse.'},"
        "{'role':'developer','content':[{'type':'text','text':'Answer in "
        "French.'},{'type':'text','text':'No emojis.'}]},"
        "{'role':'user','content':'Hi'},"
        "{'role':'assistant','content':'Salut'},"
        "{'role':'system','content':''},"
        "{'role':'system','content':'Be nice.'},"
        "{'role':'user','content':'Again'}]}",
        NULL,
        "{'model':'m','max_tokens':4096,"
        "'system':'You are terse.\\n\\nAnswer in French.\\n\\nNo emojis."
        "\\n\\nBe nice.',"
        "'messages':[{'role':'user','content':'Hi'},"
        "{'role':'assistant','content':'Salut'},"
        "{'role':'user','content':'Again'}]}");

    /* a system message between two user messages: they merge */

    req_ok(__LINE__,
        "{'model':'m','messages':["
        "{'role':'user','content':'one'},"
        "{'role':'developer','content':'rules'},"
        "{'role':'user','content':'two'}]}",
        NULL,
        "{'model':'m','max_tokens':4096,'system':'rules',"
        "'messages':[{'role':'user','content':["
        "{'type':'text','text':'one'},{'type':'text','text':'two'}]}]}");

    req_bad(__LINE__,
        "{'model':'m','messages':[{'role':'system','content':'x'}]}", 0,
        "must have a user or assistant message");

    req_bad(__LINE__,
        "{'model':'m','messages':[{'role':'system','content':"
        "[{'type':'image_url','image_url':{'url':'https://a/b.png'}}]},"
        "{'role':'user','content':'x'}]}", 0,
        "'messages[0].content[0]' must be a text part");

    req_bad(__LINE__,
        "{'model':'m','messages':[{'role':'system','content':5},"
        "{'role':'user','content':'x'}]}", 0,
        "'messages[0].content' must be a string or an array");
}


static void
test_request_parts(void)
{
    req_ok(__LINE__,
        "{'model':'m','messages':[{'role':'user','content':["
        "{'type':'text','text':'What is this?'},"
        "{'type':'image_url','image_url':{'url':"
        "'data:image/png;base64,iVBORw0KGgo='}},"
        "{'type':'image_url','image_url':{'url':"
        "'https://example.com/cat.jpg','detail':'high'}},"
        "{'type':'text','text':''},"
        "{'type':'file','file':{'filename':'a.pdf','file_data':"
        "'data:application/pdf;base64,JVBERi0='}}]}]}",
        NULL,
        "{'model':'m','max_tokens':4096,'messages':[{'role':'user','content':["
        "{'type':'text','text':'What is this?'},"
        "{'type':'image','source':{'type':'base64','media_type':'image/png',"
        "'data':'iVBORw0KGgo='}},"
        "{'type':'image','source':{'type':'url','url':"
        "'https://example.com/cat.jpg'}},"
        "{'type':'document','source':{'type':'base64',"
        "'media_type':'application/pdf','data':'JVBERi0='}}]}]}");

    /* a legacy string image_url, a data URL with a parameter */

    req_ok(__LINE__,
        "{'model':'m','messages':[{'role':'user','content':["
        "{'type':'image_url','image_url':'http://example.com/a.gif'},"
        "{'type':'image_url','image_url':{'url':"
        "'data:image/jpeg;name=x.jpg;base64,/9j/4AAQ'}}]}]}",
        NULL,
        "{'model':'m','max_tokens':4096,'messages':[{'role':'user','content':["
        "{'type':'image','source':{'type':'url','url':"
        "'http://example.com/a.gif'}},"
        "{'type':'image','source':{'type':'base64','media_type':'image/jpeg',"
        "'data':'/9j/4AAQ'}}]}]}");

    req_bad(__LINE__,
        "{'model':'m','messages':[{'role':'user','content':["
        "{'type':'image_url','image_url':{'url':'ftp://x/y.png'}}]}]}", 0,
        "'messages[0].content[0]': the URL must be http(s) or a base64");

    req_bad(__LINE__,
        "{'model':'m','messages':[{'role':'user','content':["
        "{'type':'text','text':'a'},"
        "{'type':'image_url','image_url':{'url':'data:image/png,abc'}}]}]}",
        0, "'messages[0].content[1]': the URL");

    req_bad(__LINE__,
        "{'model':'m','messages':[{'role':'user','content':["
        "{'type':'image_url','image_url':{'url':'data:;base64,abc'}}]}]}",
        0, "the URL must be");

    req_bad(__LINE__,
        "{'model':'m','messages':[{'role':'user','content':["
        "{'type':'input_audio','input_audio':{'data':'x','format':'wav'}}]}"
        "]}", 0, "'messages[0].content[0].type' is not supported");

    req_bad(__LINE__,
        "{'model':'m','messages':[{'role':'user','content':["
        "{'type':'file','file':{'file_id':'file-1'}}]}]}", 0,
        "only 'file_data' is supported");

    req_bad(__LINE__,
        "{'model':'m','messages':[{'role':'user','content':[{'text':'a'}]}]}",
        0, "'messages[0].content[0].type' must be a string");

    req_bad(__LINE__,
        "{'model':'m','messages':[{'role':'user','content':"
        "[{'type':'text','text':5}]}]}",
        0, "'messages[0].content[0].text' must be a string");
}


#define TOOLS                                                                 \
    "'tools':[{'type':'function','function':{'name':'get_weather',"           \
    "'description':'Weather of a city','parameters':{'type':'object',"        \
    "'properties':{'city':{'type':'string'},'days':{'type':'integer',"        \
    "'minimum':1,'maximum':7.5}},'required':['city']},'strict':true}},"       \
    "{'type':'function','function':{'name':'now'}}]"

#define TOOLS_OUT                                                             \
    "'tools':[{'name':'get_weather','description':'Weather of a city',"       \
    "'input_schema':{'type':'object','properties':{'city':{'type':"           \
    "'string'},'days':{'type':'integer','minimum':1,'maximum':7.5}},"         \
    "'required':['city']}},"                                                  \
    "{'name':'now','input_schema':{'type':'object','properties':{}}}]"

#define HELLO  "'messages':[{'role':'user','content':'Hello'}]"
#define HELLO_OUT                                                             \
    "'model':'m','max_tokens':4096,"                                          \
    "'messages':[{'role':'user','content':'Hello'}]"


static void
test_request_tools(void)
{
    req_ok(__LINE__, "{'model':'m'," HELLO "," TOOLS "}", NULL,
           "{" HELLO_OUT "," TOOLS_OUT "}");

    req_ok(__LINE__, "{'model':'m'," HELLO "," TOOLS ",'tool_choice':'auto'}",
           NULL, "{" HELLO_OUT "," TOOLS_OUT ",'tool_choice':{'type':'auto'}}");

    req_ok(__LINE__,
           "{'model':'m'," HELLO "," TOOLS ",'tool_choice':'required'}",
           NULL, "{" HELLO_OUT "," TOOLS_OUT ",'tool_choice':{'type':'any'}}");

    req_ok(__LINE__,
           "{'model':'m'," HELLO "," TOOLS ",'tool_choice':'none',"
           "'parallel_tool_calls':false}",
           NULL,
           "{" HELLO_OUT "," TOOLS_OUT ",'tool_choice':{'type':'none'}}");

    req_ok(__LINE__,
           "{'model':'m'," HELLO "," TOOLS ",'tool_choice':{'type':"
           "'function','function':{'name':'now'}}}",
           NULL,
           "{" HELLO_OUT "," TOOLS_OUT
           ",'tool_choice':{'type':'tool','name':'now'}}");

    req_ok(__LINE__,
           "{'model':'m'," HELLO "," TOOLS ",'tool_choice':'required',"
           "'parallel_tool_calls':false}",
           NULL,
           "{" HELLO_OUT "," TOOLS_OUT ",'tool_choice':{'type':'any',"
           "'disable_parallel_tool_use':true}}");

    req_ok(__LINE__,
           "{'model':'m'," HELLO "," TOOLS ",'parallel_tool_calls':false}",
           NULL,
           "{" HELLO_OUT "," TOOLS_OUT ",'tool_choice':{'type':'auto',"
           "'disable_parallel_tool_use':true}}");

    req_ok(__LINE__,
           "{'model':'m'," HELLO "," TOOLS ",'parallel_tool_calls':true}",
           NULL, "{" HELLO_OUT "," TOOLS_OUT "}");

    /* without tools, a tool_choice is moot */

    req_ok(__LINE__,
           "{'model':'m'," HELLO ",'tools':[],'tool_choice':'required',"
           "'parallel_tool_calls':false}",
           NULL, "{" HELLO_OUT "}");

    req_ok(__LINE__,
           "{'model':'m'," HELLO ",'tools':null,'tool_choice':null}",
           NULL, "{" HELLO_OUT "}");

    req_bad(__LINE__, "{'model':'m'," HELLO "," TOOLS
            ",'tool_choice':'sometimes'}", 0, "'tool_choice' must be");

    req_bad(__LINE__, "{'model':'m'," HELLO "," TOOLS
            ",'tool_choice':{'type':'function'}}", 0, "'tool_choice' must be");

    req_bad(__LINE__, "{'model':'m'," HELLO ",'tools':[{'type':'custom',"
            "'custom':{'name':'x'}}]}", 0, "'tools[0].type' must be");

    req_bad(__LINE__, "{'model':'m'," HELLO ",'tools':[{'type':'function',"
            "'function':{'description':'x'}}]}", 0,
            "'tools[0].function.name' must be a string");

    req_bad(__LINE__, "{'model':'m'," HELLO ",'tools':[{'type':'function',"
            "'function':{'name':'x','parameters':[]}}]}", 0,
            "'tools[0].function.parameters' must be an object");

    req_bad(__LINE__, "{'model':'m'," HELLO ",'tools':{}}", 0,
            "'tools' must be an array");

    req_bad(__LINE__, "{'model':'m'," HELLO ",'functions':[{'name':'x'}]}",
            0, "'functions' and 'function_call' are not supported");
}


static void
test_request_tool_calls(void)
{
    /* two calls, their two results (merged, with the next user message) */

    req_ok(__LINE__,
        "{'model':'m'," TOOLS ",'messages':["
        "{'role':'user','content':'Weather in Paris and Rome?'},"
        "{'role':'assistant','content':null,'tool_calls':["
        "{'id':'call_1','type':'function','function':{'name':'get_weather',"
        "'arguments':'{\\'city\\':\\'Paris\\',\\'days\\':2}'}},"
        "{'id':'call_2','type':'function','function':{'name':'get_weather',"
        "'arguments':' {\\'city\\': \\'Rome\\'} '}}]},"
        "{'role':'tool','tool_call_id':'call_1','content':'18C'},"
        "{'role':'tool','tool_call_id':'call_2','content':"
        "[{'type':'text','text':'21C'}]},"
        "{'role':'user','content':'Thanks. And now?'},"
        "{'role':'assistant','content':'Let me check the time.',"
        "'tool_calls':[{'id':'call_3','type':'function','function':"
        "{'name':'now','arguments':''}}]},"
        "{'role':'tool','tool_call_id':'call_3','content':'12:00'}]}",
        NULL,
        "{'model':'m','max_tokens':4096," TOOLS_OUT ",'messages':["
        "{'role':'user','content':'Weather in Paris and Rome?'},"
        "{'role':'assistant','content':["
        "{'type':'tool_use','id':'call_1','name':'get_weather',"
        "'input':{'city':'Paris','days':2}},"
        "{'type':'tool_use','id':'call_2','name':'get_weather',"
        "'input':{'city':'Rome'}}]},"
        "{'role':'user','content':["
        "{'type':'tool_result','tool_use_id':'call_1','content':'18C'},"
        "{'type':'tool_result','tool_use_id':'call_2','content':"
        "[{'type':'text','text':'21C'}]},"
        "{'type':'text','text':'Thanks. And now?'}]},"
        "{'role':'assistant','content':["
        "{'type':'text','text':'Let me check the time.'},"
        "{'type':'tool_use','id':'call_3','name':'now','input':{}}]},"
        "{'role':'user','content':["
        "{'type':'tool_result','tool_use_id':'call_3','content':'12:00'}]}]}");

    /* content "" and tool_calls: no empty text block; arguments missing */

    req_ok(__LINE__,
        "{'model':'m','messages':["
        "{'role':'user','content':'x'},"
        "{'role':'assistant','content':'','tool_calls':[{'id':'c',"
        "'type':'function','function':{'name':'now'}}]}]}",
        NULL,
        "{'model':'m','max_tokens':4096,'messages':["
        "{'role':'user','content':'x'},"
        "{'role':'assistant','content':[{'type':'tool_use','id':'c',"
        "'name':'now','input':{}}]}]}");

    req_bad(__LINE__,
        "{'model':'m','messages':[{'role':'user','content':'x'},"
        "{'role':'assistant','tool_calls':[{'id':'c','type':'function',"
        "'function':{'name':'f','arguments':'{not json'}}]}]}", 0,
        "'messages[1].tool_calls[0].function.arguments' is not valid JSON");

    req_bad(__LINE__,
        "{'model':'m','messages':[{'role':'user','content':'x'},"
        "{'role':'assistant','tool_calls':[{'id':'c','type':'function',"
        "'function':{'name':'f','arguments':'[1,2]'}}]}]}", 0,
        "'messages[1].tool_calls[0].function.arguments' must be a JSON "
        "object");

    req_bad(__LINE__,
        "{'model':'m','messages':[{'role':'user','content':'x'},"
        "{'role':'assistant','tool_calls':[{'type':'function',"
        "'function':{'name':'f','arguments':'{}'}}]}]}", 0,
        "'messages[1].tool_calls[0]' needs an 'id'");

    req_bad(__LINE__,
        "{'model':'m','messages':[{'role':'user','content':'x'},"
        "{'role':'assistant','tool_calls':{}}]}", 0,
        "'messages[1].tool_calls' must be an array");

    req_bad(__LINE__,
        "{'model':'m','messages':[{'role':'user','content':'x'},"
        "{'role':'assistant','content':'y','tool_calls':5}]}", 0,
        "'messages[1].tool_calls' must be an array");

    req_ok(__LINE__,
        "{'model':'m','messages':[{'role':'user','content':'x'},"
        "{'role':'assistant','content':'y','tool_calls':[]}]}", NULL,
        "{'model':'m','max_tokens':4096,'messages':["
        "{'role':'user','content':'x'},{'role':'assistant','content':'y'}]}");

    req_bad(__LINE__,
        "{'model':'m','messages':[{'role':'user','content':'x'},"
        "{'role':'tool','content':'r'}]}", 0,
        "'messages[1].tool_call_id' must be a string");

    req_bad(__LINE__,
        "{'model':'m','messages':[{'role':'user','content':'x'},"
        "{'role':'tool','tool_call_id':'c'}]}", 0,
        "'messages[1].content' must be a string or an array");

    req_bad(__LINE__,
        "{'model':'m','messages':[{'role':'user','content':'x'},"
        "{'role':'function','name':'f','content':'r'}]}", 0,
        "'messages[1].role': \"function\" is not supported");

    req_bad(__LINE__,
        "{'model':'m','messages':[{'role':'user','content':'x'},"
        "{'role':'assistant','content':'y','function_call':{'name':'f',"
        "'arguments':'{}'}}]}", 0,
        "'messages[1].function_call' is not supported");
}


static void
test_request_merge(void)
{
    req_ok(__LINE__,
        "{'model':'m','messages':["
        "{'role':'user','content':'a'},"
        "{'role':'user','content':[{'type':'text','text':'b'}]},"
        "{'role':'assistant','content':'c'},"
        "{'role':'assistant','content':[{'type':'refusal','refusal':'d'}]},"
        "{'role':'user','content':'e'}]}",
        NULL,
        "{'model':'m','max_tokens':4096,'messages':["
        "{'role':'user','content':[{'type':'text','text':'a'},"
        "{'type':'text','text':'b'}]},"
        "{'role':'assistant','content':[{'type':'text','text':'c'},"
        "{'type':'text','text':'d'}]},"
        "{'role':'user','content':'e'}]}");

    /* a lone message with parts keeps its parts */

    req_ok(__LINE__,
        "{'model':'m','messages':[{'role':'user','content':"
        "[{'type':'text','text':'a'}]}]}",
        NULL,
        "{'model':'m','max_tokens':4096,'messages':["
        "{'role':'user','content':[{'type':'text','text':'a'}]}]}");
}


static void
test_request_fields(void)
{
    treq_t   req;
    tconf_t  conf;

    /* max_tokens */

    req_ok(__LINE__, "{'model':'m'," HELLO ",'max_tokens':50}", NULL,
           "{'model':'m','max_tokens':50,"
           "'messages':[{'role':'user','content':'Hello'}]}");

    req_ok(__LINE__, "{'model':'m'," HELLO ",'max_tokens':50,"
           "'max_completion_tokens':70}", NULL,
           "{'model':'m','max_tokens':70,"
           "'messages':[{'role':'user','content':'Hello'}]}");

    req_ok(__LINE__, "{'model':'m'," HELLO ",'max_tokens':null,"
           "'max_completion_tokens':null}", NULL, "{" HELLO_OUT "}");

    conf = conf_plain;
    conf.default_max_tokens = 1000;
    conf.max_tokens_limit = 64000;

    req_ok(__LINE__, "{'model':'m'," HELLO "}", &conf,
           "{'model':'m','max_tokens':1000,"
           "'messages':[{'role':'user','content':'Hello'}]}");

    req_run(__LINE__, "{'model':'m'," HELLO ",'max_completion_tokens':100000}",
            &conf, &req,
            "{'model':'m','max_tokens':64000,"
            "'messages':[{'role':'user','content':'Hello'}]}");

    CHECK(req.max_tokens == 64000, "max_tokens %llu",
          (unsigned long long) req.max_tokens);

    req_bad(__LINE__, "{'model':'m'," HELLO ",'max_tokens':0}", 0,
            "'max_tokens' must be a positive integer");
    req_bad(__LINE__, "{'model':'m'," HELLO ",'max_completion_tokens':'9'}",
            0, "'max_completion_tokens' must be a positive integer");
    req_bad(__LINE__, "{'model':'m'," HELLO ",'max_tokens':10.5}", 0,
            "'max_tokens' must be a positive integer");

    /* stop */

    req_ok(__LINE__, "{'model':'m'," HELLO ",'stop':'END'}", NULL,
           "{" HELLO_OUT ",'stop_sequences':['END']}");
    req_ok(__LINE__, "{'model':'m'," HELLO ",'stop':['a','\\n\\n']}", NULL,
           "{" HELLO_OUT ",'stop_sequences':['a','\\n\\n']}");
    req_ok(__LINE__, "{'model':'m'," HELLO ",'stop':null}", NULL,
           "{" HELLO_OUT "}");
    req_bad(__LINE__, "{'model':'m'," HELLO ",'stop':['a',1]}", 0,
            "'stop' must be a string or an array of strings");
    req_bad(__LINE__, "{'model':'m'," HELLO ",'stop':5}", 0,
            "'stop' must be a string or an array of strings");

    /* temperature and top_p */

    req_ok(__LINE__, "{'model':'m'," HELLO ",'temperature':1.5}", NULL,
           "{" HELLO_OUT ",'temperature':1.0}");
    req_ok(__LINE__, "{'model':'m'," HELLO ",'temperature':2}", NULL,
           "{" HELLO_OUT ",'temperature':1.0}");
    req_ok(__LINE__, "{'model':'m'," HELLO ",'temperature':0.7}", NULL,
           "{" HELLO_OUT ",'temperature':0.7}");
    req_ok(__LINE__, "{'model':'m'," HELLO ",'temperature':0}", NULL,
           "{" HELLO_OUT ",'temperature':0}");
    req_ok(__LINE__, "{'model':'m'," HELLO ",'temperature':1}", NULL,
           "{" HELLO_OUT ",'temperature':1}");
    req_ok(__LINE__, "{'model':'m'," HELLO ",'temperature':0.2,'top_p':0.9}",
           NULL, "{" HELLO_OUT ",'temperature':0.2}");
    req_ok(__LINE__, "{'model':'m'," HELLO ",'temperature':null,'top_p':0.9}",
           NULL, "{" HELLO_OUT ",'top_p':0.9}");
    req_bad(__LINE__, "{'model':'m'," HELLO ",'temperature':3}", 0,
            "'temperature' must be a number from 0 to 2");
    req_bad(__LINE__, "{'model':'m'," HELLO ",'temperature':-0.1}", 0,
            "'temperature' must be a number from 0 to 2");
    req_bad(__LINE__, "{'model':'m'," HELLO ",'temperature':'hot'}", 0,
            "'temperature' must be a number");
    req_bad(__LINE__, "{'model':'m'," HELLO ",'top_p':'x'}", 0,
            "'top_p' must be a number");

    /* stream, include_usage, user */

    req_run(__LINE__, "{'model':'m'," HELLO ",'stream':true,"
            "'stream_options':{'include_usage':true},'user':'u-42'}",
            NULL, &req,
            "{" HELLO_OUT ",'stream':true,'metadata':{'user_id':'u-42'}}");

    CHECK(req.stream && req.include_usage, "stream %u include_usage %u",
          req.stream, req.include_usage);

    req_run(__LINE__, "{'model':'m'," HELLO ",'stream':false,"
            "'stream_options':{'include_usage':false},"
            "'safety_identifier':'s-1'}",
            NULL, &req,
            "{" HELLO_OUT ",'metadata':{'user_id':'s-1'}}");

    CHECK(!req.stream && !req.include_usage, "stream %u include_usage %u",
          req.stream, req.include_usage);

    req_bad(__LINE__, "{'model':'m'," HELLO ",'stream':'yes'}", 0,
            "'stream' must be a boolean");

    /* n */

    req_bad(__LINE__, "{'model':'m'," HELLO ",'n':2}", 0, "'n' must be 1");
    req_bad(__LINE__, "{'model':'m'," HELLO ",'n':'1'}", 0, "'n' must be 1");
    req_ok(__LINE__, "{'model':'m'," HELLO ",'n':null}", NULL,
           "{" HELLO_OUT "}");

    /* model: the override, the client's kept for the caller */

    conf = conf_plain;
    conf.model = "claude-sonnet-4-5";
    conf.model_len = strlen(conf.model);

    req_run(__LINE__, "{'model':'gpt-4o-mini'," HELLO "}", &conf, &req,
            "{'model':'claude-sonnet-4-5','max_tokens':4096,"
            "'messages':[{'role':'user','content':'Hello'}]}");

    CHECK(req.model_len == 11 && memcmp(req.model, "gpt-4o-mini", 11) == 0,
          "client model %.*s", (int) req.model_len, req.model);

    req_run(__LINE__, "{" HELLO "}", &conf, &req,
            "{'model':'claude-sonnet-4-5','max_tokens':4096,"
            "'messages':[{'role':'user','content':'Hello'}]}");

    CHECK(req.model_len == 0, "no client model");

    req_bad(__LINE__, "{" HELLO "}", 0, "'model' is a required property");
    req_bad(__LINE__, "{'model':5," HELLO "}", 0, "'model' must be a string");
}


static void
test_request_long_model(void)
{
    int       rc;
    char     *b;
    size_t    n;
    treq_t    req;
    tbuf_t    out;

    /* 300 bytes of two-byte characters: cut at 256 on a boundary */

    b = malloc(1000);
    strcpy(b, "{\"model\":\"");
    n = strlen(b);

    while (n < 10 + 300) {
        b[n++] = '\xc3';
        b[n++] = '\xa9';
    }

    b[n++] = 'x';
    strcpy(b + n, "\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}");

    ngx_http_ai_gateway_translate_buf_init(&out, NULL, NULL);

    rc = ngx_http_ai_gateway_translate_request((unsigned char *) b,
                                               strlen(b), &conf_plain, &req,
                                               &out);

    CHECK(rc == OK, "rc %d", rc);
    CHECK(req.model_len == 256 && memcmp(req.model, b + 10, 256) == 0,
          "model cut: %zu", req.model_len);

    ngx_http_ai_gateway_translate_buf_free(&out);
    free(b);
}


static void
test_request_invalid(void)
{
    req_bad(__LINE__, "{\"model\":\"m\",\"messages\":[", 1,
            "the request body is not valid JSON");
    req_bad(__LINE__, "", 1, "the request body is not valid JSON");
    req_bad(__LINE__, "[1]", 1, "the request body must be a JSON object");
    req_bad(__LINE__, "{'model':'m'}", 0, "'messages' is a required property");
    req_bad(__LINE__, "{'model':'m','messages':null}", 0,
            "'messages' is a required property");
    req_bad(__LINE__, "{'model':'m','messages':'hi'}", 0,
            "'messages' must be an array");
    req_bad(__LINE__, "{'model':'m','messages':{}}", 0,
            "'messages' must be an array");
    req_bad(__LINE__, "{'model':'m','messages':[]}", 0,
            "'messages' must not be empty");
    req_bad(__LINE__, "{'model':'m','messages':['hi']}", 0,
            "'messages[0]' must be an object");
    req_bad(__LINE__, "{'model':'m','messages':[{'content':'hi'}]}", 0,
            "'messages[0].role' must be a string");
    req_bad(__LINE__, "{'model':'m','messages':[{'role':'user','content':'a'},"
            "{'role':'robot','content':'hi'}]}", 0,
            "'messages[1].role' is not one of");
    req_bad(__LINE__, "{'model':'m','messages':[{'role':'user'}]}", 0,
            "'messages[0].content' is a required property");
    req_bad(__LINE__, "{'model':'m','messages':[{'role':'user',"
            "'content':{}}]}", 0,
            "'messages[0].content' must be a string or an array");
    req_bad(__LINE__, "{'model':'m','messages':[{'role':'user',"
            "'content':'x'}],'seed':123456789012345678901234}", 0,
            "the request body is not valid JSON");
}


/* JSON answers */


static void
resp_ok(int line, const char *body, const char *expect, tusage_t *u)
{
    int      rc;
    char    *b;
    tbuf_t   out;

    b = q(body);
    ngx_http_ai_gateway_translate_buf_init(&out, NULL, NULL);

    rc = ngx_http_ai_gateway_translate_response((unsigned char *) b,
                                                strlen(b), CREATED,
                                                (unsigned char *) "fallback",
                                                8, u, &out);

    CHECK(rc == OK, "line %d: rc %d", line, rc);

    if (rc == OK) {
        expect_json(line, "answer", out.p, out.len, expect);
    }

    ngx_http_ai_gateway_translate_buf_free(&out);
    free(b);
}


#define USAGE_10_5                                                            \
    "'usage':{'prompt_tokens':10,'completion_tokens':5,'total_tokens':15,"    \
    "'prompt_tokens_details':{'cached_tokens':0}}"


static void
test_response(void)
{
    int          rc;
    char         body[512], expect[1024];
    size_t       i;
    tbuf_t       out;
    tusage_t     u;
    const char  *f;

    static const char  *reasons[][2] = {
        { "end_turn", "stop" },
        { "stop_sequence", "stop" },
        { "max_tokens", "length" },
        { "tool_use", "tool_calls" },
        { "refusal", "content_filter" },
        { "pause_turn", "stop" },
        { "model_context_window_exceeded", "length" },
        { "something_new", "stop" }
    };

    memset(&u, 0xff, sizeof(u));

    resp_ok(__LINE__,
        "{'id':'msg_01ABC','type':'message','role':'assistant',"
        "'model':'claude-sonnet-4-5','content':[{'type':'text','text':"
        "'Hello!'}],'stop_reason':'end_turn','stop_sequence':null,"
        "'usage':{'input_tokens':10,'output_tokens':5}}",
        "{'id':'chatcmpl-01ABC','object':'chat.completion','created':"
        "1700000000,'model':'claude-sonnet-4-5','choices':[{'index':0,"
        "'message':{'role':'assistant','content':'Hello!'},"
        "'logprobs':null,'finish_reason':'stop'}]," USAGE_10_5 "}", &u);

    CHECK(u.found && u.input_tokens == 10 && u.output_tokens == 5
          && u.cached_tokens == 0, "usage");

    /* tool_use only: content null; arguments the compact input */

    resp_ok(__LINE__,
        "{'id':'msg_1','type':'message','role':'assistant','model':'c',"
        "'content':[{'type':'tool_use','id':'toolu_1','name':'get_weather',"
        "'input':{'city':'Paris','days':2,'ratio':0.1,'tags':['a','b'],"
        "'q':'say \\'hi\\''}}],"
        "'stop_reason':'tool_use','usage':{'input_tokens':10,"
        "'output_tokens':5}}",
        "{'id':'chatcmpl-1','object':'chat.completion','created':1700000000,"
        "'model':'c','choices':[{'index':0,'message':{'role':'assistant',"
        "'content':null,'tool_calls':[{'id':'toolu_1','type':'function',"
        "'function':{'name':'get_weather','arguments':"
        "'{\\'city\\':\\'Paris\\',\\'days\\':2,\\'ratio\\':0.1,"
        "\\'tags\\':[\\'a\\',\\'b\\'],\\'q\\':\\'say \\\\\\'hi\\\\\\'\\'}'}}]},"
        "'logprobs':null,'finish_reason':'tool_calls'}]," USAGE_10_5 "}",
        NULL);

    /* text, thinking (left out), two tool calls; split text joined */

    resp_ok(__LINE__,
        "{'id':'msg_2','type':'message','role':'assistant','model':'c',"
        "'content':[{'type':'thinking','thinking':'hmm','signature':'s'},"
        "{'type':'text','text':'Checking '},{'type':'text','text':'both.'},"
        "{'type':'tool_use','id':'t1','name':'a','input':{}},"
        "{'type':'tool_use','id':'t2','name':'b','input':{'x':[1,{'y':null}]}"
        "}],'stop_reason':'tool_use','usage':{'input_tokens':10,"
        "'output_tokens':5}}",
        "{'id':'chatcmpl-2','object':'chat.completion','created':1700000000,"
        "'model':'c','choices':[{'index':0,'message':{'role':'assistant',"
        "'content':'Checking both.','tool_calls':["
        "{'id':'t1','type':'function','function':{'name':'a',"
        "'arguments':'{}'}},"
        "{'id':'t2','type':'function','function':{'name':'b',"
        "'arguments':'{\\'x\\':[1,{\\'y\\':null}]}'}}]},"
        "'logprobs':null,'finish_reason':'tool_calls'}]," USAGE_10_5 "}",
        NULL);

    /* cache tokens; no model (the caller's), an id without msg_ */

    resp_ok(__LINE__,
        "{'id':'abc','type':'message','content':[],'stop_reason':null,"
        "'usage':{'input_tokens':100,'cache_read_input_tokens':1000,"
        "'cache_creation_input_tokens':50,'output_tokens':20}}",
        "{'id':'chatcmpl-abc','object':'chat.completion','created':1700000000,"
        "'model':'fallback','choices':[{'index':0,'message':{'role':"
        "'assistant','content':''},'logprobs':null,'finish_reason':null}],"
        "'usage':{'prompt_tokens':1150,'completion_tokens':20,"
        "'total_tokens':1170,'prompt_tokens_details':{'cached_tokens':1000}}}",
        &u);

    CHECK(u.found && u.input_tokens == 1150 && u.output_tokens == 20
          && u.cached_tokens == 1000, "usage with cache: %llu %llu %llu",
          (unsigned long long) u.input_tokens,
          (unsigned long long) u.output_tokens,
          (unsigned long long) u.cached_tokens);

    resp_ok(__LINE__, "{'content':[{'type':'text','text':'x'}]}",
        "{'id':'chatcmpl-','object':'chat.completion','created':1700000000,"
        "'model':'fallback','choices':[{'index':0,'message':{'role':"
        "'assistant','content':'x'},'logprobs':null,'finish_reason':null}],"
        "'usage':{'prompt_tokens':0,'completion_tokens':0,"
        "'total_tokens':0,'prompt_tokens_details':{'cached_tokens':0}}}", &u);

    CHECK(!u.found, "no usage");

    /* each stop_reason, through the answer and alone */

    for (i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++) {
        snprintf(body, sizeof(body),
                 "{'id':'msg_x','type':'message','model':'c','content':"
                 "[{'type':'text','text':'t'}],'stop_reason':'%s',"
                 "'usage':{'input_tokens':10,'output_tokens':5}}",
                 reasons[i][0]);
        snprintf(expect, sizeof(expect),
                 "{'id':'chatcmpl-x','object':'chat.completion','created':"
                 "1700000000,'model':'c','choices':[{'index':0,'message':"
                 "{'role':'assistant','content':'t'},'logprobs':null,"
                 "'finish_reason':'%s'}]," USAGE_10_5 "}", reasons[i][1]);

        resp_ok(__LINE__, body, expect, NULL);

        f = ngx_http_ai_gateway_translate_finish_reason(
                (unsigned char *) reasons[i][0], strlen(reasons[i][0]));
        CHECK(f != NULL && strcmp(f, reasons[i][1]) == 0, "%s -> %s",
              reasons[i][0], f ? f : "NULL");
    }

    CHECK(ngx_http_ai_gateway_translate_finish_reason(NULL, 0) == NULL,
          "null stop_reason");

    /* not a message */

    ngx_http_ai_gateway_translate_buf_init(&out, NULL, NULL);

    rc = ngx_http_ai_gateway_translate_response((unsigned char *) "<html>", 6,
                                                CREATED, NULL, 0, NULL, &out);
    CHECK(rc == INVALID && out.len == 0, "not JSON: %d", rc);

    f = "{\"type\":\"error\",\"error\":{\"type\":\"api_error\","
        "\"message\":\"x\"}}";
    rc = ngx_http_ai_gateway_translate_response((unsigned char *) f,
                                                strlen(f), CREATED, NULL, 0,
                                                NULL, &out);
    CHECK(rc == INVALID && out.len == 0, "an error: %d", rc);

    f = "{\"type\":\"message\",\"content\":\"x\"}";
    rc = ngx_http_ai_gateway_translate_response((unsigned char *) f,
                                                strlen(f), CREATED, NULL, 0,
                                                NULL, &out);
    CHECK(rc == INVALID && out.len == 0, "content not an array: %d", rc);

    ngx_http_ai_gateway_translate_buf_free(&out);
}


/* error answers */


static void
err_ok(int line, const char *body, unsigned status, const char *expect)
{
    int      rc;
    char    *b;
    tbuf_t   out;

    b = q(body);
    ngx_http_ai_gateway_translate_buf_init(&out, NULL, NULL);

    rc = ngx_http_ai_gateway_translate_error((unsigned char *) b, strlen(b),
                                             status, &out);

    CHECK(rc == OK, "line %d: rc %d", line, rc);

    if (rc == OK) {
        expect_json(line, "error", out.p, out.len, expect);
    }

    ngx_http_ai_gateway_translate_buf_free(&out);
    free(b);
}


static void
test_error(void)
{
    int     rc;
    tbuf_t  out;

    err_ok(__LINE__,
        "{'type':'error','error':{'type':'overloaded_error',"
        "'message':'Overloaded'},'request_id':'req_1'}", 529,
        "{'error':{'message':'Overloaded','type':'server_error',"
        "'code':'overloaded_error'}}");

    err_ok(__LINE__,
        "{'type':'error','error':{'type':'api_error','message':'Internal'}}",
        500,
        "{'error':{'message':'Internal','type':'server_error',"
        "'code':'api_error'}}");

    err_ok(__LINE__,
        "{'type':'error','error':{'type':'rate_limit_error',"
        "'message':'Slow down'}}", 429,
        "{'error':{'message':'Slow down','type':'rate_limit_error',"
        "'code':'rate_limit_exceeded'}}");

    err_ok(__LINE__,
        "{'type':'error','error':{'type':'authentication_error',"
        "'message':'invalid x-api-key'}}", 401,
        "{'error':{'message':'invalid x-api-key','type':"
        "'authentication_error','code':'invalid_api_key'}}");

    err_ok(__LINE__,
        "{'type':'error','error':{'type':'permission_error','message':'no'}}",
        403,
        "{'error':{'message':'no','type':'permission_error',"
        "'code':'permission_error'}}");

    err_ok(__LINE__,
        "{'type':'error','error':{'type':'not_found_error',"
        "'message':'model: x'}}", 404,
        "{'error':{'message':'model: x','type':'not_found_error',"
        "'code':'not_found_error'}}");

    err_ok(__LINE__,
        "{'type':'error','error':{'type':'request_too_large',"
        "'message':'big'}}", 413,
        "{'error':{'message':'big','type':'invalid_request_error',"
        "'code':'request_too_large'}}");

    err_ok(__LINE__,
        "{'type':'error','error':{'type':'invalid_request_error',"
        "'message':'max_tokens: 100000 > 64000'}}", 400,
        "{'error':{'message':'max_tokens: 100000 > 64000','type':"
        "'invalid_request_error','code':'invalid_request_error'}}");

    err_ok(__LINE__,
        "{'type':'error','error':{'type':'invalid_request_error',"
        "'message':'prompt is too long: 210000 tokens > 200000 maximum'}}",
        400,
        "{'error':{'message':'prompt is too long: 210000 tokens > 200000 "
        "maximum','type':'invalid_request_error',"
        "'code':'context_length_exceeded'}}");

    err_ok(__LINE__,
        "{'type':'error','error':{'type':'billing_error','message':'pay'}}",
        402,
        "{'error':{'message':'pay','type':'insufficient_quota',"
        "'code':'insufficient_quota'}}");

    err_ok(__LINE__,
        "{'type':'error','error':{'type':'weird_error','message':'?'}}", 418,
        "{'error':{'message':'?','type':'invalid_request_error',"
        "'code':'weird_error'}}");

    err_ok(__LINE__,
        "{'type':'error','error':{'type':'weird_error','message':'?'}}", 502,
        "{'error':{'message':'?','type':'server_error','code':'weird_error'}}");

    /* not Anthropic's: the status says */

    err_ok(__LINE__, "<html>Bad Gateway</html>", 502,
        "{'error':{'message':'the fallback provider failed with status 502',"
        "'type':'server_error','code':'upstream_error'}}");

    err_ok(__LINE__, "", 529,
        "{'error':{'message':'the fallback provider failed with status 529',"
        "'type':'server_error','code':'overloaded_error'}}");

    err_ok(__LINE__, "{}", 404,
        "{'error':{'message':'the fallback provider failed with status 404',"
        "'type':'not_found_error','code':'not_found_error'}}");

    err_ok(__LINE__, "[]", 409,
        "{'error':{'message':'the fallback provider failed with status 409',"
        "'type':'invalid_request_error','code':'upstream_error'}}");

    CHECK(ngx_http_ai_gateway_translate_status(529) == 503, "529");
    CHECK(ngx_http_ai_gateway_translate_status(429) == 429, "429");
    CHECK(ngx_http_ai_gateway_translate_status(500) == 500, "500");
    CHECK(ngx_http_ai_gateway_translate_status(200) == 200, "200");

    ngx_http_ai_gateway_translate_buf_init(&out, NULL, NULL);

    rc = ngx_http_ai_gateway_translate_error_json(&out,
                                      "bad \"body\"\n", 11,
                                      "invalid_request_error", "invalid_json");
    CHECK(rc == OK, "error_json");
    expect_json(__LINE__, "error_json", out.p, out.len,
        "{'error':{'message':'bad \\'body\\'\\n','type':"
        "'invalid_request_error','code':'invalid_json'}}");

    ngx_http_ai_gateway_translate_buf_free(&out);
}


/* streams */


typedef struct {
    const char  *name;
    const char  *data;        /* ' for " */
} event_t;


#define MAX_CHUNKS  64

typedef struct {
    char    *chunk[MAX_CHUNKS];     /* the data of each output event */
    size_t   n;
    int      well_formed;
    size_t   pings;
} chunks_t;


/* "data: X\n\n" events -> X each */

static void
chunks_split(chunks_t *c, const unsigned char *p, size_t len)
{
    size_t       n;
    const char  *s, *end, *e;

    memset(c, 0, sizeof(chunks_t));
    c->well_formed = 1;

    s = (const char *) p;
    end = s + len;

    while (s < end) {
        if (end - s >= 8 && memcmp(s, ": ping\n\n", 8) == 0) {
            /* an Anthropic ping's comment: counted, not an event */
            c->pings++;
            s += 8;
            continue;
        }

        if (end - s < 6 || memcmp(s, "data: ", 6) != 0) {
            c->well_formed = 0;
            return;
        }

        s += 6;
        e = s;

        while (e + 1 < end && !(e[0] == '\n' && e[1] == '\n')) {
            if (*e == '\n') {
                c->well_formed = 0;
                return;
            }

            e++;
        }

        if (e + 1 >= end || c->n == MAX_CHUNKS) {
            c->well_formed = 0;
            return;
        }

        n = e - s;
        c->chunk[c->n] = malloc(n + 1);
        memcpy(c->chunk[c->n], s, n);
        c->chunk[c->n][n] = '\0';
        c->n++;

        s = e + 2;
    }
}


static void
chunks_free(chunks_t *c)
{
    size_t  i;

    for (i = 0; i < c->n; i++) {
        free(c->chunk[i]);
    }

    c->n = 0;
}


/* the output, event by event: "[DONE]" literally, JSON structurally */

static void
expect_chunks(int line, const unsigned char *p, size_t len,
    const char **expect, size_t n)
{
    size_t    i;
    chunks_t  c;

    chunks_split(&c, p, len);

    CHECK(c.well_formed, "line %d: not data events: %.*s", line, (int) len,
          p);
    CHECK(c.n == n, "line %d: %zu events, expected %zu:\n%.*s", line, c.n, n,
          (int) len, p);

    for (i = 0; i < c.n && i < n; i++) {
        if (strcmp(expect[i], "[DONE]") == 0) {
            CHECK(strcmp(c.chunk[i], "[DONE]") == 0, "line %d: event %zu: %s",
                  line, i, c.chunk[i]);
            continue;
        }

        expect_json(line, "chunk", (unsigned char *) c.chunk[i],
                    strlen(c.chunk[i]), expect[i]);
    }

    chunks_free(&c);
}


static int
feed(tstream_t *st, const event_t *ev, tbuf_t *out)
{
    int    rc;
    char  *d;

    d = q(ev->data);

    rc = ngx_http_ai_gateway_translate_stream_feed(st,
                                                   (unsigned char *) ev->name,
                                                   strlen(ev->name),
                                                   (unsigned char *) d,
                                                   strlen(d), out);
    free(d);

    return rc;
}


static void
feed_all(int line, tstream_t *st, const event_t *ev, size_t n, tbuf_t *out)
{
    int     rc;
    size_t  i;

    for (i = 0; i < n; i++) {
        rc = feed(st, &ev[i], out);
        CHECK(rc == OK, "line %d: event %zu (%s): rc %d", line, i,
              ev[i].name, rc);
    }
}


#define MSG_START(id, in, cache_read)                                         \
    { "message_start", "{'type':'message_start','message':{'id':'" id "',"    \
      "'type':'message','role':'assistant','content':[],'model':"             \
      "'claude-sonnet-4-5-20250929','stop_reason':null,'stop_sequence':null," \
      "'usage':{'input_tokens':" in ",'cache_creation_input_tokens':0,"       \
      "'cache_read_input_tokens':" cache_read ",'output_tokens':1}}}" }

#define PING  { "ping", "{'type': 'ping'}" }

#define TEXT_DELTA(i, t)                                                      \
    { "content_block_delta", "{'type':'content_block_delta','index':" i ","  \
      "'delta':{'type':'text_delta','text':'" t "'}}" }

#define JSON_DELTA(i, t)                                                      \
    { "content_block_delta", "{'type':'content_block_delta','index':" i ","  \
      "'delta':{'type':'input_json_delta','partial_json':'" t "'}}" }

#define BLOCK_STOP(i)                                                         \
    { "content_block_stop", "{'type':'content_block_stop','index':" i "}" }

#define MSG_STOP  { "message_stop", "{'type':'message_stop'}" }


static const event_t  text_stream[] = {
    MSG_START("msg_01Xyz", "25", "100"),
    { "content_block_start", "{'type':'content_block_start','index':0,"
      "'content_block':{'type':'text','text':''}}" },
    PING,
    TEXT_DELTA("0", "Hello"),
    TEXT_DELTA("0", ", w\xc3\xb6rld \\'quoted\\'\\n\\u0001"),
    TEXT_DELTA("0", ""),
    PING,
    TEXT_DELTA("0", "!"),
    BLOCK_STOP("0"),
    { "message_delta", "{'type':'message_delta','delta':{'stop_reason':"
      "'end_turn','stop_sequence':null},'usage':{'output_tokens':15}}" },
    MSG_STOP
};

#define CHUNK(delta, finish)                                                  \
    "{'id':'chatcmpl-01Xyz','object':'chat.completion.chunk','created':"      \
    "1700000000,'model':'claude-sonnet-4-5-20250929','choices':[{'index':0,"  \
    "'delta':" delta ",'logprobs':null,'finish_reason':" finish "}]}"

static const char  *text_expect[] = {
    CHUNK("{'role':'assistant','content':''}", "null"),
    CHUNK("{'content':'Hello'}", "null"),
    CHUNK("{'content':', w\xc3\xb6rld \\'quoted\\'\\n\\u0001'}", "null"),
    CHUNK("{'content':'!'}", "null"),
    CHUNK("{}", "'stop'"),
    "{'id':'chatcmpl-01Xyz','object':'chat.completion.chunk','created':"
    "1700000000,'model':'claude-sonnet-4-5-20250929','choices':[],"
    "'usage':{'prompt_tokens':125,'completion_tokens':15,'total_tokens':140,"
    "'prompt_tokens_details':{'cached_tokens':100}}}",
    "[DONE]"
};


#define NELTS(a)  (sizeof(a) / sizeof(a[0]))


static void
test_stream_text(void)
{
    tbuf_t     out;
    tusage_t   u;
    tstream_t  st;

    /* with include_usage */

    ngx_http_ai_gateway_translate_buf_init(&out, NULL, NULL);
    ngx_http_ai_gateway_translate_stream_init(&st, CREATED, 1, NULL, 0);

    feed_all(__LINE__, &st, text_stream, NELTS(text_stream), &out);
    expect_chunks(__LINE__, out.p, out.len, text_expect, NELTS(text_expect));

    /* each ping is a comment where it came: the client sees life */
    {
        chunks_t  c;

        chunks_split(&c, out.p, out.len);
        CHECK(c.pings == 2, "%zu pings, expected 2", c.pings);
        chunks_free(&c);
    }

    CHECK(st.done, "done");

    ngx_http_ai_gateway_translate_stream_usage(&st, &u);
    CHECK(u.found && u.input_tokens == 125 && u.output_tokens == 15
          && u.cached_tokens == 100, "usage %llu %llu %llu",
          (unsigned long long) u.input_tokens,
          (unsigned long long) u.output_tokens,
          (unsigned long long) u.cached_tokens);

    CHECK(out.p != NULL && strstr((char *) out.p, "w\xc3\xb6rld") != NULL,
          "UTF-8 as it is");

    /* events after [DONE]: nothing */

    out.len = 0;
    feed_all(__LINE__, &st, text_stream, NELTS(text_stream), &out);
    CHECK(out.len == 0, "after [DONE]: %zu bytes", out.len);

    ngx_http_ai_gateway_translate_buf_free(&out);

    /* without include_usage: no usage chunk */

    ngx_http_ai_gateway_translate_buf_init(&out, NULL, NULL);
    ngx_http_ai_gateway_translate_stream_init(&st, CREATED, 0, NULL, 0);

    feed_all(__LINE__, &st, text_stream, NELTS(text_stream), &out);

    {
        const char  *expect[] = {
            text_expect[0], text_expect[1], text_expect[2], text_expect[3],
            text_expect[4], "[DONE]"
        };

        expect_chunks(__LINE__, out.p, out.len, expect, NELTS(expect));
    }

    ngx_http_ai_gateway_translate_stream_usage(&st, &u);
    CHECK(u.found && u.input_tokens == 125 && u.output_tokens == 15,
          "usage without include_usage");

    ngx_http_ai_gateway_translate_buf_free(&out);
}


static const event_t  tool_stream[] = {
    MSG_START("msg_T", "400", "0"),
    { "content_block_start", "{'type':'content_block_start','index':0,"
      "'content_block':{'type':'thinking','thinking':''}}" },
    { "content_block_delta", "{'type':'content_block_delta','index':0,"
      "'delta':{'type':'thinking_delta','thinking':'Two cities.'}}" },
    { "content_block_delta", "{'type':'content_block_delta','index':0,"
      "'delta':{'type':'signature_delta','signature':'EqQB'}}" },
    BLOCK_STOP("0"),
    { "content_block_start", "{'type':'content_block_start','index':1,"
      "'content_block':{'type':'text','text':''}}" },
    TEXT_DELTA("1", "Let me check."),
    BLOCK_STOP("1"),
    { "content_block_start", "{'type':'content_block_start','index':2,"
      "'content_block':{'type':'tool_use','id':'toolu_01A','name':"
      "'get_weather','input':{}}}" },
    JSON_DELTA("2", ""),
    JSON_DELTA("2", "{\\'city\\':"),
    JSON_DELTA("2", " \\'Par"),
    PING,
    JSON_DELTA("2", "is\\', \\'days\\': 3}"),
    BLOCK_STOP("2"),
    { "content_block_start", "{'type':'content_block_start','index':3,"
      "'content_block':{'type':'tool_use','id':'toolu_01B','name':"
      "'get_time','input':{}}}" },
    JSON_DELTA("3", "{\\'tz\\':\\'Europe/"),
    JSON_DELTA("3", "Rome\\'}"),
    BLOCK_STOP("3"),
    { "message_delta", "{'type':'message_delta','delta':{'stop_reason':"
      "'tool_use','stop_sequence':null},'usage':{'output_tokens':80}}" },
    MSG_STOP
};


#define TCHUNK(delta, finish)                                                 \
    "{'id':'chatcmpl-T','object':'chat.completion.chunk','created':"          \
    "1700000000,'model':'claude-sonnet-4-5-20250929','choices':[{'index':0,"  \
    "'delta':" delta ",'logprobs':null,'finish_reason':" finish "}]}"

static const char  *tool_expect[] = {
    TCHUNK("{'role':'assistant','content':''}", "null"),
    TCHUNK("{'content':'Let me check.'}", "null"),
    TCHUNK("{'tool_calls':[{'index':0,'id':'toolu_01A','type':'function',"
           "'function':{'name':'get_weather','arguments':''}}]}", "null"),
    TCHUNK("{'tool_calls':[{'index':0,'function':{'arguments':"
           "'{\\'city\\':'}}]}", "null"),
    TCHUNK("{'tool_calls':[{'index':0,'function':{'arguments':"
           "' \\'Par'}}]}", "null"),
    TCHUNK("{'tool_calls':[{'index':0,'function':{'arguments':"
           "'is\\', \\'days\\': 3}'}}]}", "null"),
    TCHUNK("{'tool_calls':[{'index':1,'id':'toolu_01B','type':'function',"
           "'function':{'name':'get_time','arguments':''}}]}", "null"),
    TCHUNK("{'tool_calls':[{'index':1,'function':{'arguments':"
           "'{\\'tz\\':\\'Europe/'}}]}", "null"),
    TCHUNK("{'tool_calls':[{'index':1,'function':{'arguments':"
           "'Rome\\'}'}}]}", "null"),
    TCHUNK("{}", "'tool_calls'"),
    "[DONE]"
};


/* what an OpenAI client assembles: the arguments of each tool call */

static void
check_tool_arguments(const unsigned char *p, size_t len)
{
    size_t        i, k, j;
    json_t       *c, *calls, *call, *fn, *v, *got, *want;
    buf_t         args[4];
    chunks_t      ch;
    json_error_t  err;

    static const char  *expect[] = {
        "{'city':'Paris','days':3}",
        "{'tz':'Europe/Rome'}"
    };

    memset(args, 0, sizeof(args));
    chunks_split(&ch, p, len);

    for (i = 0; i < ch.n; i++) {
        c = json_loads(ch.chunk[i], 0, &err);

        if (c == NULL) {
            continue;
        }

        CHECK(strcmp(json_string_value(json_object_get(c, "id")),
                     "chatcmpl-T") == 0
              && json_integer_value(json_object_get(c, "created")) == CREATED,
              "same id and created in every chunk");

        calls = json_object_get(json_object_get(json_array_get(
                    json_object_get(c, "choices"), 0), "delta"),
                    "tool_calls");

        json_array_foreach(calls, k, call) {
            j = json_integer_value(json_object_get(call, "index"));
            fn = json_object_get(call, "function");
            v = json_object_get(fn, "arguments");

            CHECK(j < 2, "tool call index %zu", j);

            if (j < 2 && json_is_string(v)) {
                buf_add(&args[j], json_string_value(v),
                        json_string_length(v));
            }
        }

        json_decref(c);
    }

    for (j = 0; j < 2; j++) {
        want = load_q(expect[j], __LINE__);
        got = args[j].p ? json_loads(args[j].p, 0, &err) : NULL;

        CHECK(got != NULL && json_equal(got, want),
              "tool call %zu arguments: %s", j, args[j].p ? args[j].p : "");

        json_decref(got);
        json_decref(want);
        buf_free(&args[j]);
    }

    chunks_free(&ch);
}


static void
test_stream_tools(void)
{
    tbuf_t     out;
    tusage_t   u;
    tstream_t  st;

    ngx_http_ai_gateway_translate_buf_init(&out, NULL, NULL);
    ngx_http_ai_gateway_translate_stream_init(&st, CREATED, 0, NULL, 0);

    feed_all(__LINE__, &st, tool_stream, NELTS(tool_stream), &out);
    expect_chunks(__LINE__, out.p, out.len, tool_expect, NELTS(tool_expect));
    check_tool_arguments(out.p, out.len);

    ngx_http_ai_gateway_translate_stream_usage(&st, &u);
    CHECK(u.found && u.input_tokens == 400 && u.output_tokens == 80
          && u.cached_tokens == 0, "tool stream usage");

    ngx_http_ai_gateway_translate_buf_free(&out);
}


/*
 * A tool without input streams only an empty piece: its arguments are
 * "{}" when the block ends, as in a JSON answer, where "" broke clients
 * that parse them (found in review); one with input gets no extra piece
 */

static const event_t  noinput_stream[] = {
    MSG_START("msg_N", "10", "0"),
    { "content_block_start", "{'type':'content_block_start','index':0,"
      "'content_block':{'type':'tool_use','id':'toolu_N','name':'now',"
      "'input':{}}}" },
    JSON_DELTA("0", ""),
    BLOCK_STOP("0"),
    { "content_block_start", "{'type':'content_block_start','index':1,"
      "'content_block':{'type':'tool_use','id':'toolu_M','name':'add',"
      "'input':{}}}" },
    JSON_DELTA("1", ""),
    JSON_DELTA("1", "{\\\"a\\\": 1}"),
    BLOCK_STOP("1"),
    { "message_delta", "{'type':'message_delta','delta':{'stop_reason':"
      "'tool_use','stop_sequence':null},'usage':{'output_tokens':9}}" },
    MSG_STOP
};


static void
test_stream_tool_no_input(void)
{
    size_t        i, k, j, pieces[2];
    json_t       *c, *calls, *call, *v, *got;
    buf_t         args[2];
    tbuf_t        out;
    chunks_t      ch;
    tstream_t     st;
    json_error_t  err;

    static const char  *expect[] = { "{}", "{'a': 1}" };

    ngx_http_ai_gateway_translate_buf_init(&out, NULL, NULL);
    ngx_http_ai_gateway_translate_stream_init(&st, CREATED, 0, NULL, 0);

    feed_all(__LINE__, &st, noinput_stream, NELTS(noinput_stream), &out);

    memset(args, 0, sizeof(args));
    memset(pieces, 0, sizeof(pieces));
    chunks_split(&ch, out.p, out.len);

    for (i = 0; i < ch.n; i++) {
        c = json_loads(ch.chunk[i], 0, &err);

        if (c == NULL) {
            continue;
        }

        calls = json_object_get(json_object_get(json_array_get(
                    json_object_get(c, "choices"), 0), "delta"),
                    "tool_calls");

        json_array_foreach(calls, k, call) {
            j = json_integer_value(json_object_get(call, "index"));
            v = json_object_get(json_object_get(call, "function"),
                                "arguments");

            if (j < 2 && json_is_string(v) && json_string_length(v)) {
                buf_add(&args[j], json_string_value(v),
                        json_string_length(v));
                pieces[j]++;
            }
        }

        json_decref(c);
    }

    for (j = 0; j < 2; j++) {
        v = load_q(expect[j], __LINE__);
        got = args[j].p ? json_loads(args[j].p, 0, &err) : NULL;

        CHECK(got != NULL && json_equal(got, v) && pieces[j] == 1,
              "tool without input %zu: arguments \"%s\" in %zu pieces", j,
              args[j].p ? args[j].p : "", pieces[j]);

        json_decref(got);
        json_decref(v);
        buf_free(&args[j]);
    }

    chunks_free(&ch);
    ngx_http_ai_gateway_translate_buf_free(&out);
}


/* events without names: the data's type says; unknown events ignored */

static void
test_stream_unnamed(void)
{
    size_t     i;
    event_t    ev[NELTS(text_stream) + 2];
    tbuf_t     a, b;
    tstream_t  st;

    for (i = 0; i < NELTS(text_stream); i++) {
        ev[i].name = "";
        ev[i].data = text_stream[i].data;
    }

    ev[i].name = "future_event";
    ev[i].data = "{'type':'future_event','x':1}";
    i++;
    ev[i].name = "";
    ev[i].data = "{'no_type':1}";

    ngx_http_ai_gateway_translate_buf_init(&a, NULL, NULL);
    ngx_http_ai_gateway_translate_buf_init(&b, NULL, NULL);

    ngx_http_ai_gateway_translate_stream_init(&st, CREATED, 1, NULL, 0);
    feed_all(__LINE__, &st, ev + NELTS(text_stream), 2, &a);
    CHECK(a.len == 0, "unknown events: nothing");
    feed_all(__LINE__, &st, ev, NELTS(text_stream), &a);

    ngx_http_ai_gateway_translate_stream_init(&st, CREATED, 1, NULL, 0);
    feed_all(__LINE__, &st, text_stream, NELTS(text_stream), &b);

    CHECK(a.len == b.len && memcmp(a.p, b.p, a.len) == 0,
          "unnamed events as named ones");

    ngx_http_ai_gateway_translate_buf_free(&a);
    ngx_http_ai_gateway_translate_buf_free(&b);
}


static void
test_stream_error(void)
{
    int        rc;
    tbuf_t     out;
    tstream_t  st;

    static const event_t  ev[] = {
        MSG_START("msg_E", "5", "0"),
        { "content_block_start", "{'type':'content_block_start','index':0,"
          "'content_block':{'type':'text','text':''}}" },
        TEXT_DELTA("0", "Par"),
        { "error", "{'type':'error','error':{'type':'overloaded_error',"
          "'message':'Overloaded'}}" },
        TEXT_DELTA("0", "tial"),
        MSG_STOP
    };

    static const char  *expect[] = {
        "{'id':'chatcmpl-E','object':'chat.completion.chunk','created':"
        "1700000000,'model':'claude-sonnet-4-5-20250929','choices':["
        "{'index':0,'delta':{'role':'assistant','content':''},"
        "'logprobs':null,'finish_reason':null}]}",
        "{'id':'chatcmpl-E','object':'chat.completion.chunk','created':"
        "1700000000,'model':'claude-sonnet-4-5-20250929','choices':["
        "{'index':0,'delta':{'content':'Par'},"
        "'logprobs':null,'finish_reason':null}]}",
        "{'error':{'message':'Overloaded','type':'server_error',"
        "'code':'overloaded_error'}}",
        "[DONE]"
    };

    ngx_http_ai_gateway_translate_buf_init(&out, NULL, NULL);
    ngx_http_ai_gateway_translate_stream_init(&st, CREATED, 1,
                                              (unsigned char *) "x", 1);

    feed_all(__LINE__, &st, ev, NELTS(ev), &out);
    expect_chunks(__LINE__, out.p, out.len, expect, NELTS(expect));
    CHECK(st.done, "done after an error");

    rc = ngx_http_ai_gateway_translate_stream_fail(&st, "x", 1, &out);
    CHECK(rc == OK, "fail after done");
    expect_chunks(__LINE__, out.p, out.len, expect, NELTS(expect));

    ngx_http_ai_gateway_translate_buf_free(&out);

    /* an error before anything else: the model given at init */

    ngx_http_ai_gateway_translate_buf_init(&out, NULL, NULL);
    ngx_http_ai_gateway_translate_stream_init(&st, CREATED, 1,
                                              (unsigned char *) "x", 1);

    feed_all(__LINE__, &st, ev + 3, 1, &out);
    expect_chunks(__LINE__, out.p, out.len, expect + 2, 2);

    ngx_http_ai_gateway_translate_buf_free(&out);
}


static void
test_stream_malformed(void)
{
    int          rc;
    size_t       i, len;
    tbuf_t       out;
    tstream_t    st;

    static const event_t  bad[] = {
        { "content_block_delta", "{'type':'content_block_delta','index':0,"
          "'delta':{'type':'text_delta','text':'Hel" },
        { "content_block_delta", "{'type':'content_block_delta','index':0,"
          "'delta':{'type':'text_delta'}}" },
        { "content_block_delta", "{'type':'content_block_delta','index':0}" },
        { "content_block_delta", "{'type':'content_block_delta','index':0,"
          "'delta':{'type':'input_json_delta','partial_json':5}}" },
        { "content_block_start", "{'type':'content_block_start','index':1,"
          "'content_block':{'type':'tool_use','name':'f'}}" },
        { "content_block_start", "{'index':1}" },
        { "message_start", "{'type':'message_start'}" },
        { "message_start", "null" },
        { "message_delta", "[]" },
        { "message_delta", "{'type':'message_delta'}" },
        { "error", "not json" },
        { "", "{'type':'content_block_delta'" },
        { "content_block_delta", "" }
    };

    static const event_t  start[] = {
        MSG_START("msg_M", "5", "0"),
        TEXT_DELTA("0", "ok")
    };

    static const char  *expect[] = {
        "{'id':'chatcmpl-M','object':'chat.completion.chunk','created':"
        "1700000000,'model':'claude-sonnet-4-5-20250929','choices':["
        "{'index':0,'delta':{'role':'assistant','content':''},"
        "'logprobs':null,'finish_reason':null}]}",
        "{'id':'chatcmpl-M','object':'chat.completion.chunk','created':"
        "1700000000,'model':'claude-sonnet-4-5-20250929','choices':["
        "{'index':0,'delta':{'content':'ok'},"
        "'logprobs':null,'finish_reason':null}]}",
        "{'error':{'message':'malformed event','type':'server_error',"
        "'code':'upstream_error'}}",
        "[DONE]"
    };

    ngx_http_ai_gateway_translate_buf_init(&out, NULL, NULL);
    ngx_http_ai_gateway_translate_stream_init(&st, CREATED, 1, NULL, 0);

    feed_all(__LINE__, &st, start, NELTS(start), &out);
    len = out.len;

    for (i = 0; i < NELTS(bad); i++) {
        rc = feed(&st, &bad[i], &out);
        CHECK(rc == INVALID, "bad event %zu: rc %d", i, rc);
        CHECK(out.len == len, "bad event %zu: output written", i);
        CHECK(!st.done, "bad event %zu: done", i);
    }

    /* the stream can go on; the caller ends it */

    rc = ngx_http_ai_gateway_translate_stream_fail(&st, "malformed event",
                                                   15, &out);
    CHECK(rc == OK && st.done, "fail");
    expect_chunks(__LINE__, out.p, out.len, expect, NELTS(expect));

    len = out.len;
    rc = feed(&st, &start[1], &out);
    CHECK(rc == OK && out.len == len, "nothing after fail");

    rc = ngx_http_ai_gateway_translate_stream_fail(&st, "again", 5, &out);
    CHECK(rc == OK && out.len == len, "fail once");

    ngx_http_ai_gateway_translate_buf_free(&out);
}


/* mutated events: no crash, well-formed output whatever comes in */

static void
test_stream_mutations(void)
{
    int        rc;
    char      *d;
    size_t     i, k, n, len;
    tbuf_t     out;
    chunks_t   c;
    tstream_t  st;

    static const char  alphabet[] = "{}[]\":,\\ 0a-";

    ngx_http_ai_gateway_translate_buf_init(&out, NULL, NULL);

    for (k = 0; k < 300; k++) {
        ngx_http_ai_gateway_translate_stream_init(&st, CREATED, 1, NULL, 0);
        out.len = 0;

        for (i = 0; i < NELTS(tool_stream); i++) {
            d = q(tool_stream[i].data);
            n = strlen(d);

            if (rng() % 3 == 0 && n) {
                d[rng() % n] = alphabet[rng() % (sizeof(alphabet) - 1)];
            }

            if (rng() % 7 == 0) {
                n = rng() % (n + 1);
            }

            len = out.len;

            rc = ngx_http_ai_gateway_translate_stream_feed(&st,
                           (unsigned char *) tool_stream[i].name,
                           strlen(tool_stream[i].name),
                           (unsigned char *) d, n, &out);

            CHECK(rc == OK || (rc == INVALID && out.len == len),
                  "mutation %zu.%zu: rc %d", k, i, rc);

            free(d);
        }

        chunks_split(&c, out.p, out.len);
        CHECK(c.well_formed, "mutation %zu: output not events", k);

        for (i = 0; i < c.n; i++) {
            json_t       *j;
            json_error_t  err;

            if (strcmp(c.chunk[i], "[DONE]") == 0) {
                continue;
            }

            j = json_loads(c.chunk[i], JSON_ALLOW_NUL, &err);
            CHECK(j != NULL, "mutation %zu: chunk not JSON: %s", k,
                  c.chunk[i]);
            json_decref(j);
        }

        chunks_free(&c);
    }

    ngx_http_ai_gateway_translate_buf_free(&out);
}


/*
 * The fast path for compact deltas against the general one: the same
 * event with a blank after its first '{' goes the general way; both must
 * agree on the result, and on the output once parsed.
 */

static int
fast_slow_agree(const char *value, int json, size_t *count)
{
    int        rc[2], ok;
    char      *ev;
    size_t     i, n, len;
    tbuf_t     out[2];
    chunks_t   c[2];
    tstream_t  st[2];
    json_t    *a, *b;

    static const event_t  start[] = {
        MSG_START("msg_F", "5", "0"),
        { "content_block_start", "{'type':'content_block_start','index':1,"
          "'content_block':{'type':'tool_use','id':'t','name':'f',"
          "'input':{}}}" }
    };

    len = strlen(value);
    ev = malloc(len + 200);
    ok = 1;

    for (i = 0; i < 2; i++) {
        n = sprintf(ev, "{%s\"type\":\"content_block_delta\",\"index\":1,"
                    "\"delta\":{\"type\":\"%s\",\"%s\":\"",
                    i ? " " : "", json ? "input_json_delta" : "text_delta",
                    json ? "partial_json" : "text");
        memcpy(ev + n, value, len);
        strcpy(ev + n + len, "\"}}");

        ngx_http_ai_gateway_translate_buf_init(&out[i], NULL, NULL);
        ngx_http_ai_gateway_translate_stream_init(&st[i], CREATED, 0, NULL,
                                                  0);
        feed_all(__LINE__, &st[i], start, NELTS(start), &out[i]);

        rc[i] = ngx_http_ai_gateway_translate_stream_feed(&st[i],
                    (unsigned char *) "content_block_delta", 19,
                    (unsigned char *) ev, strlen(ev), &out[i]);

        chunks_split(&c[i], out[i].p, out[i].len);
    }

    if (rc[0] != rc[1] || c[0].n != c[1].n || !c[0].well_formed
        || !c[1].well_formed)
    {
        ok = 0;
    }

    for (i = 0; ok && i < c[0].n; i++) {
        a = json_loads(c[0].chunk[i], JSON_ALLOW_NUL, NULL);
        b = json_loads(c[1].chunk[i], JSON_ALLOW_NUL, NULL);

        if (a == NULL || b == NULL || !json_equal(a, b)) {
            ok = 0;
        }

        json_decref(a);
        json_decref(b);
    }

    if (!ok) {
        fprintf(stderr, "fast %d/%zu: %.*s\nslow %d/%zu: %.*s\n",
                rc[0], c[0].n, (int) out[0].len,
                out[0].p ? (char *) out[0].p : "",
                rc[1], c[1].n, (int) out[1].len,
                out[1].p ? (char *) out[1].p : "");
    }

    if (count != NULL && rc[0] == OK) {
        (*count)++;
    }

    for (i = 0; i < 2; i++) {
        chunks_free(&c[i]);
        ngx_http_ai_gateway_translate_buf_free(&out[i]);
    }

    free(ev);

    return ok;
}


static void
test_stream_fast(void)
{
    char    v[64];
    size_t  i, k, n, accepted;

    static const char  *values[] = {
        "Hello",
        "",
        "caf\\u00e9 \\u00E9",
        "\\n\\t\\r\\b\\f\\\"\\\\\\/",
        "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xf0\x9f\x98\x80 \xc3\xa9",
        "\\ud83d\\ude00",
        "\\ud83d",
        "\\u0000 \\u001f",
        "\\{\\'city\\': 1}",
        "{\\\"city\\\": \\\"Paris\\\"}",
        "raw\ttab",
        "raw\x01",
        "bad \\x escape",
        "short \\u12",
        "hex \\u12g4",
        "hex \\u\x11\x12\x13\x14",
        "\xc3",
        "\xc3\x28",
        "\xe0\x80\x80",
        "\xed\xa0\x80",
        "\xf4\x90\x80\x80",
        "\xf5\x80\x80\x80",
        "\xc0\xaf",
        "\x80",
        "ends with \\",
        "unterminated\"x"
    };

    static const char  alphabet[] =
        "a\\\"/bfnrtu0123456789abcdefABCDEFdD8\x01\x1f\x7f\x80\xbf\xc2\xc3"
        "\xe0\xed\xef\xf0\xf4\xf5\xff }{";

    for (i = 0; i < NELTS(values); i++) {
        CHECK(fast_slow_agree(values[i], 0, NULL), "text value %zu: %s", i,
              values[i]);
        CHECK(fast_slow_agree(values[i], 1, NULL), "json value %zu: %s", i,
              values[i]);
    }

    /* the fast path passes the string on as it is: escapes stay */

    {
        tbuf_t     out;
        tstream_t  st;

        static const event_t  ev = TEXT_DELTA("0", "caf\\u00e9\\/");

        ngx_http_ai_gateway_translate_buf_init(&out, NULL, NULL);
        ngx_http_ai_gateway_translate_stream_init(&st, CREATED, 0, NULL, 0);

        CHECK(feed(&st, &ev, &out) == OK && out.p != NULL
              && strstr((char *) out.p, "\"content\":\"caf\\u00e9\\/\"}")
                 != NULL, "fast path taken: %s", out.p ? (char *) out.p : "");

        ngx_http_ai_gateway_translate_buf_free(&out);
    }

    /* random strings of tricky bytes */

    accepted = 0;

    for (k = 0; k < 3000; k++) {
        n = rng() % 12;

        for (i = 0; i < n; i++) {
            v[i] = alphabet[rng() % (sizeof(alphabet) - 1)];
        }

        v[n] = '\0';

        CHECK(fast_slow_agree(v, k & 1, &accepted), "random value %zu", k);
    }

    CHECK(accepted > 300, "random values taken: %zu", accepted);
}


/* the stream as SSE text through the SSE parser */

typedef struct {
    tstream_t  *st;
    tbuf_t     *out;
    buf_t       data;
    int         rc;
} sse_ctx_t;


static int
sse_on_data(void *data, const unsigned char *p, size_t len)
{
    sse_ctx_t  *c = data;

    buf_add(&c->data, p, len);

    return 0;
}


static int
sse_on_event(void *data, const unsigned char *name, size_t name_len)
{
    int         rc;
    sse_ctx_t  *c = data;

    rc = ngx_http_ai_gateway_translate_stream_feed(c->st, name, name_len,
                                                   (unsigned char *)
                                                   (c->data.p ? c->data.p : ""),
                                                   c->data.len, c->out);
    c->data.len = 0;

    if (rc != OK) {
        c->rc = rc;
    }

    return 0;
}


/* feeds text in pieces ending at cuts[0..n), then the rest */

static void
sse_run(const char *text, size_t len, const size_t *cuts, size_t n,
    tbuf_t *out)
{
    size_t                     i, at;
    sse_ctx_t                  c;
    tstream_t                  st;
    ngx_http_ai_gateway_sse_t  sse;

    memset(&c, 0, sizeof(sse_ctx_t));
    c.st = &st;
    c.out = out;

    ngx_http_ai_gateway_translate_stream_init(&st, CREATED, 1, NULL, 0);
    ngx_http_ai_gateway_sse_init(&sse, sse_on_data, sse_on_event, &c);

    at = 0;

    for (i = 0; i <= n; i++) {
        size_t  to = (i < n) ? cuts[i] : len;

        (void) ngx_http_ai_gateway_sse_feed(&sse,
                                            (unsigned char *) text + at,
                                            to - at);
        at = to;
    }

    CHECK(c.rc == OK, "sse run: rc %d", c.rc);

    buf_free(&c.data);
}


static void
test_stream_sse(void)
{
    char    *d;
    size_t   i, cut[2];
    buf_t    text;
    tbuf_t   whole, out;

    memset(&text, 0, sizeof(buf_t));

    /* the stream as Anthropic writes it, one event a block */

    for (i = 0; i < NELTS(text_stream); i++) {
        d = q(text_stream[i].data);
        buf_add(&text, "event: ", 7);
        buf_add(&text, text_stream[i].name, strlen(text_stream[i].name));
        buf_add(&text, "\ndata: ", 7);
        buf_add(&text, d, strlen(d));
        buf_add(&text, "\n\n", 2);
        free(d);
    }

    ngx_http_ai_gateway_translate_buf_init(&whole, NULL, NULL);
    sse_run(text.p, text.len, NULL, 0, &whole);
    expect_chunks(__LINE__, whole.p, whole.len, text_expect,
                  NELTS(text_expect));

    ngx_http_ai_gateway_translate_buf_init(&out, NULL, NULL);

    for (i = 0; i <= text.len; i++) {
        cut[0] = i;
        out.len = 0;
        sse_run(text.p, text.len, cut, 1, &out);

        CHECK(out.len == whole.len && memcmp(out.p, whole.p, out.len) == 0,
              "split at %zu: other output", i);
    }

    /* byte by byte, and in random pieces */

    for (i = 0; i < 20; i++) {
        size_t   k, n, at, cuts[64];

        n = 0;
        at = 0;

        if (i == 0) {
            for (k = 1; k < text.len && n < 64; k += text.len / 64 + 1) {
                cuts[n++] = k;
            }

        } else {
            while (n < 64) {
                at += rng() % 40;
                if (at >= text.len) {
                    break;
                }

                cuts[n++] = at;
            }
        }

        out.len = 0;
        sse_run(text.p, text.len, cuts, n, &out);

        CHECK(out.len == whole.len && memcmp(out.p, whole.p, out.len) == 0,
              "pieces %zu: other output", i);
    }

    ngx_http_ai_gateway_translate_buf_free(&out);
    ngx_http_ai_gateway_translate_buf_free(&whole);
    buf_free(&text);
}


/* buffers: a pool that never frees, and one that fails */

typedef struct {
    void    *block[256];
    size_t   n;
    long     allowed;          /* growths left; -1: no limit */
    size_t   calls;
} pool_t;


static void *
pool_resize(void *ctx, void *old, size_t old_size, size_t new_size)
{
    void    *p;
    pool_t  *pool = ctx;

    pool->calls++;

    if (new_size == 0) {
        return NULL;
    }

    if (pool->allowed == 0 || pool->n == 256) {
        return NULL;
    }

    if (pool->allowed > 0) {
        pool->allowed--;
    }

    p = malloc(new_size);
    if (p == NULL) {
        return NULL;
    }

    /* poison: only the first old_size bytes count */
    memset(p, 0xa5, new_size);

    if (old_size) {
        memcpy(p, old, old_size);
    }

    pool->block[pool->n++] = p;

    return p;
}


static void
pool_free(pool_t *pool)
{
    size_t  i;

    for (i = 0; i < pool->n; i++) {
        free(pool->block[i]);
    }

    pool->n = 0;
}


static const char  big_request[] =
    "{'model':'gpt-4o'," TOOLS ",'messages':["
    "{'role':'system','content':'You are a helpful assistant with a long "
    "system prompt that goes on and on so that the buffer has to grow.'},"
    "{'role':'user','content':[{'type':'text','text':'What is this?'},"
    "{'type':'image_url','image_url':{'url':'data:image/png;base64,"
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA"
    "60e6kgAAAABJRU5ErkJggg=='}}]},"
    "{'role':'assistant','content':'Let me look.','tool_calls':[{'id':'c1',"
    "'type':'function','function':{'name':'get_weather','arguments':"
    "'{\\'city\\':\\'Paris\\',\\'days\\':2}'}}]},"
    "{'role':'tool','tool_call_id':'c1','content':'sunny, 18C, light wind "
    "from the west, no rain expected for the next two days'},"
    "{'role':'user','content':'Thanks!'}],"
    "'temperature':0.3,'stop':['END','STOP'],'user':'u1','stream':true}";


static void
test_buffers(void)
{
    int        rc;
    char      *b;
    long       k;
    size_t     i, len;
    tbuf_t     ref, out;
    treq_t     req;
    pool_t     pool;
    tstream_t  st;

    b = q(big_request);

    ngx_http_ai_gateway_translate_buf_init(&ref, NULL, NULL);
    rc = ngx_http_ai_gateway_translate_request((unsigned char *) b,
                                               strlen(b), &conf_plain, &req,
                                               &ref);
    CHECK(rc == OK, "big request: %d %s", rc, req.error);
    CHECK(ref.len > 256, "big request: %zu bytes", ref.len);

    /* the pool: the same bytes */

    memset(&pool, 0, sizeof(pool_t));
    pool.allowed = -1;

    ngx_http_ai_gateway_translate_buf_init(&out, pool_resize, &pool);
    rc = ngx_http_ai_gateway_translate_request((unsigned char *) b,
                                               strlen(b), &conf_plain, &req,
                                               &out);
    CHECK(rc == OK && out.len == ref.len
          && memcmp(out.p, ref.p, ref.len) == 0 && out.p[out.len] == '\0',
          "pool: other output");
    CHECK(pool.n > 1, "pool: grew %zu times", pool.n);

    ngx_http_ai_gateway_translate_buf_free(&out);
    pool_free(&pool);

    /* growth fails at each step: NOMEM and nothing written, or all */

    for (k = 0; k < 8; k++) {
        memset(&pool, 0, sizeof(pool_t));
        pool.allowed = k;

        ngx_http_ai_gateway_translate_buf_init(&out, pool_resize, &pool);
        rc = ngx_http_ai_gateway_translate_request((unsigned char *) b,
                                                   strlen(b), &conf_plain,
                                                   &req, &out);

        CHECK((rc == NOMEM && out.len == 0)
              || (rc == OK && out.len == ref.len
                  && memcmp(out.p, ref.p, ref.len) == 0),
              "fail after %ld: rc %d len %zu", k, rc, out.len);
        CHECK(k > 2 || rc == NOMEM, "fail after %ld: rc %d", k, rc);

        pool_free(&pool);
    }

    /* the stream: an event that cannot be written leaves nothing */

    memset(&pool, 0, sizeof(pool_t));
    pool.allowed = 1;

    ngx_http_ai_gateway_translate_buf_init(&out, pool_resize, &pool);
    ngx_http_ai_gateway_translate_stream_init(&st, CREATED, 1, NULL, 0);

    rc = OK;
    len = 0;

    for (i = 0; i < 200; i++) {
        len = out.len;
        rc = feed(&st, &text_stream[3], &out);

        if (rc != OK) {
            break;
        }
    }

    CHECK(rc == NOMEM && out.len == len && out.p[len] == '\0',
          "stream NOMEM: rc %d, %zu/%zu", rc, out.len, len);

    /* the answer and the error, on a full pool */

    len = out.len;
    rc = ngx_http_ai_gateway_translate_error((unsigned char *) "", 0, 500,
                                             &out);
    CHECK(rc == NOMEM || (rc == OK && out.len > len), "error NOMEM");

    pool_free(&pool);

    /* libc buffers freed on failure too (valgrind) */

    ngx_http_ai_gateway_translate_buf_free(&ref);
    free(b);
}


/*
 * The one-pass reader of answers against the tree: wherever it takes an
 * answer, the same bytes and usage as the tree's; and it takes the usual
 * ones.  Answers of every shape, then thousands of mutations of them (a
 * byte changed, inserted or cut, the end cut off).
 */

static const char  *fast_answers[] = {
    /* the bench's */
    "{'id':'msg_01Bench000000000000000001','type':'message','role':'assistant','model':'claude-sonnet-4-5-20250929','content':[{'type':'text','text':'Here is a short summary: revenue grew 12 percent.'}],'stop_reason':'end_turn','stop_sequence':null,'usage':{'input_tokens':231,'cache_creation_input_tokens':0,'cache_read_input_tokens':0,'output_tokens':48}}",
    /* today's API: nested usage objects, a service tier, a container */
    "{'model':'claude-opus-4','id':'msg_x','type':'message','role':'assistant','content':[{'type':'text','text':'caf\xc3\xa9 \xf0\x9f\x98\x80'},{'type':'text','text':'','citations':null}],'stop_reason':'max_tokens','stop_sequence':null,'usage':{'input_tokens':10,'cache_creation_input_tokens':5,'cache_read_input_tokens':7,'cache_creation':{'ephemeral_5m_input_tokens':5,'ephemeral_1h_input_tokens':0},'output_tokens':3,'service_tier':'standard'},'container':null}",
    " {\n  'id' : 'abc' ,\n  'content' : [ ] ,\n  'stop_reason' : null\n} \n",
    "{'id':'msg_','content':[{'text':'a','type':'text'}],'stop_reason':'stop_sequence','stop_sequence':'END','usage':{}}",
    "{'content':[{'type':'text','text':'x'}],'stop_reason':'refusal','usage':{'output_tokens':0}}",
    "{'content':[{'type':'text','text':'x'}],'stop_reason':'pause_turn'}",
    "{'content':[{'type':'text','text':'x'}],'stop_reason':'something_new','extra':true,'more':false,'n':0}",
    /* the tree's: escapes, tools, odd values, duplicates */
    "{'id':'msg_1','content':[{'type':'text','text':'a\\nb \\u00e9'}],'stop_reason':'end_turn'}",
    "{'id':'msg_1','content':[{'type':'tool_use','id':'toolu_1','name':'f','input':{'a':1}}],'stop_reason':'tool_use'}",
    "{'id':'msg_1','model':null,'content':[],'stop_reason':'end_turn'}",
    "{'id':'msg_1','content':[],'usage':{'input_tokens':1.5,'output_tokens':-1}}",
    "{'id':'msg_1','id':'msg_2','content':[]}",
    "{'id':'msg_1','content':[],'usage':{'output_tokens':1,'output_tokens':2}}",
    "{'id':'msg_1','type':'error','content':[]}",
    "{'id':'msg_1','content':{}}",
    "{'id':'msg_1'}",
    "{'id':'msg_1','content':[{'type':'text','text':'x'}],'meta':{'a':{'b':1}}}",
    "{'id':'msg_1','content':[{'type':'text','text':'x'}],'list':[1,2]}",
    "{'id':'msg_1','content':[{'type':'text','text':'x'}],'n':-3,'r':2.5}",
    "{'id':'msg_1','content':[{'type':'text','text':'x'}]} x",
    "{'id':'msg_1','content':[{'type':'text','text':'x'}],'usage':{'input_tokens':123456789012345678}}",
    "{'id':'msg_1','content':[{'type':'text','text':'x'}],'usage':{'input_tokens':0123}}",
    "{'\\u0069d':'msg_1','content':[]}",
};


static int
fast_vs_tree(const unsigned char *d, size_t n, int *taken)
{
    int       rf, rt, same;
    tbuf_t    a, b;
    tusage_t  ua, ub;

    ngx_http_ai_gateway_translate_buf_init(&a, NULL, NULL);
    ngx_http_ai_gateway_translate_buf_init(&b, NULL, NULL);
    memset(&ua, 0x5a, sizeof(ua));
    memset(&ub, 0x5a, sizeof(ub));

    rf = ngx_http_ai_gateway_translate_response_fast(d, n, CREATED,
                                     (unsigned char *) "fallback", 8, &ua, &a);
    rt = ngx_http_ai_gateway_translate_response_tree(d, n, CREATED,
                                     (unsigned char *) "fallback", 8, &ub, &b);

    *taken = (rf == OK);

    if (rf == NGX_HTTP_AI_GATEWAY_TRANSLATE_DECLINED) {
        /* nothing written, nothing told */
        same = (a.len == 0);

        memset(&ub, 0x5a, sizeof(ub));
        same = same && memcmp(&ua, &ub, sizeof(ua)) == 0;

    } else {
        same = (rf == rt && a.len == b.len
                && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0)
                && memcmp(&ua, &ub, sizeof(ua)) == 0);
    }

    CHECK(same, "fast %d, tree %d on \"%.*s\": \"%.*s\" / \"%.*s\"", rf, rt,
          (int) n, d, (int) a.len, a.p ? (char *) a.p : "", (int) b.len,
          b.p ? (char *) b.p : "");

    ngx_http_ai_gateway_translate_buf_free(&a);
    ngx_http_ai_gateway_translate_buf_free(&b);

    return same;
}


static void
test_response_fast(void)
{
    int        taken, ok;
    char      *d, *m;
    size_t     i, k, n, at, fast;

    static const char  alphabet[] = "{}[]\":,\\ 0a-_.eE9\x80\xc3\xff";

    fast = 0;
    ok = 1;

    for (i = 0; i < NELTS(fast_answers) && ok; i++) {
        d = q(fast_answers[i]);
        ok = fast_vs_tree((unsigned char *) d, strlen(d), &taken);

        /* the first seven are the usual shapes: the fast path's */
        CHECK(taken == (i < 7), "answer %zu: fast path %s", i,
              taken ? "taken" : "declined");

        free(d);
    }

    for (k = 0; k < 60000 && ok; k++) {
        d = q(fast_answers[k % 7]);
        n = strlen(d);

        m = malloc(n + 2);
        if (m == NULL) {
            abort();
        }

        memcpy(m, d, n + 1);
        at = rng() % n;

        switch (rng() % 4) {
        case 0:
            m[at] = alphabet[rng() % (sizeof(alphabet) - 1)];
            break;

        case 1:
            memmove(m + at + 1, m + at, n - at + 1);
            m[at] = alphabet[rng() % (sizeof(alphabet) - 1)];
            n++;
            break;

        case 2:
            memmove(m + at, m + at + 1, n - at);
            n--;
            break;

        default:
            n = at;
        }

        ok = fast_vs_tree((unsigned char *) m, n, &taken);
        fast += taken;

        free(m);
        free(d);
    }

    /* many mutations are still answers the fast path reads */
    CHECK(fast > 1000, "fast path took %zu of the mutations", fast);
}


int
main(void)
{
    test_request_plain();
    test_request_utf8_raw();
    test_request_system();
    test_request_parts();
    test_request_tools();
    test_request_tool_calls();
    test_request_merge();
    test_request_fields();
    test_request_long_model();
    test_request_invalid();

    test_response();
    test_response_fast();
    test_error();

    test_stream_text();
    test_stream_tools();
    test_stream_tool_no_input();
    test_stream_unnamed();
    test_stream_error();
    test_stream_malformed();
    test_stream_mutations();
    test_stream_fast();
    test_stream_sse();

    test_buffers();

    printf("%d passed, %d failed\n", checks - failures, failures);

    return failures ? 1 : 0;
}
