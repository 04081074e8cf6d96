"""``python -m rmu_lens.testbed`` (also ``rmu-lens testbed``): build or load a testbed, run the RMU preset,
print accuracy per domain before and after."""

from __future__ import annotations

import argparse

from rmu_lens.devices import add_device_arguments, load_options
from rmu_lens.flags import add_flags, log_function, output_flags, show_progress


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", default="small")
    parser.add_argument(
        "--overlap", type=float, default=0.5,
        help="share of the adjacent domain's attribute types borrowed from the forget domain (0..1)",
    )
    parser.add_argument("--out", help="write the measurement as JSON here")
    add_flags(parser, output_flags())
    add_device_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from rmu_lens._io import atomic_write_json
    from rmu_lens.testbed.experiment import format_measurement, measure
    from rmu_lens.testbed.testbed import load_testbed

    testbed = load_testbed(seed=args.seed, size=args.size, overlap=args.overlap, progress=show_progress(args))
    measurement = measure(testbed, progress=show_progress(args), load_options=load_options(args))
    log = log_function(args)
    log(f"testbed: {testbed.model_dir}")
    log(format_measurement(measurement))
    if args.out:
        atomic_write_json(args.out, measurement)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rmu_lens.testbed", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
