/*
 * The workload of `cargo xtask bench`, compiled with gcc -O2 by the bench.
 *
 *   workload pairs PAIRS THREADS SEED
 *       PAIRS malloc+free pairs in all, split evenly over THREADS threads. Each pair: malloc of a mixed size
 *       (16 B - 4 KiB, plus one 64 KiB block in 64), touch one byte, free. Each thread first runs a warm-up
 *       of PAIRS/THREADS/10 pairs; then all threads are released at once by a barrier, each reads
 *       CLOCK_MONOTONIC before and after its loop, and the wall time is from the first start to the last
 *       end. Prints
 *           leakprobe-bench: ns_per_pair=X wall_ns=W pairs=P threads=T
 *       where X = W * T / P: the time one thread spends per pair (equal to the single-threaded figure when
 *       the threads run in parallel without interfering).
 *
 *   workload leak ALLOCS THREADS SEED
 *       ALLOCS small allocations (16 - 256 B) in all, over THREADS threads, never freed (the process exits
 *       with them live). No warm-up. Prints
 *           leakprobe-bench: allocs_per_s=R wall_ns=W allocs=A threads=T
 *
 *   workload pages PAGES THREADS SEED
 *       Touches PAGES fresh anonymous pages (one write fault each) over THREADS threads. Prints
 *           leakprobe-bench: ns_per_page=X wall_ns=W pages=P threads=T
 *
 *   workload maps MAPS THREADS SEED
 *       MAPS mmap+munmap pairs of 64 KiB of private anonymous writable memory, never touched, over THREADS
 *       threads (tier 0's mapping-growth program runs on each mmap). Prints
 *           leakprobe-bench: ns_per_map=X wall_ns=W maps=M threads=T
 *
 * With LEAKPROBE_BENCH_WAIT set in the environment, the workload prints "ready" once its threads' state is
 * set up and waits for a line on standard input before it starts them: a daemon tracing only its pid
 * (`--pid`) can attach in between.
 *
 * Every line the bench reads starts with "leakprobe-bench: ", so it can be found among a profiler's output.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <time.h>

#define SIZES 4096 /* a power of two: sizes are taken from a ring of precomputed ones */

struct worker {
    pthread_t thread;
    uint64_t count;
    uint64_t warmup;
    int leak;
    uint64_t begin, end; /* CLOCK_MONOTONIC ns around the measured loop */
    size_t sizes[SIZES];
};

static pthread_barrier_t start;

