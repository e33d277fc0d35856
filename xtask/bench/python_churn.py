"""The Python frame walk's bench workload (`cargo xtask bench --only-python`).

`python3 python_churn.py COUNT DEPTH`: from DEPTH nested Python calls, makes and drops COUNT `bytes(4096)`
objects (each one `malloc` and one `free`: above pymalloc's 512 bytes), and prints the ns per object. It waits
0.3 s first so that the daemon's discovery (30 ms after `execve`) has registered the interpreter.
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
    time.sleep(0.3)
    elapsed = nest(depth, count)
    print(f"leakprobe-bench: ns_per_object={elapsed / count:.1f} objects={count}", flush=True)


if __name__ == "__main__":
    main()
