#define _GNU_SOURCE
#include "hookproxy_host_shims.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <link.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sched.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

static const int crash_signals[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGTRAP};
#define CRASH_SIGNAL_COUNT ((int)(sizeof(crash_signals) / sizeof(crash_signals[0])))

/* ---- Starting workers ------------------------------------------------------------------------------------------ */

int hp_spawn(const char *path, char *const argv[], char *const envp[], int channel_fd, int crash_fd, pid_t *pid_out) {
    /* Move both descriptors above the ones the child will use, so that dup2 onto 3 and 4 always makes a fresh,
     * inheritable copy (dup2 of a descriptor onto itself would keep its close-on-exec flag). */
    int channel = fcntl(channel_fd, F_DUPFD_CLOEXEC, 10);
    if (channel < 0) return errno;
    int crash = fcntl(crash_fd, F_DUPFD_CLOEXEC, 10);
    if (crash < 0) {
        int error = errno;
        close(channel);
        return error;
    }
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attributes;
    int result = posix_spawn_file_actions_init(&actions);
    if (result != 0) goto close_descriptors;
    result = posix_spawnattr_init(&attributes);
    if (result != 0) goto destroy_actions;

    if ((result = posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)) != 0) goto destroy_all;
    if ((result = posix_spawn_file_actions_adddup2(&actions, channel, HP_WORKER_CHANNEL_FD)) != 0) goto destroy_all;
    if ((result = posix_spawn_file_actions_adddup2(&actions, crash, HP_WORKER_CRASH_FD)) != 0) goto destroy_all;
    /* Nothing else of the host's (sockets, database files) reaches the worker, close-on-exec or not. */
    if ((result = posix_spawn_file_actions_addclosefrom_np(&actions, HP_WORKER_CRASH_FD + 1)) != 0) goto destroy_all;

    sigset_t empty, all;
    sigemptyset(&empty);
    sigfillset(&all);
    if ((result = posix_spawnattr_setsigmask(&attributes, &empty)) != 0) goto destroy_all;
    if ((result = posix_spawnattr_setsigdefault(&attributes, &all)) != 0) goto destroy_all;
    /* Its own process group: a terminal's Ctrl-C goes to the host, which shuts its workers down itself. */
    if ((result = posix_spawnattr_setpgroup(&attributes, 0)) != 0) goto destroy_all;
    if ((result = posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP)) != 0)
        goto destroy_all;

    result = posix_spawn(pid_out, path, &actions, &attributes, argv, envp);

destroy_all:
    posix_spawnattr_destroy(&attributes);
destroy_actions:
    posix_spawn_file_actions_destroy(&actions);
close_descriptors:
    close(channel);
    close(crash);
    return result;
}

/* ---- Inside a worker ------------------------------------------------------------------------------------------- */

static char worker_alternate_stack[256 * 1024];
static uintptr_t worker_stack_low;
static long worker_page_size = 4096;

/* The data segment in bytes from /proc/self/statm (its sixth field, in pages); 0 when it cannot be read. */
static uint64_t data_segment_bytes(void) {
    int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    char buffer[256];
    ssize_t count = read(fd, buffer, sizeof(buffer) - 1);
    close(fd);
    if (count <= 0) return 0;
    int field = 0;
    uint64_t value = 0;
    for (ssize_t i = 0; i < count; i++) {
        char c = buffer[i];
        if (c == ' ' || c == '\n') {
            if (field == 5) return value * (uint64_t)worker_page_size;
            field++;
            value = 0;
        } else if (c >= '0' && c <= '9') {
            value = value * 10 + (uint64_t)(c - '0');
        }
    }
    return 0;
}

static void worker_crash_handler(int signal_number, siginfo_t *info, void *context) {
    (void)context;
    hp_crash_report report;
    memset(&report, 0, sizeof(report));
    report.magic = HP_CRASH_REPORT_MAGIC;
    report.signal_number = signal_number;
    report.data_bytes = data_segment_bytes();
    if ((signal_number == SIGSEGV || signal_number == SIGBUS) && info != NULL && worker_stack_low != 0) {
        uintptr_t address = (uintptr_t)info->si_addr;
        /* At the end of the stack: in its guard area below, or in its lowest pages. */
        if (address + (1u << 20) >= worker_stack_low && address < worker_stack_low + (64u << 10)) report.stack_overflow = 1;
    }
    ssize_t ignored = write(HP_WORKER_CRASH_FD, &report, sizeof(report));
    (void)ignored;
    /* SA_RESETHAND put the default action back; SA_NODEFER lets it take effect now. */
    raise(signal_number);
    _exit(128 + signal_number);
}

