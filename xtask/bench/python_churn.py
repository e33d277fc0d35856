"""The Python frame walk's bench workload (`cargo xtask bench --only-python`).

`python3 python_churn.py COUNT DEPTH`: from DEPTH nested Python calls, makes and drops COUNT `bytes(4096)`
objects (each one `malloc` and one `free`: above pymalloc's 512 bytes), and prints the ns per object. It
prints `ready` and waits for a line on its standard input first: the bench starts a daemon tracing only its
pid (`--pid`), then tells it to go.
"""
import sys
import time


def churn(count):
    start = time.perf_counter_ns()
    for _ in range(count):
        bytes(4096)
    return time.perf_counter_ns() - start


def nest(depth, count):
    if depth <= 1:
        return churn(count)
    return nest(depth - 1, count)


def main():
    count, depth = int(sys.argv[1]), int(sys.argv[2])
    print("ready", flush=True)
    sys.stdin.readline()
    elapsed = nest(depth, count)
    print(f"leakprobe-bench: ns_per_object={elapsed / count:.1f} objects={count}", flush=True)


if __name__ == "__main__":
    main()
