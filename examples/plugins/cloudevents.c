/* cloudevents.c: a complete hookproxy formatter in C, against the plugin header alone.
 *
 * It sends each event as a CloudEvents 1.0 structured-mode JSON request
 * (Content-Type: application/cloudevents+json):
 *
 *   {"specversion":"1.0","id":"<event id>","source":"hookproxy/<source>","type":"<type>",
 *    "time":"<received_at>","datacontenttype":"application/json","data":<the whole event document>}
 *
 * Option: "type" (default "com.hookproxy.event"): letters, digits, '.', '-' and '_' only; anything else is refused,
 * which makes the configuration invalid with this plugin's message.
 *
 * Build (from the repository root), and drop it into the plugins directory:
 *
 *   cc -shared -fPIC -O2 -Wall -Wextra -std=c11 -I Sources/PluginABI/include -o plugins/libcloudevents.so examples/plugins/cloudevents.c
 */
#include <stdlib.h>
#include <string.h>

#include "hookproxy_plugin.h"

/* One instance per destination: the CloudEvents type it stamps. Immutable after creation, so on_format may run on
 * many threads at once. */
typedef struct instance {
    char type[128];
} instance;

/* Finds the string value of a top-level member `key` in the JSON object `json` (json_len bytes), skipping nested
 * objects, arrays and strings correctly. Stores a pointer into json and the value's length (without quotes, escapes
 * left as they are). Returns 1 when found, 0 otherwise. */
static int top_level_string(const char *json, size_t json_len, const char *key, const char **value, size_t *value_len) {
    size_t key_len = strlen(key);
    int depth = 0;
    for (size_t i = 0; i < json_len; i++) {
        char c = json[i];
        if (c == '{' || c == '[') {
            depth++;
        } else if (c == '}' || c == ']') {
            depth--;
        } else if (c == '"') {
            size_t start = ++i; /* a string: find its end, honouring backslash escapes */
            while (i < json_len && json[i] != '"') i += (json[i] == '\\') ? 2 : 1;
            if (i >= json_len) return 0;
            size_t length = i - start;
            /* A member name at depth 1 is followed (after spaces) by ':'. */
            size_t j = i + 1;
            while (j < json_len && (json[j] == ' ' || json[j] == '\n' || json[j] == '\t' || json[j] == '\r')) j++;
            if (depth == 1 && j < json_len && json[j] == ':' && length == key_len && memcmp(json + start, key, key_len) == 0) {
                j++;
                while (j < json_len && (json[j] == ' ' || json[j] == '\n' || json[j] == '\t' || json[j] == '\r')) j++;
                if (j >= json_len || json[j] != '"') return 0; /* not a string */
                size_t value_start = ++j;
                while (j < json_len && json[j] != '"') j += (json[j] == '\\') ? 2 : 1;
                if (j >= json_len) return 0;
                *value = json + value_start;
                *value_len = j - value_start;
                return 1;
            }
        }
    }
    return 0;
}

/* Puts a constant, one-line error message in output (static text: nothing to free). */
static hookproxy_status fail(hookproxy_output *output, hookproxy_status status, const char *message) {
    output->error = message;
    output->error_len = strlen(message);
    return status;
}

static hookproxy_status on_instance_new(const char *options, size_t options_len, void **instance_out, hookproxy_output *output) {
    instance *created = calloc(1, sizeof(instance));
    if (created == NULL) return fail(output, HOOKPROXY_ERROR_TRANSIENT, "cloudevents: out of memory");
    const char *type = "com.hookproxy.event";
    size_t type_len = strlen(type);
    const char *given;
    size_t given_len;
    if (top_level_string(options, options_len, "type", &given, &given_len)) {
        if (given_len == 0 || given_len >= sizeof(created->type)) {
            free(created);
            return fail(output, HOOKPROXY_ERROR_PERMANENT, "cloudevents: option 'type' must be 1 to 127 characters");
        }
        for (size_t i = 0; i < given_len; i++) {
            char c = given[i];
            int plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_';
            if (!plain) {
                free(created);
                return fail(output, HOOKPROXY_ERROR_PERMANENT, "cloudevents: option 'type' may hold only letters, digits, '.', '-' and '_'");
            }
        }
        type = given;
        type_len = given_len;
    }
    memcpy(created->type, type, type_len);
    created->type[type_len] = '\0';
    *instance_out = created;
    return HOOKPROXY_OK;
}

static void on_instance_destroy(void *state) { free(state); }

/* Appends n bytes to the buffer at *at (the caller sized it). */
static void put(char **at, const char *text, size_t n) {
    memcpy(*at, text, n);
    *at += n;
}

static hookproxy_status on_format(void *state, const hookproxy_event *event, hookproxy_output *output) {
    const instance *self = state;
    const char *id, *source, *time;
    size_t id_len, source_len, time_len;
    /* The host always sends these three as plain strings (an id, a source name, an RFC 3339 time). */
    if (!top_level_string(event->json, event->json_len, "id", &id, &id_len) ||
        !top_level_string(event->json, event->json_len, "source", &source, &source_len) ||
        !top_level_string(event->json, event->json_len, "received_at", &time, &time_len)) {
        return fail(output, HOOKPROXY_ERROR_PERMANENT, "cloudevents: the event document lacks id, source or received_at");
    }
    size_t type_len = strlen(self->type);
    size_t capacity = event->json_len + id_len + source_len + time_len + type_len + 200;
    char *body = malloc(capacity);
    if (body == NULL) return fail(output, HOOKPROXY_ERROR_TRANSIENT, "cloudevents: out of memory");
    char *at = body;
    put(&at, "{\"specversion\":\"1.0\",\"id\":\"", 27);
    put(&at, id, id_len);
    put(&at, "\",\"source\":\"hookproxy/", 22);
    put(&at, source, source_len);
    put(&at, "\",\"type\":\"", 10);
    put(&at, self->type, type_len);
    put(&at, "\",\"time\":\"", 10);
    put(&at, time, time_len);
    put(&at, "\",\"datacontenttype\":\"application/json\",\"data\":", 46);
    put(&at, event->json, event->json_len); /* the document is valid JSON, so the whole body is */
    put(&at, "}", 1);

    static const char content_type[] = "application/cloudevents+json";
    output->body = (const uint8_t *)body;
    output->body_len = (size_t)(at - body);
    output->content_type = content_type;
    output->content_type_len = sizeof(content_type) - 1;
    output->release_data = body; /* freed in on_output_release */
    return HOOKPROXY_OK;
}

static void on_output_release(void *state, hookproxy_output *output) {
    (void)state;
    free(output->release_data); /* NULL (nothing allocated) is fine */
}

static const hookproxy_plugin table = {
    .abi_version = HOOKPROXY_ABI_VERSION,
    .struct_size = sizeof(hookproxy_plugin),
    .name = "cloudevents",
    .version = "1.0.0",
    .capabilities = HOOKPROXY_CAPABILITY_FORMATTER,
    .on_instance_new = on_instance_new,
    .on_instance_destroy = on_instance_destroy,
    .on_format = on_format,
    .on_map = NULL,
    .on_output_release = on_output_release,
};

const hookproxy_plugin *hookproxy_plugin_entry(uint32_t host_abi_version, const hookproxy_host *host) {
    (void)host;
    if (host_abi_version != HOOKPROXY_ABI_VERSION) return NULL; /* the host refuses us with a clear message */
    return &table;
}