int hp_worker_prepare(pid_t expected_parent, uint64_t memory_limit) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != expected_parent) return -1;
    worker_page_size = sysconf(_SC_PAGESIZE);
    if (memory_limit > 0) {
        struct rlimit limit = {.rlim_cur = memory_limit, .rlim_max = memory_limit};
        setrlimit(RLIMIT_DATA, &limit);
    }
    struct rlimit no_core = {.rlim_cur = 0, .rlim_max = 0};
    setrlimit(RLIMIT_CORE, &no_core);

    pthread_attr_t attributes;
    if (pthread_getattr_np(pthread_self(), &attributes) == 0) {
        void *address = NULL;
        size_t size = 0;
        if (pthread_attr_getstack(&attributes, &address, &size) == 0) worker_stack_low = (uintptr_t)address;
        pthread_attr_destroy(&attributes);
    }
    stack_t alternate = {.ss_sp = worker_alternate_stack, .ss_size = sizeof(worker_alternate_stack), .ss_flags = 0};
    sigaltstack(&alternate, NULL);

    struct sigaction action;
    memset(&action, 0, sizeof(action));
    action.sa_sigaction = worker_crash_handler;
    action.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESETHAND | SA_NODEFER;
    sigemptyset(&action.sa_mask);
    for (int i = 0; i < CRASH_SIGNAL_COUNT; i++) sigaction(crash_signals[i], &action, NULL);
    return 0;
}

/* ---- The host's crash record ----------------------------------------------------------------------------------- */

static volatile int32_t *record_crashed_slot;
static volatile int32_t *record_crash_signal;
static volatile sig_atomic_t record_armed;
static struct sigaction previous_actions[CRASH_SIGNAL_COUNT];
static __thread int32_t current_slot = -1;
static __thread int has_alternate_stack;

static void record_current_slot(int32_t signal_number) {
    if (record_crashed_slot == NULL || current_slot < 0) return;
    if (*record_crashed_slot >= 0) return;
    *record_crash_signal = signal_number;
    *record_crashed_slot = current_slot;
}

static void host_crash_handler(int signal_number, siginfo_t *info, void *context) {
    record_current_slot(signal_number);
    for (int i = 0; i < CRASH_SIGNAL_COUNT; i++) {
        if (crash_signals[i] != signal_number) continue;
        struct sigaction *previous = &previous_actions[i];
        if ((previous->sa_flags & SA_SIGINFO) && previous->sa_sigaction != NULL) {
            previous->sa_sigaction(signal_number, info, context);
            return;
        }
        if (previous->sa_handler != SIG_DFL && previous->sa_handler != SIG_IGN && previous->sa_handler != NULL) {
            previous->sa_handler(signal_number);
            return;
        }
        break;
    }
    struct sigaction fallback;
    memset(&fallback, 0, sizeof(fallback));
    fallback.sa_handler = SIG_DFL;
    sigemptyset(&fallback.sa_mask);
    sigaction(signal_number, &fallback, NULL);
    raise(signal_number);
}

static void host_exit_hook(void) {
    if (record_armed) record_current_slot(0);
}

void hp_crash_record_install(volatile int32_t *crashed_slot, volatile int32_t *crash_signal) {
    static int installed;
    record_crashed_slot = crashed_slot;
    record_crash_signal = crash_signal;
    record_armed = 1;
    if (installed) return;
    installed = 1;
    struct sigaction action;
    memset(&action, 0, sizeof(action));
    action.sa_sigaction = host_crash_handler;
    action.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
    sigemptyset(&action.sa_mask);
    for (int i = 0; i < CRASH_SIGNAL_COUNT; i++) sigaction(crash_signals[i], &action, &previous_actions[i]);
    atexit(host_exit_hook);
}

void hp_crash_enter(int32_t slot) { current_slot = slot; }

void hp_crash_leave(void) { current_slot = -1; }

void hp_crash_record_disarm(void) { record_armed = 0; }

void hp_thread_alternate_stack(void) {
    /* A thread made by a thread that blocks signals (a dispatch worker) blocks them too: a blocked fault signal would
     * end the process without running the handlers. */
    sigset_t faults;
    sigemptyset(&faults);
    for (int i = 0; i < CRASH_SIGNAL_COUNT; i++) sigaddset(&faults, crash_signals[i]);
    pthread_sigmask(SIG_UNBLOCK, &faults, NULL);
    if (has_alternate_stack) return;
    size_t size = 256 * 1024;
    void *memory = malloc(size);
    if (memory == NULL) return;
    stack_t alternate = {.ss_sp = memory, .ss_size = size, .ss_flags = 0};
    if (sigaltstack(&alternate, NULL) == 0) {
        has_alternate_stack = 1;
    } else {
        free(memory);
    }
}

