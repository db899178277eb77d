"""InfoNCE forward + backward: time and peak memory, ours (dense, blocked) against lightly.

Each case runs in its own process (so its peak resident memory is its own), d=128, float32,
two views of N samples (2N embeddings), on the CPU. Time is the median of the repeats of
forward + backward; memory is the process's peak resident set size above what it held with
the inputs allocated (after a warm-up on a tiny batch), measured in a second process in
which glibc mmaps every block over 128 KiB so that freed memory leaves the resident set.
A case that runs out of memory (the process is capped at
``--memory-gib``) is reported as OOM. Needs the bench extra for lightly
(``pip install -e '.[bench]'``); without it lightly's cells read n/a.

With ``--device cuda`` the tensors live on the GPU, each time is taken between
``torch.cuda.synchronize()`` calls and the memory is the peak CUDA memory allocated
(``torch.cuda.max_memory_allocated``) above what the inputs held; OOM is CUDA's.

    python scripts/bench_loss.py                        # 2N in 1024 ... 131072
    python scripts/bench_loss.py --sizes 1024 4096 --repeats 5
    python scripts/bench_loss.py --device cuda --sizes 4096 16384 65536
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

IMPLS = ("lightly", "dense", "blocked")


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_case(
    impl: str, two_n: int, dim: int, repeats: int, block_size: int, device: str = "cpu"
) -> dict[str, float]:
    import torch

    torch.manual_seed(0)
    if impl == "lightly":
        try:
            from lightly.loss import NTXentLoss
        except ImportError:
            return {"missing": 1.0}

        lightly_loss = NTXentLoss(temperature=0.2)

        def loss_of(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return lightly_loss(a, b)
    else:
        from contrastive.losses import info_nce

        block = block_size if impl == "blocked" else None

        def loss_of(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return info_nce(a, b, 0.2, block)

    # Warm up on a tiny batch first: thread pools and allocator start-up are not the loss's.
    cuda = device == "cuda"
    sync = torch.cuda.synchronize if cuda else lambda: None
    warm = torch.randn(2, 32, dim, device=device, requires_grad=True)
    loss_of(warm[0], warm[1]).backward()
    z_a = torch.randn(two_n // 2, dim, device=device, requires_grad=True)
    z_b = torch.randn(two_n // 2, dim, device=device, requires_grad=True)

    def loss_fn() -> torch.Tensor:
        return loss_of(z_a, z_b)

    sync()
    baseline = torch.cuda.memory_allocated() if cuda else rss_bytes()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        z_a.grad = z_b.grad = None
        started = time.perf_counter()
        loss_fn().backward()
        sync()
        times.append(time.perf_counter() - started)
    if cuda:
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    return {"seconds": statistics.median(times), "peak_bytes": max(peak - baseline, 0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096, 16384, 65536, 131072])
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3, help="(one above 2N=16384)")
    parser.add_argument(
        "--block-size",
        type=int,
        default=512,
        help="rows per block of the forced blocked case (512 is what block_size=auto picks)",
    )
    parser.add_argument("--memory-gib", type=float, default=20.0, help="(CPU only)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--case", nargs=2, help=argparse.SUPPRESS)  # internal: impl, 2N
    args = parser.parse_args()

    if args.case:
        impl, two_n = args.case[0], int(args.case[1])
        if args.device == "cpu":  # (CUDA reserves address space a data limit would refuse)
            limit = int(args.memory_gib * 2**30)
            resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
        repeats = args.repeats if two_n <= 16384 or args.device == "cuda" else 1
        try:
            result = run_case(impl, two_n, args.dim, repeats, args.block_size, args.device)
        except (RuntimeError, MemoryError) as error:
            result = {"error": str(error).splitlines()[0][:80]}
        print(json.dumps(result))
        return

    rows: dict[tuple[str, int], dict[str, float]] = {}
    for two_n in args.sizes:
        for impl in IMPLS:
            command = [sys.executable, __file__, "--case", impl, str(two_n)]
            command += ["--dim", str(args.dim), "--repeats", str(args.repeats)]
            command += ["--block-size", str(args.block_size), "--memory-gib", str(args.memory_gib)]
            command += ["--device", args.device]
            # Large blocks always mmapped and returned on free (glibc), so the peak resident
            # size follows live memory rather than the allocator's retained heap.
            env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
            done = subprocess.run(command, capture_output=True, text=True, env=env)
            lines = done.stdout.strip().splitlines()
            rows[impl, two_n] = (
                json.loads(lines[-1])
                if done.returncode == 0 and lines
                else {"error": f"killed ({done.returncode})"}
            )
            print(f"2N={two_n} {impl}: {rows[impl, two_n]}", file=sys.stderr, flush=True)

    def cell(result: dict[str, float], key: str) -> str:
        if "missing" in result:
            return "n/a"
        if "error" in result:
            return "OOM"
        return (
            f"{result['seconds']:.3f}"
            if key == "seconds"
            else f"{result['peak_bytes'] / 2**20:,.0f}"
        )

    if args.device == "cuda":
        import torch

        where = (
            f"CUDA ({torch.cuda.get_device_name()}, torch {torch.__version__}), peak CUDA memory"
        )
    else:
        where = f"CPU ({os.cpu_count()} cores), memory cap {args.memory_gib} GiB per case"
    print(f"\nd={args.dim}, float32, {where}, block_size={args.block_size}\n")
    print(
        "| 2N | lightly s | dense s | blocked s | blocked / lightly time | lightly MiB | dense MiB | blocked MiB | lightly / blocked memory |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for two_n in args.sizes:
        lightly, dense, blocked = (rows[impl, two_n] for impl in IMPLS)
        both = not ({"error", "missing"} & (lightly.keys() | blocked.keys()))
        time_ratio = f"{blocked['seconds'] / lightly['seconds']:.2f}" if both else "-"
        memory_ratio = (
            f"{lightly['peak_bytes'] / max(blocked['peak_bytes'], 1):.1f}" if both else "-"
        )
        print(
            f"| {two_n:,} | {cell(lightly, 'seconds')} | {cell(dense, 'seconds')} | "
            f"{cell(blocked, 'seconds')} | {time_ratio} | {cell(lightly, 'mem')} | "
            f"{cell(dense, 'mem')} | {cell(blocked, 'mem')} | {memory_ratio} |"
        )


if __name__ == "__main__":
    main()
