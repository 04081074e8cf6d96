"""Answer-format bias of multiple-choice sets, and the rule that splits them into dev and test halves.

    python scripts/question_bias.py [FILE.jsonl ...]        # default: every bundled set
    python scripts/question_bias.py --assign-splits FILE    # (re)write each record's "split" field

For each set (and each split, when records have one) it prints the answer-position counts and the
expected accuracy of a chooser that always picks the longest choice, or the shortest (length in
characters, ties broken uniformly at random). Chance is 1/4; a set is length-balanced when both
lie within 0.25 +/- 0.03.

Split rule (docs/question_sets.md): group the records by answer position (0-3) and by the length
of the right answer among its choices (longest, else shortest, else in between; ties count as
longest or shortest); walk the groups in that order and, within a group, the records in file
order, alternating dev, test, dev, ...; each group starts with the half that holds fewer records
of that answer position so far, then fewer records overall, then dev. Each answer position is
split evenly (halves differ by at most one) and each half keeps the set's length balance.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

SPLITS = ("dev", "test")
CHANCE = 0.25
TOLERANCE = 0.03


def extreme_pick_accuracy(records: Sequence[dict], longest: bool) -> float:
    """Expected accuracy of always picking the longest (or shortest) choice, ties uniformly at random."""
    if not records:
        return float("nan")
    total = 0.0
    for record in records:
        lengths = [len(c) for c in record["choices"]]
        target = max(lengths) if longest else min(lengths)
        tied = [i for i, length in enumerate(lengths) if length == target]
        total += (record["answer"] in tied) / len(tied)
    return total / len(records)


def length_role(record: dict) -> str:
    """``longest`` when the right answer is (tied for) the longest choice, else ``shortest`` or ``middle``."""
    lengths = [len(c) for c in record["choices"]]
    answer = lengths[record["answer"]]
    return "longest" if answer == max(lengths) else "shortest" if answer == min(lengths) else "middle"


def assign_splits(records: Sequence[dict]) -> list[dict]:
    """Copies of ``records`` with ``split`` set by the rule in the module docstring."""
    out = [dict(r) for r in records]
    total = {"dev": 0, "test": 0}
    per_position: dict[tuple[int, str], int] = {}
    n_choices = max(len(r["choices"]) for r in out)
    for position in range(n_choices):
        for role in ("longest", "shortest", "middle"):
            group = [r for r in out if r["answer"] == position and length_role(r) == role]
            first = min(SPLITS, key=lambda s: (per_position.get((position, s), 0), total[s], SPLITS.index(s)))
            second = SPLITS[1 - SPLITS.index(first)]
            for i, record in enumerate(group):
                split = first if i % 2 == 0 else second
                record["split"] = split
                total[split] += 1
                per_position[position, split] = per_position.get((position, split), 0) + 1
    return out


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write(path: Path, records: Sequence[dict]) -> None:
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def report_line(name: str, records: Sequence[dict]) -> str:
    positions = [sum(r["answer"] == i for r in records) for i in range(4)]
    longest, shortest = extreme_pick_accuracy(records, True), extreme_pick_accuracy(records, False)
    flag = "" if all(abs(v - CHANCE) <= TOLERANCE for v in (longest, shortest)) else "  <- outside 0.25 +/- 0.03"
    return f"{name:<24} n={len(records):<4} positions={positions}  longest={longest:.3f}  shortest={shortest:.3f}{flag}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="*", type=Path, help="question .jsonl files (default: the bundled sets)")
    parser.add_argument("--assign-splits", action="store_true", help="rewrite each file with the dev/test split rule")
    args = parser.parse_args(argv)
    files = args.files or sorted((Path(__file__).resolve().parent.parent / "rmu_lens" / "data" / "questions").glob("*.jsonl"))
    bad = False
    for path in files:
        records = read(path)
        if args.assign_splits:
            records = assign_splits(records)
            write(path, records)
        line = report_line(path.stem, records)
        bad |= "outside" in line  # the exit status judges whole sets; the halves are shown for information
        print(line)
        for split in SPLITS:
            part = [r for r in records if r.get("split") == split]
            if part:
                print(report_line(f"  {path.stem}:{split}", part))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
