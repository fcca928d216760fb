/*
 * hookproxy plugin ABI, version 1.
 *
 * This header is the whole contract between the hookproxy host and a plugin. A plugin is a
 * shared library (.so) that includes this header and nothing else of hookproxy's, and exports
 * one symbol: hookproxy_plugin_entry (see the end of this file).
 *
 * Conventions used on every declaration below:
 *  - "borrowed" means the pointer is owned by the caller and valid only for the duration of the
 *    call it is passed to; copy anything you need to keep.
 *  - "plugin-owned" means the plugin allocated it and the host hands it back to the plugin to free
 *    (through on_output_release or on_instance_destroy). The host never calls free() on plugin
 *    memory and a plugin never frees host memory: whoever allocates frees.
 *  - Strings are UTF-8 and always come with an explicit length; they are not guaranteed to be
 *    NUL-terminated unless stated.
 *  - No C++ exception, Swift error or unwinding may cross this boundary. Every failure is reported
 *    through a return code plus an optional message.
 *
 * Loading: the host opens the library once per process with dlopen(RTLD_NOW | RTLD_LOCAL), calls the
 * entry symbol once, and never calls dlclose: a loaded plugin stays mapped for the life of the process.
 *
 * Processes: by default the library is loaded in worker processes the host supervises (a probe that checks it, then
 * up to `plugins.workers` workers), and only with `isolation: in_process` in the host itself. A plugin must assume
 * nothing about which process it runs in, how many copies of its globals exist, or how long a process lives; it must
 * not fork, install signal handlers, or call exit(). Every on_format / on_map call has a deadline
 * (`plugins.call_timeout`, default 2 s): past it the worker is killed (in process, the call's thread is abandoned).
 */
#ifndef HOOKPROXY_PLUGIN_H
#define HOOKPROXY_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The ABI version this header describes. A plugin stamps its table with the version it was
 * built against; the host refuses a table whose version differs from its own. */
#define HOOKPROXY_ABI_VERSION 1u

/* The name of the one symbol a plugin exports. */
#define HOOKPROXY_PLUGIN_ENTRY_SYMBOL "hookproxy_plugin_entry"

/* ------------------------------------------------------------------------------------------ */
/* Return codes                                                                                */
/* ------------------------------------------------------------------------------------------ */

/* What on_instance_new, on_format and on_map return. */
typedef enum hookproxy_status {
    /* Success: the output is filled in. */
    HOOKPROXY_OK = 0,
    /* on_format only: do not send anything for this event. The delivery is marked "skipped",
     * not failed. output->error may carry a human-readable reason. */
    HOOKPROXY_SKIP = 1,
    /* A failure that may succeed when tried again later (e.g. a resource briefly unavailable).
     * The delivery counts a failed attempt and is retried on its schedule. */
    HOOKPROXY_ERROR_TRANSIENT = 2,
    /* A failure that will not succeed when tried again (bad options, an event the plugin cannot
     * format). From on_format: the delivery is dead at once. From on_instance_new: the
     * configuration is rejected. */
    HOOKPROXY_ERROR_PERMANENT = 3
} hookproxy_status;

/* Capability bits for hookproxy_plugin.capabilities. */
#define HOOKPROXY_CAPABILITY_FORMATTER 0x1u /* implements on_format */
#define HOOKPROXY_CAPABILITY_MAPPER 0x2u    /* implements on_map */

/* Log levels for callback_log. */
typedef enum hookproxy_log_level {
    HOOKPROXY_LOG_DEBUG = 0,
    HOOKPROXY_LOG_INFO = 1,
    HOOKPROXY_LOG_WARNING = 2,
    HOOKPROXY_LOG_ERROR = 3
} hookproxy_log_level;

/* ------------------------------------------------------------------------------------------ */
/* What the host gives the plugin                                                              */
/* ------------------------------------------------------------------------------------------ */

/* The host's services, passed to hookproxy_plugin_entry. The struct and everything it points
 * to is host-owned and stays valid for the life of the process, so a plugin may keep the
 * pointer. */
typedef struct hookproxy_host {
    /* HOOKPROXY_ABI_VERSION of the host. */
    uint32_t abi_version;
    /* sizeof(hookproxy_host) as the host was compiled; fields are only ever appended. */
    uint32_t struct_size;
    /* Writes one line to the host's log, attributed to the plugin.
     * host: the pointer this struct was passed as. message: borrowed, message_len bytes of UTF-8,
     * no trailing newline needed. Safe to call from any thread, at any time after the entry
     * symbol returned (also from inside on_format / on_map). */
    void (*callback_log)(const struct hookproxy_host *host, hookproxy_log_level level, const char *message,
                         size_t message_len);
    /* Host-private; plugins must not touch it. */
    void *host_data;
} hookproxy_host;

/* One HTTP header. In outputs, both strings are plugin-owned. */
typedef struct hookproxy_header {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
} hookproxy_header;

/* The input of on_format and on_map. Everything it points to is borrowed (host-owned, valid
 * until the call returns).
 *
 * For on_format, json is the event document:
 *   {"id": "0193...", "source": "github", "received_at": "2026-11-21T12:00:00.123Z",
 *    "headers": {"x-github-event": "push"}, "payload": {...} or null, "fields": {...},
 *    "destination": {"name": "ops-discord"}, "attempt": 1}
 * payload is the parsed JSON body (for form-encoded bodies, the parsed `payload` field) or null
 * when the body is not JSON. body is the raw request body exactly as received.
 *
 * For on_map, json is {"source": "...", "headers": {...}, "payload": {...} or null} and body is
 * the raw request body. */
