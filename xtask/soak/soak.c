/*
 * Workload of `cargo xtask soak`: what a long-running host does to leakprobe, at a steady pace.
 *
 *   soak leaker    leaks 1 KiB every 10 ms for 20 s, then exits (its leak is purged): a sawtooth, bounded.
 *   soak churner   forever: 1,000 malloc+free pairs of 16..4,096 bytes, then 10 ms of sleep.
 *   soak child     allocates 8 blocks, frees 4, exits: one of the thousands of short-lived processes.
 *
 * The xtask restarts leakers, keeps churners running and execs children at a fixed rate.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define NOINL __attribute__((noinline))

static void *check(void *p) {
  if (!p) {
    fputs("soak: allocation failed\n", stderr);
    exit(2);
  }
  return p;
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

NOINL void leak_slowly(void) {
  for (int i = 0; i < 2000; i++) {
    char *p = check(malloc(1024));
    memset(p, 1, 1024);
    sleep_ms(10);
  }
}

NOINL void churn_forever(void) {
  unsigned seed = 1;
  for (;;) {
    for (int i = 0; i < 1000; i++) {
      seed = seed * 1103515245u + 12345u;
      void *p = check(malloc(16 + (seed >> 8) % 4080));
      __asm__ volatile("" : : "r"(p) : "memory");
      free(p);
    }
    sleep_ms(10);
  }
}

NOINL void short_life(void) {
  void *blocks[8];
  for (int i = 0; i < 8; i++) blocks[i] = check(malloc(64 << i));
  for (int i = 0; i < 4; i++) free(blocks[i]);
}

int main(int argc, char **argv) {
  if (argc < 2) return 1;
  if (!strcmp(argv[1], "leaker")) {
    leak_slowly();
  } else if (!strcmp(argv[1], "churner")) {
    churn_forever();
  } else if (!strcmp(argv[1], "child")) {
    short_life();
  } else {
    return 1;
  }
  return 0;
}