int32_t hp_current_thread_id(void) { return (int32_t)syscall(SYS_gettid); }

int hp_deprioritize_thread(int32_t thread_id) {
    struct sched_param parameters = {.sched_priority = 0};
    if (sched_setscheduler((pid_t)thread_id, SCHED_IDLE, &parameters) == 0) return 0;
    if (setpriority(PRIO_PROCESS, (id_t)thread_id, 19) == 0) return 0;
    return errno;
}

int hp_malloc_tune(size_t trim_threshold, size_t mmap_threshold) {
#ifdef __GLIBC__
    if (trim_threshold > INT_MAX || mmap_threshold > INT_MAX) return -1;
    if (mallopt(M_TRIM_THRESHOLD, (int)trim_threshold) != 1) return -1;
    if (mallopt(M_MMAP_THRESHOLD, (int)mmap_threshold) != 1) return -1;
    return 0;
#else
    (void)trim_threshold;
    (void)mmap_threshold;
    return -1;
#endif
}

int hp_malloc_trim(void) {
#ifdef __GLIBC__
    return malloc_trim(0);
#else
    return 0;
#endif
}

/* What hp_unmap_readonly_segments carries through dl_iterate_phdr. */
struct hp_unmap_state {
    int pagemap;
    uintptr_t page;
    long long released;
};

/* Whether every page of [start, end) that is mapped is still the file's (pagemap bit 61: a file page or shared
 * memory), none a copy of the process's own (relocated text of an object with text relocations, code a debugger
 * patched). A page not mapped is fine: it comes back from the file. */
static int hp_pages_are_file_pages(int pagemap, uintptr_t start, uintptr_t end, uintptr_t page) {
    uint64_t entries[512];
    for (uintptr_t address = start; address < end;) {
        size_t count = (size_t)((end - address) / page);
        if (count > 512) count = 512;
        ssize_t bytes = pread(pagemap, entries, count * sizeof(uint64_t), (off_t)(address / page * sizeof(uint64_t)));
        if (bytes != (ssize_t)(count * sizeof(uint64_t))) return 0;
        for (size_t index = 0; index < count; index++) {
            int present = (int)((entries[index] >> 63) & 1);
            int file_or_shared = (int)((entries[index] >> 61) & 1);
            if (present && !file_or_shared) return 0;
        }
        address += count * page;
    }
    return 1;
}

static int hp_unmap_object(struct dl_phdr_info *info, size_t size, void *data) {
    (void)size;
    struct hp_unmap_state *state = data;
    /* The vDSO is the kernel's, not a file. */
    if (info->dlpi_name != NULL && strncmp(info->dlpi_name, "linux-", 6) == 0) return 0;
    for (int index = 0; index < info->dlpi_phnum; index++) {
        const ElfW(Phdr) *segment = &info->dlpi_phdr[index];
        if (segment->p_type != PT_LOAD || (segment->p_flags & PF_W) != 0) continue;
        /* Whole pages inside the segment only: a page it shares with a neighbour is left alone. */
        uintptr_t start = (uintptr_t)(info->dlpi_addr + segment->p_vaddr);
        uintptr_t end = start + (uintptr_t)segment->p_memsz;
        start = (start + state->page - 1) & ~(state->page - 1);
        end &= ~(state->page - 1);
        if (end <= start || !hp_pages_are_file_pages(state->pagemap, start, end, state->page)) continue;
        if (madvise((void *)start, end - start, MADV_DONTNEED) == 0) state->released += (long long)(end - start);
    }
    return 0;
}

long long hp_unmap_readonly_segments(void) {
    long page = sysconf(_SC_PAGESIZE);
    if (page <= 0) return -1;
    int pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (pagemap < 0) return -1;
    struct hp_unmap_state state = {.pagemap = pagemap, .page = (uintptr_t)page, .released = 0};
    /* dl_iterate_phdr holds the loader's lock for the whole walk: no object seen can be unloaded (and its addresses
     * reused) before its pages are released. */
    dl_iterate_phdr(hp_unmap_object, &state);
    close(pagemap);
    return state.released;
}

int hp_spawn_actions_close_from(posix_spawn_file_actions_t *actions, int from) {
    return posix_spawn_file_actions_addclosefrom_np(actions, from);
}

int hp_random_fill(void *buffer, size_t count) {
    size_t filled = 0;
    while (filled < count) {
        ssize_t read = getrandom((char *)buffer + filled, count - filled, 0);
        if (read < 0) {
            if (errno == EINTR) continue;
            return errno;
        }
        filled += (size_t)read;
    }
    return 0;
}
