"""Time the APL dynamic programme on CIFAR ResNets of growing depth.

Targets (issue 2): under 0.5 s at depth 110 on a 2-core machine, and growth close to
linear in depth (the time/depth ratio stays roughly flat).

    python benchmarks/bench_apl.py [--depths 20 56 110 1202] [--repeats 3]
"""

import argparse
import time

import torch

from nonlinear_advantage.depth import depth_summary
from nonlinear_advantage.models import build_model


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depths", type=int, nargs="+", default=[20, 56, 110, 1202])
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    x = torch.randn(1, 3, 32, 32)
    print(f"{'depth':>6} {'seconds':>9} {'ms/layer':>9} {'APL':>8} {'APL unnorm':>10}  (best of {args.repeats})")
    for depth in args.depths:
        model = build_model("resnet", depth=depth, width=args.width, in_channels=3, num_classes=10)
        best = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            summary = depth_summary(model, x)
            best = min(best, time.perf_counter() - t0)
        print(f"{depth:>6} {best:>9.3f} {1e3 * best / depth:>9.2f} {summary['apl_normalized']:>8.2f} "
              f"{summary['apl_unnormalized']:>10.2f}")


if __name__ == "__main__":
    main()
