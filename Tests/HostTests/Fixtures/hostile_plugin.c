/* A formatter and mapper that misbehave on chosen payloads only, for the isolation tests; compiled with cc at test time.
 * A raw body containing one of these markers makes on_format and on_map:
 *   CRASH_SEGV   dereference NULL            CRASH_ABORT  abort()             CRASH_EXIT  exit(0)
 *   HANG         loop forever                RECURSE      recurse until the stack overflows
 *   ALLOCATE     allocate (and touch) memory until an allocation fails, then use the NULL it got
 * Any other body is formatted as "hostile:" followed by the event document; the mapper returns {"mapped": "yes"}. */
#include <stdlib.h>
#include <string.h>

#include "hookproxy_plugin.h"

#ifndef PLUGIN_NAME
#define PLUGIN_NAME "hostile"
#endif

static int body_has(const hookproxy_event *event, const char *marker) {
    return event->body_len > 0 && memmem(event->body, event->body_len, marker, strlen(marker)) != NULL;
}

static int recurse(int depth) {
    volatile char frame[4096];
    frame[0] = (char)depth;
    if (depth < 0) return 0;
    return recurse(depth + 1) + frame[0];
}

/* Does what the body asks; returns only for a body without a marker. */
static void misbehave(const hookproxy_event *event) {
    if (body_has(event, "CRASH_SEGV")) *(volatile int *)NULL = 1;
    if (body_has(event, "CRASH_ABORT")) abort();
    if (body_has(event, "CRASH_EXIT")) exit(0);
    if (body_has(event, "HANG")) {
        volatile unsigned long spins = 0;
        for (;;) spins++;
    }
    if (body_has(event, "RECURSE")) (void)recurse(0);
    if (body_has(event, "ALLOCATE")) {
        for (;;) {
            char *block = malloc(1 << 20);
            if (block == NULL) *(volatile int *)NULL = 1;
            memset(block, 1, 1 << 20);
        }
    }
}

static hookproxy_status on_instance_new(const char *options, size_t options_len, void **instance_out,
                                        hookproxy_output *output) {
    (void)options;
    (void)options_len;
    (void)output;
    *instance_out = NULL;
    return HOOKPROXY_OK;
}

static void on_instance_destroy(void *instance) { (void)instance; }

static hookproxy_status on_format(void *instance, const hookproxy_event *event, hookproxy_output *output) {
    (void)instance;
    misbehave(event);
    static const char prefix[] = "hostile:";
    size_t length = sizeof(prefix) - 1 + event->json_len;
    uint8_t *body = malloc(length);
    if (body == NULL) return HOOKPROXY_ERROR_TRANSIENT;
    memcpy(body, prefix, sizeof(prefix) - 1);
    memcpy(body + sizeof(prefix) - 1, event->json, event->json_len);
    output->body = body;
    output->body_len = length;
    output->content_type = "text/plain";
    output->content_type_len = 10;
    output->release_data = body;
    return HOOKPROXY_OK;
}

static hookproxy_status on_map(void *instance, const hookproxy_event *event, hookproxy_output *output) {
    (void)instance;
    misbehave(event);
    static const char fields[] = "{\"mapped\":\"yes\"}";
    output->body = (const uint8_t *)fields;
    output->body_len = sizeof(fields) - 1;
    return HOOKPROXY_OK;
}

static void on_output_release(void *instance, hookproxy_output *output) {
    (void)instance;
    free(output->release_data);
}

static const hookproxy_plugin table = {
    .abi_version = HOOKPROXY_ABI_VERSION,
    .struct_size = sizeof(hookproxy_plugin),
    .name = PLUGIN_NAME,
    .version = "1.0.0",
    .capabilities = HOOKPROXY_CAPABILITY_FORMATTER | HOOKPROXY_CAPABILITY_MAPPER,
    .on_instance_new = on_instance_new,
    .on_instance_destroy = on_instance_destroy,
    .on_format = on_format,
    .on_map = on_map,
    .on_output_release = on_output_release,
};

const hookproxy_plugin *hookproxy_plugin_entry(uint32_t host_abi_version, const hookproxy_host *host) {
    (void)host_abi_version;
    (void)host;
    return &table;
}
