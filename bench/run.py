"""Run pimvae's benchmarks and write ``docs/performance.md`` and ``docs/performance.json``.

    python -m bench.run            # full run (a few minutes on a 2-core CPU)
    python -m bench.run --quick    # about a minute
    python -m bench.run --only step,scaling --compile some
    python -m bench.run --only private --threads 1 --out docs/performance_private.md

Benchmarks are not tests: they time things and write a report; nothing asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import torch

from . import common, report

BENCHMARKS = ("step", "scaling", "loglik", "private")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer rounds and sizes (about a minute)")
    p.add_argument("--only", default=",".join(BENCHMARKS), help=f"comma-separated subset of {','.join(BENCHMARKS)}")
    p.add_argument("--compile", choices=("none", "some", "all"), default=None,
                   help="torch.compile comparisons: none, a representative subset (default of the full run), "
                        "or every configuration (slow: tens of seconds of compilation each)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: all cores)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="what the tables report: elapsed time, or this process's CPU time (steadier on a shared "
                        "machine with --threads 1); the JSON keeps both")
    p.add_argument("--out", default="docs/performance.md", help="markdown report; the JSON goes beside it")
    args = p.parse_args(argv)
    only = [b.strip() for b in args.only.split(",") if b.strip()]
    bad = [b for b in only if b not in BENCHMARKS]
    if bad:
        p.error(f"unknown benchmark {bad[0]!r}; choose from {', '.join(BENCHMARKS)}")
    compile = args.compile or ("none" if args.quick else "some")
    if args.threads:
        torch.set_num_threads(args.threads)
    common.CLOCK["name"] = args.clock

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    results: dict = {
        "command": "python -m bench.run " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": _machine(),
        "quick": args.quick,
        "compile": compile,
        "clock": args.clock,
        "load_before": os.getloadavg(),
    }
    t0 = time.perf_counter()
    for name in only:
        log(f"{name}: start")
        t = time.perf_counter()
        mod = __import__(f"bench.{name}", fromlist=["run"])
        results[name] = mod.run(args.quick, compile, log)
        results[name]["wall_s"] = time.perf_counter() - t
        log(f"{name}: done in {results[name]['wall_s']:.0f} s")
    results["wall_s"] = time.perf_counter() - t0
    results["load_after"] = os.getloadavg()

    md_path = args.out
    json_path = os.path.splitext(md_path)[0] + ".json"
    os.makedirs(os.path.dirname(md_path) or ".", exist_ok=True)
    with open(json_path, "w") as f:
        json.dump(results, f, indent=1, default=str)
    with open(md_path, "w") as f:
        f.write(report.markdown(results, os.path.basename(json_path)))
    log(f"wrote {md_path} and {json_path} ({results['wall_s']:.0f} s)")
    return 0


def _machine() -> dict:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version()}


if __name__ == "__main__":
    raise SystemExit(main())