static uint64_t xorshift(uint64_t *state) {
    uint64_t x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *state = x;
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* One pair: the asm barriers keep gcc from eliding the malloc/free pair or the store. */
__attribute__((noinline)) static void pair(size_t size) {
    char *p = malloc(size);
    __asm__ volatile("" : "+r"(p) : : "memory");
    if (p == NULL) abort();
    p[0] = 1;
    __asm__ volatile("" : : "r"(p) : "memory");
    free(p);
}

__attribute__((noinline)) static void leak(size_t size) {
    char *p = malloc(size);
    __asm__ volatile("" : "+r"(p) : : "memory");
    if (p == NULL) abort();
    p[0] = 1;
}

/* Touches `count` fresh anonymous pages (one write fault each), in mappings of 1024 pages. */
static void pages(uint64_t count) {
    const size_t page = 4096, chunk = 1024;
    for (uint64_t done = 0; done < count; done += chunk) {
        char *map = mmap(NULL, chunk * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (map == MAP_FAILED) abort();
        for (size_t i = 0; i < chunk; i++) ((volatile char *)map)[i * page] = 1;
        munmap(map, chunk * page);
    }
}

/* `count` mmap+munmap pairs of 64 KiB, untouched. */
static void maps(uint64_t count) {
    const size_t bytes = 64 * 1024;
    for (uint64_t i = 0; i < count; i++) {
        char *map = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (map == MAP_FAILED) abort();
        munmap(map, bytes);
    }
}

static void *run(void *arg) {
    struct worker *w = arg;
    if (w->leak >= 2) {
        pthread_barrier_wait(&start);
        w->begin = now_ns();
        if (w->leak == 2) {
            pages(w->count);
        } else {
            maps(w->count);
        }
        w->end = now_ns();
        return NULL;
    }
    for (uint64_t i = 0; i < w->warmup; i++) pair(w->sizes[i & (SIZES - 1)]);
    pthread_barrier_wait(&start);
    w->begin = now_ns();
    if (w->leak) {
        for (uint64_t i = 0; i < w->count; i++) leak(w->sizes[i & (SIZES - 1)]);
    } else {
        for (uint64_t i = 0; i < w->count; i++) pair(w->sizes[i & (SIZES - 1)]);
    }
    w->end = now_ns();
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 5 || (strcmp(argv[1], "pairs") != 0 && strcmp(argv[1], "leak") != 0 && strcmp(argv[1], "pages") != 0 &&
                      strcmp(argv[1], "maps") != 0)) {
        fprintf(stderr, "usage: %s pairs|leak|pages|maps COUNT THREADS SEED\n", argv[0]);
        return 2;
    }
    int leaking = strcmp(argv[1], "leak") == 0;
    int paging = strcmp(argv[1], "pages") == 0;
    int mapping = strcmp(argv[1], "maps") == 0;
    /* One fault per base page: no transparent huge pages. */
    if (paging && prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0) != 0) return 1;
    uint64_t count = strtoull(argv[2], NULL, 10);
    int threads = atoi(argv[3]);
    uint64_t seed = strtoull(argv[4], NULL, 10) | 1;
    if (count == 0 || threads < 1 || threads > 64) {
        fprintf(stderr, "COUNT must be positive and THREADS between 1 and 64\n");
        return 2;
    }
    struct worker *workers = calloc((size_t)threads, sizeof *workers);
    if (workers == NULL) return 1;
    uint64_t per_thread = count / (uint64_t)threads;
    for (int t = 0; t < threads; t++) {
        struct worker *w = &workers[t];
        w->count = per_thread;
        w->warmup = leaking ? 0 : per_thread / 10;
        w->leak = mapping ? 3 : paging ? 2 : leaking;
        uint64_t state = seed * (2 * (uint64_t)t + 1);
        for (int i = 0; i < SIZES; i++) {
            uint64_t r = xorshift(&state);
            w->sizes[i] = (r % 64 == 0) ? 64 * 1024 : 16 + (size_t)(r >> 8) % (4096 - 16 + 1);
            if (leaking) w->sizes[i] = 16 + (w->sizes[i] % 241);
        }
    }
    if (getenv("LEAKPROBE_BENCH_WAIT") != NULL) {
        char line[16];
        printf("ready\n");
        fflush(stdout);
        if (fgets(line, sizeof line, stdin) == NULL) return 1;
    }
    pthread_barrier_init(&start, NULL, (unsigned)threads);
    for (int t = 0; t < threads; t++) {
        if (pthread_create(&workers[t].thread, NULL, run, &workers[t]) != 0) return 1;
    }
    /* Each thread times itself (the main thread may be scheduled late): from the first start to the last end. */
    uint64_t begin = UINT64_MAX, end = 0;
    for (int t = 0; t < threads; t++) {
        pthread_join(workers[t].thread, NULL);
        if (workers[t].begin < begin) begin = workers[t].begin;
        if (workers[t].end > end) end = workers[t].end;
    }
    uint64_t wall = end - begin;
    uint64_t done = per_thread * (uint64_t)threads;
    if (mapping) {
        printf("leakprobe-bench: ns_per_map=%.1f wall_ns=%llu maps=%llu threads=%d\n",
               (double)wall * threads / (double)done, (unsigned long long)wall, (unsigned long long)done, threads);
    } else if (paging) {
        printf("leakprobe-bench: ns_per_page=%.1f wall_ns=%llu pages=%llu threads=%d\n",
               (double)wall * threads / (double)done, (unsigned long long)wall, (unsigned long long)done, threads);
    } else if (leaking) {
        printf("leakprobe-bench: allocs_per_s=%.0f wall_ns=%llu allocs=%llu threads=%d\n",
               (double)done * 1e9 / (double)wall, (unsigned long long)wall, (unsigned long long)done, threads);
    } else {
        printf("leakprobe-bench: ns_per_pair=%.1f wall_ns=%llu pairs=%llu threads=%d\n",
               (double)wall * threads / (double)done, (unsigned long long)wall, (unsigned long long)done, threads);
    }
    fflush(stdout);
    return 0;
}