typedef struct hookproxy_event {
    const char *json;
    size_t json_len;
    const uint8_t *body;
    size_t body_len;
    const char *content_type; /* the request's Content-Type, may be empty */
    size_t content_type_len;
} hookproxy_event;

/* Where a plugin puts its result. The host zero-fills it before every call and, after reading
 * it, always hands it back through on_output_release (whatever the status), so the plugin can
 * free what it allocated. All pointers in it are plugin-owned.
 *
 * on_format with HOOKPROXY_OK: body/body_len is the request body to send; content_type (may be
 * empty: the host then sends application/json); headers/header_count are extra request headers.
 * To send several requests for one event, in order (a message too big for one request), set
 * content_type to "application/vnd.hookproxy.requests+json" and body to
 *   {"requests": [{"content_type": "...", "headers": [{"name": "...", "value": "..."}],
 *                  "body": "<UTF-8 text>"}, ...]}
 * ("body_hex" instead of "body" for bytes that are not UTF-8). The host sends them one after the
 * other; a retry resumes at the first one that did not succeed, and each carries its own
 * webhook-id (the delivery id, then "<id>-1", "<id>-2", ...).
 * on_map with HOOKPROXY_OK: body/body_len is a JSON object of fields, merged over the source's
 * declarative mapping.
 * Any other status: error/error_len is a one-line, human-readable reason (may be empty). It is
 * shown to operators, so it must not contain secrets. The same applies to on_instance_new. */
typedef struct hookproxy_output {
    const uint8_t *body;
    size_t body_len;
    const char *content_type;
    size_t content_type_len;
    const hookproxy_header *headers;
    size_t header_count;
    const char *error;
    size_t error_len;
    /* Free for the plugin's use (e.g. the allocation backing the fields above); the host never
     * reads it. */
    void *release_data;
} hookproxy_output;

/* ------------------------------------------------------------------------------------------ */
/* What the plugin gives the host                                                              */
/* ------------------------------------------------------------------------------------------ */

/* The plugin's table, returned by hookproxy_plugin_entry. Plugin-owned, static: it must stay
 * valid and unchanged for the life of the process. */
typedef struct hookproxy_plugin {
    /* HOOKPROXY_ABI_VERSION as the plugin was compiled. The host refuses any other value. */
    uint32_t abi_version;
    /* sizeof(hookproxy_plugin) as the plugin was compiled. The host refuses a table smaller
     * than the one it knows. */
    uint32_t struct_size;
    /* The plugin's declared name, NUL-terminated ASCII ([a-z0-9_-]+), e.g. "discord". This is
     * what sources.yaml calls it (`formatter: discord`). Unique among loaded plugins. */
    const char *name;
    /* The plugin's own version, NUL-terminated, e.g. "1.0.0". */
    const char *version;
    /* HOOKPROXY_CAPABILITY_* bits. */
    uint32_t capabilities;

    /* Creates one instance from the options a destination (or a source's override) gives in
     * sources.yaml, converted to a JSON object (options_json, borrowed, options_len bytes; "{}"
     * when none). Called when a configuration is loaded, on one thread at a time.
     * On HOOKPROXY_OK the plugin stores its instance pointer (may be NULL) in *instance_out; the
     * host passes it back to every later call and eventually to on_instance_destroy.
     * On HOOKPROXY_ERROR_PERMANENT the options are invalid: the configuration is rejected with
     * output->error as the reason. The host releases output with on_output_release either way. */
    hookproxy_status (*on_instance_new)(const char *options_json, size_t options_len, void **instance_out,
                                        hookproxy_output *output);

    /* Destroys an instance made by on_instance_new. Called once per instance, after every
     * on_format / on_map call using it has returned (on reload and on shutdown). */
    void (*on_instance_destroy)(void *instance);

    /* Formatter capability (NULL without it): turns an event into the request body to send.
     * May be called concurrently from several threads, also with the same instance (in process; a
     * worker calls one at a time): an instance must be immutable after on_instance_new or
     * synchronise itself. Must not block: it has a deadline (see Processes above). */
    hookproxy_status (*on_format)(void *instance, const hookproxy_event *event, hookproxy_output *output);

    /* Mapper capability (NULL without it): turns a raw request into fields (a JSON object).
     * Same threading rules as on_format. Runs during ingest, before the event is stored. */
    hookproxy_status (*on_map)(void *instance, const hookproxy_event *event, hookproxy_output *output);

    /* Frees whatever the plugin allocated into an output. Called exactly once for every output
     * the host passed to on_instance_new, on_format or on_map, after the host has copied what it
     * needs; instance is the one used for that call (NULL for on_instance_new). May be called
     * from any thread. */
    void (*on_output_release)(void *instance, hookproxy_output *output);
} hookproxy_plugin;

/* The entry symbol every plugin exports (use HOOKPROXY_PLUGIN_ENTRY_SYMBOL with dlsym).
 * host_abi_version: the host's HOOKPROXY_ABI_VERSION. host: borrowed but valid forever (see
 * hookproxy_host). Called once, right after dlopen, on the loading thread.
 * Returns the plugin's static table, or NULL when the plugin cannot work with this host (the host
 * then refuses it). A plugin built for another ABI version should still return its table: the
 * host compares the versions and tells the operator both. */
typedef const hookproxy_plugin *(*hookproxy_plugin_entry_fn)(uint32_t host_abi_version,
                                                             const hookproxy_host *host);

const hookproxy_plugin *hookproxy_plugin_entry(uint32_t host_abi_version, const hookproxy_host *host);

#ifdef __cplusplus
}
#endif

#endif /* HOOKPROXY_PLUGIN_H */
