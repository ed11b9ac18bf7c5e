"""Run one benchmark on two commits in the same session, alternately, and print figures side by side.

The machine is shared and noisy, so a figure only means something beside a baseline measured in
the same run. This checks the base commit out into a temporary git worktree (with its own virtual
environment, installed from its own lock file), then runs ``python -m bench.<name> ARGS`` on the base
and on this checkout in turn, ``--rounds`` times (base, head, base, head, ...), and prints every
figure line of both with the ratio head / base of each number in it.

    uv run python -m bench.compare sender --base ac13f60 -- --messages 20000 --processes 2 --batch 500
    uv run python -m bench.compare ingest --base ac13f60 --rounds 2 -- --webhooks 20000

The benchmark itself is the base commit's own copy on the base side (the same file when unchanged).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?")
#: the "[bench.x 12:00:00] " prefix of a benchmark's progress lines
PREFIX = re.compile(r"^\[bench[^\]]*\]\s*")


def figures(output: str) -> dict[str, list[float]]:
    """Lines with numbers, keyed by their text with the numbers taken out."""
    out: dict[str, list[float]] = {}
    for line in output.splitlines():
        line = PREFIX.sub("", line).strip()
        if not NUMBER.search(line) or line.startswith(("logs kept", "could not")):
            continue
        key = NUMBER.sub("#", line)
        seen = sum(1 for k in out if k == key or k.startswith(key + " [#"))
        if seen:  # the same line for another case (bench.pacing: one per rate): keep each
            key = f"{key} [#{seen + 1}]"
        out[key] = [float(n.replace(",", "")) for n in NUMBER.findall(line)]
    return out


def run(tree: Path, name: str, args: list[str]) -> str:
    uv = shutil.which("uv") or str(REPO / "scripts" / "uv")
    cmd = [uv, "run", "--frozen", "python", "-m", f"bench.{name}", *args]
    print(f"[compare] {tree}: {' '.join(cmd[4:])}", file=sys.stderr, flush=True)
    done = subprocess.run(cmd, cwd=tree, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
        raise SystemExit(f"bench.{name} failed in {tree} (exit {done.returncode})")
    return done.stdout


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("name", help="the benchmark: sender, ingest, scheduler, gateways, first_slice")
    parser.add_argument("--base", required=True, help="the commit to compare against")
    parser.add_argument("--rounds", type=int, default=1)
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    opts = parser.parse_args(argv[:split])
    args = argv[split + 1 :]  # after --: the benchmark's own arguments
    with tempfile.TemporaryDirectory(prefix="herald-base-") as tmp:
        base = Path(tmp) / "base"
        subprocess.run(["git", "worktree", "add", "--detach", str(base), opts.base], cwd=REPO, check=True)
        try:
            results: list[tuple[str, dict[str, list[float]]]] = []
            for r in range(opts.rounds):
                for label, tree in (("base", base), ("head", REPO)):
                    results.append((f"{label}#{r + 1}", figures(run(tree, opts.name, args))))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=REPO, check=False)
    head_rev = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False
    ).stdout.strip()
    print(f"bench.{opts.name} {' '.join(args)}: base {opts.base} vs head {head_rev}, {opts.rounds} round(s)")
    for r in range(opts.rounds):
        b, h = results[2 * r][1], results[2 * r + 1][1]
        print(f"\nround {r + 1}")
        for key in b.keys() - h.keys():  # a line the head no longer prints (a figure went away)
            print(f"  base only: {key}  {b[key]}")
        for key, hv in h.items():
            bv = b.get(key)
            if bv is None or len(bv) != len(hv):
                print(f"  head only: {key}  {hv}")
                if bv is not None:
                    print(f"  base only: {key}  {bv}")
                continue
            ratios = ", ".join(
                f"{x:g}/{y:g}={x / y:.2f}" if y else f"{x:g}/{y:g}" for x, y in zip(hv, bv, strict=True)
            )
            print(f"  {key}\n      head/base: {ratios}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
