/* A minimal formatter written in C against hookproxy_plugin.h alone; the tests compile it with cc at test time.
 * Body sent: "minimal:" followed by the event document. Options: {"reject": true} is refused.
 * -DPLUGIN_NAME="..." renames it; -DTABLE_ABI_VERSION=N stamps another ABI version; -DNO_ENTRY leaves out the entry;
 * -DWITH_MAPPER adds a mapper that returns {"from_mapper": "<content type>", "repo": "mapper-repo"} (after 700 ms when
 * the body contains SLOW_MAP).
 * A raw body containing SKIP_ME, FAIL_TRANSIENT or FAIL_PERMANENT makes on_format skip or fail with a message; SLOW_ME
 * makes it take 1.2 s before formatting; BAD_HEADER makes it return a header value with a CR LF in it. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hookproxy_plugin.h"

#ifndef PLUGIN_NAME
#define PLUGIN_NAME "minimal"
#endif
#ifndef TABLE_ABI_VERSION
#define TABLE_ABI_VERSION HOOKPROXY_ABI_VERSION
#endif

static const hookproxy_host *host_services;

static hookproxy_status on_instance_new(const char *options, size_t options_len, void **instance_out,
                                        hookproxy_output *output) {
    static const char rejection[] = "minimal: option 'reject' is set";
    if (options_len > 0 && memmem(options, options_len, "\"reject\":true", 13) != NULL) {
        output->error = rejection;
        output->error_len = sizeof(rejection) - 1;
        return HOOKPROXY_ERROR_PERMANENT;
    }
    *instance_out = NULL;
    return HOOKPROXY_OK;
}

static void on_instance_destroy(void *instance) { (void)instance; }

static const hookproxy_header extra_headers[] = {{"X-Minimal", 9, "1", 1}};

static int body_has(const hookproxy_event *event, const char *marker) {
    return event->body_len > 0 && memmem(event->body, event->body_len, marker, strlen(marker)) != NULL;
}

static hookproxy_status on_format(void *instance, const hookproxy_event *event, hookproxy_output *output) {
    (void)instance;
    if (body_has(event, "SKIP_ME")) {
        output->error = "minimal: told to skip";
        output->error_len = 21;
        return HOOKPROXY_SKIP;
    }
    if (body_has(event, "FAIL_TRANSIENT")) {
        output->error = "minimal: a passing problem";
        output->error_len = 26;
        return HOOKPROXY_ERROR_TRANSIENT;
    }
    if (body_has(event, "FAIL_PERMANENT")) {
        output->error = "minimal: cannot format this event";
        output->error_len = 33;
        return HOOKPROXY_ERROR_PERMANENT;
    }
    if (body_has(event, "BAD_HEADER")) {
        static const hookproxy_header injected[] = {{"X-Minimal", 9, "1\r\nX-Injected: yes", 18}};
        output->body = (const uint8_t *)"x";
        output->body_len = 1;
        output->headers = injected;
        output->header_count = 1;
        return HOOKPROXY_OK;
    }
    if (body_has(event, "SLOW_ME")) {
        struct timespec pause = {1, 200000000};
        nanosleep(&pause, NULL);
    }
    static const char prefix[] = "minimal:";
    size_t length = sizeof(prefix) - 1 + event->json_len;
    uint8_t *body = malloc(length);
    if (body == NULL) return HOOKPROXY_ERROR_TRANSIENT;
    memcpy(body, prefix, sizeof(prefix) - 1);
    memcpy(body + sizeof(prefix) - 1, event->json, event->json_len);
    output->body = body;
    output->body_len = length;
    output->content_type = "text/plain";
    output->content_type_len = 10;
    output->headers = extra_headers;
    output->header_count = 1;
    output->release_data = body;
    if (host_services != NULL) {
        static const char line[] = "minimal formatted an event";
        host_services->callback_log(host_services, HOOKPROXY_LOG_DEBUG, line, sizeof(line) - 1);
    }
    return HOOKPROXY_OK;
}

#ifdef WITH_MAPPER
static hookproxy_status on_map(void *instance, const hookproxy_event *event, hookproxy_output *output) {
    (void)instance;
    if (body_has(event, "SLOW_MAP")) {
        struct timespec pause = {0, 700000000};
        nanosleep(&pause, NULL);
    }
    static const char head[] = "{\"from_mapper\":\"";
    static const char tail[] = "\",\"repo\":\"mapper-repo\"}";
    size_t length = sizeof(head) - 1 + event->content_type_len + sizeof(tail) - 1;
    char *fields = malloc(length);
    if (fields == NULL) return HOOKPROXY_ERROR_TRANSIENT;
    memcpy(fields, head, sizeof(head) - 1);
    memcpy(fields + sizeof(head) - 1, event->content_type, event->content_type_len);
    memcpy(fields + sizeof(head) - 1 + event->content_type_len, tail, sizeof(tail) - 1);
    output->body = (const uint8_t *)fields;
    output->body_len = length;
    output->release_data = fields;
    return HOOKPROXY_OK;
}
#define CAPABILITIES (HOOKPROXY_CAPABILITY_FORMATTER | HOOKPROXY_CAPABILITY_MAPPER)
#define ON_MAP on_map
#else
#define CAPABILITIES HOOKPROXY_CAPABILITY_FORMATTER
#define ON_MAP NULL
#endif

static void on_output_release(void *instance, hookproxy_output *output) {
    (void)instance;
    free(output->release_data);
}

static const hookproxy_plugin table = {
    .abi_version = TABLE_ABI_VERSION,
    .struct_size = sizeof(hookproxy_plugin),
    .name = PLUGIN_NAME,
    .version = "0.0.1",
    .capabilities = CAPABILITIES,
    .on_instance_new = on_instance_new,
    .on_instance_destroy = on_instance_destroy,
    .on_format = on_format,
    .on_map = ON_MAP,
    .on_output_release = on_output_release,
};

#ifndef NO_ENTRY
const hookproxy_plugin *hookproxy_plugin_entry(uint32_t host_abi_version, const hookproxy_host *host) {
    (void)host_abi_version;
    host_services = host;
    return &table;
}
#else
/* Exported under another name: a library that is not a hookproxy plugin. */
const hookproxy_plugin *some_other_entry(void) { return &table; }
#endif
