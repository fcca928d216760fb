/*
 * Process-level helpers of the hookproxy host that must be written in C: starting plugin worker processes, preparing a
 * worker before it loads a plugin, and recording which plugin call a crashing thread was in. Everything a signal
 * handler runs here is async-signal-safe (no allocation, no locks, only write/open/read/close/raise).
 *
 * Not part of the plugin ABI: plugins never see this header.
 */
#ifndef HOOKPROXY_HOST_SHIMS_H
#define HOOKPROXY_HOST_SHIMS_H

#include <stdint.h>
#include <spawn.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------------------------------------------------------- */
/* Worker processes                                                                                                  */
/* ---------------------------------------------------------------------------------------------------------------- */

/* The descriptor numbers a worker finds its channel and its crash-report pipe on. */
#define HP_WORKER_CHANNEL_FD 3
#define HP_WORKER_CRASH_FD 4

/* Starts `path` with `argv` (NULL-terminated; argv[0] included) and `envp`, with `channel_fd` as descriptor 3 and
 * `crash_fd` as descriptor 4 in the child, standard input from /dev/null, standard output and error inherited, an empty
 * signal mask and every signal at its default action (the host's blocked signals and handlers are not inherited).
 * Uses posix_spawn (vfork-like, safe in a threaded process). On success stores the child's pid and returns 0; else
 * returns an errno value. The calling thread becomes the child's "parent thread" for PR_SET_PDEATHSIG: call it from a
 * thread that lives as long as the worker should. */
int hp_spawn(const char *path, char *const argv[], char *const envp[], int channel_fd, int crash_fd, pid_t *pid_out);

/* glibc's posix_spawn_file_actions_addclosefrom_np, which Swift does not import: the child closes every descriptor
 * from `from` up (the tests' other spawns use it, so that a server they start inherits none of the test process's
 * sockets). Returns 0 or an errno value. */
int hp_spawn_actions_close_from(posix_spawn_file_actions_t *actions, int from);

/* Called first thing in a worker process: asks the kernel to SIGKILL it when the thread that spawned it (in the host)
 * ends, exits at once when the host is already gone (its parent is no longer `expected_parent`), caps its data
 * segment (private writable memory: heap, mmap'd anonymous memory, thread stacks) at `memory_limit` bytes (0: no cap)
 * so that an allocation past it fails instead of eating the machine, disables core files, and installs handlers for
 * SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT and SIGTRAP that run on an alternate stack (so a stack overflow is caught
 * too), write one ``hp_crash_report`` to HP_WORKER_CRASH_FD, and end the process with the signal.
 * Returns 0, or -1 when the host is gone. */
int hp_worker_prepare(pid_t expected_parent, uint64_t memory_limit);

/* What a worker's crash handler writes to its crash-report pipe (native byte order, read by the host that spawned it,
 * on the same machine). */
typedef struct hp_crash_report {
    uint32_t magic;        /* HP_CRASH_REPORT_MAGIC */
    int32_t signal_number; /* the signal that ended the worker */
    uint64_t data_bytes;   /* the worker's data segment size when it crashed (from /proc/self/statm), 0 if unknown */
    uint32_t stack_overflow; /* 1 when the faulting address was at the end of the main thread's stack */
    uint32_t reserved;
} hp_crash_report;

#define HP_CRASH_REPORT_MAGIC 0x48504352u /* "HPCR" */

/* ---------------------------------------------------------------------------------------------------------------- */
/* The host's crash record (plugins called in process)                                                               */
/* ---------------------------------------------------------------------------------------------------------------- */

/* Installs, once per process, handlers for SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT and SIGTRAP and an atexit hook that
 * record, when the calling thread is inside a plugin call (see hp_crash_enter), that thread's journal slot in
 * `*crashed_slot` and the signal in `*crash_signal` (0 for a call to exit() from inside the plugin), then hand the
 * signal on to the handler installed before (Swift's backtracer, or the default action). Both pointers must stay valid
 * for the life of the process (they point into the memory-mapped journal). */
void hp_crash_record_install(volatile int32_t *crashed_slot, volatile int32_t *crash_signal);

/* The calling thread is about to call into a plugin for journal slot `slot` (>= 0). */
void hp_crash_enter(int32_t slot);

/* The calling thread is back from the plugin. */
void hp_crash_leave(void);

/* The process is ending normally from here on: exit() is no longer recorded as a plugin's. */
void hp_crash_record_disarm(void);

/* Gives the calling thread an alternate signal stack (once per thread), so that the crash handlers also run when the
 * thread overflowed its own stack, and unblocks the crash signals for it. */
void hp_thread_alternate_stack(void);

/* The calling thread's kernel id. */
int32_t hp_current_thread_id(void);

/* Moves thread `thread_id` (of this process) to the idle scheduling class (SCHED_IDLE; failing that, nice 19): it runs
 * only when nothing else wants the CPU. For a thread stuck in a plugin call that cannot be stopped, so that a plugin
 * spinning forever cannot starve ingest and the admin API. Returns 0 or an errno value. */
int hp_deprioritize_thread(int32_t thread_id);

/* ---------------------------------------------------------------------------------------------------------------- */
/* The allocator                                                                                                     */
/* ---------------------------------------------------------------------------------------------------------------- */

/* Tells glibc's malloc to keep up to `trim_threshold` bytes of free memory at the top of each arena instead of handing
 * it back to the kernel on every free (madvise, then a page fault for each page used again), and to serve requests
 * below `mmap_threshold` bytes from the arenas. Safe while other threads allocate (glibc takes its own lock); the
 * server calls it once at start. Returns 0, or -1 when the C library is not glibc or refused a value. */
int hp_malloc_tune(size_t trim_threshold, size_t mmap_threshold);

/* Hands the free memory of every arena back to the kernel (glibc's malloc_trim(0)). Returns 1 when some was released,
 * else 0. */
int hp_malloc_trim(void);

/* Unmaps from this process the pages of the executable's and the loaded shared libraries' segments that are not
 * writable (code and constant data), as madvise(MADV_DONTNEED) does: a page used again is mapped again from the page
 * cache, which keeps every one of them (a minor fault, no disk read). A segment with a page that is the process's own
 * copy, not the file's (the text of an object with text relocations, code a debugger patched), is left alone, since
 * dropping it would bring back the file's bytes; writable segments, relocated data made read-only after relocation
 * (RELRO) among them, are never touched, nor is any other mapping. The loader's lock is held throughout, so no object
 * is unloaded meanwhile. Safe while other threads run that code. Returns the bytes unmapped (most of them were not
 * resident), or -1 when /proc/self/pagemap cannot be read. */
long long hp_unmap_readonly_segments(void);

/* ---------------------------------------------------------------------------------------------------------------- */
/* Randomness                                                                                                        */
/* ---------------------------------------------------------------------------------------------------------------- */

/* Fills `count` bytes at `buffer` from the kernel's cryptographically secure generator (getrandom, retried on EINTR
 * and short reads). Returns 0, or an errno value when it could not (the buffer is then not all random). */
int hp_random_fill(void *buffer, size_t count);

#ifdef __cplusplus
}
#endif

#endif /* HOOKPROXY_HOST_SHIMS_H */
