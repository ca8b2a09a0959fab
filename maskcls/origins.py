"""Origin families of the shared face-mask data: which collection a file came from, by its name.

The shared data (``../shared/datasets/face-mask``, the pinned download) were assembled from
several collections, and each left its own naming scheme. A family is one such scheme;
each family is (in the shared data, entirely) one class. ``docs/origins.md`` is the table
of pattern -> family -> count per class, made from the committed pin by
``python -m benchmarks.origins_table``.

The rules are data: a regular expression matched against ``<class folder>/<file stem>``
(the file's last two path parts, extension dropped), first match wins. What each family
looks like (looked at, not guessed from names):

- ``web_masked``: ``with_maskNNN`` - web and stock photos of people wearing masks, often
  wide shots with background, several people, watermarks.
- ``masked_copies``: ``A_B_N copy[ M]`` - tight crops of real masked faces (eyes to chin),
  East Asian faces, cloth and surgical masks; "copy" in the name, though most are distinct
  photos (few are near-duplicates of each other).
- ``masked_crops``: ``A_B_<number or hash>`` without "copy" - the same kind of tight crops,
  named by number or by a web image hash.
- ``masked_numbered``: ``with_mask/N`` - plain numbers in the masked folder: tight crops
  of the same kind again.
- ``unmasked_numbered``: ``without_mask/N`` - plain numbers in the unmasked folder: frontal
  portraits and selfies of varied people, often with a colour chart at the edge.
- ``unmasked_augmented``: ``augmented_image_N`` - rotated, cropped or mirrored copies of
  the ``unmasked_numbered`` portraits (most are near-duplicates of one of them).
- ``unmasked_named_1_0`` / ``unmasked_named_0_0``: ``1_0_<name>_NNNN`` / ``0_0_<name>_NNNN`` -
  tight crops of unmasked (mostly East Asian celebrity) faces, named after the person.

The plain numbers are the one scheme two collections share, so that rule names the class
folder. Anything else is ``None`` (no family).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath


@dataclass(frozen=True)
class Rule:
    """A file-name pattern and the family it marks."""

    family: str
    #: Matched in full against ``<class folder>/<file stem>``.
    pattern: str
    #: The pattern as a person reads it (the table's first column).
    shown: str


RULES: tuple[Rule, ...] = (
    Rule("web_masked", r"[^/]+/with_mask\d+", "with_maskNNN"),
    Rule("unmasked_augmented", r"[^/]+/augmented_image_\d+", "augmented_image_N"),
    Rule("unmasked_named_1_0", r"[^/]+/1_0_[a-z]+_\d+", "1_0_<name>_NNNN"),
    Rule("unmasked_named_0_0", r"[^/]+/0_0_[a-z]+_\d+", "0_0_<name>_NNNN"),
    Rule("masked_copies", r"[^/]+/\d+_\d+_\d+ copy( \d+)*", "A_B_N copy[ M]"),
    Rule("masked_crops", r"[^/]+/\d+_\d+_.+", "A_B_<number or hash>"),
    Rule("masked_numbered", r"with_mask/\d+", "with_mask/N"),
    Rule("unmasked_numbered", r"without_mask/\d+", "without_mask/N"),
)

#: Every family name, in the order of RULES.
FAMILIES: tuple[str, ...] = tuple(dict.fromkeys(r.family for r in RULES))

_COMPILED = tuple((rule, re.compile(rule.pattern)) for rule in RULES)


def _key(path: str) -> str:
    parts = PurePosixPath(path).parts
    stem = PurePosixPath(parts[-1]).stem if parts else ""
    return f"{parts[-2]}/{stem}" if len(parts) >= 2 else f"/{stem}"


def rule_of(path: str) -> Rule | None:
    """The first rule matching a file's ``<class>/<stem>`` (``with_mask/1.jpg``), or None."""
    key = _key(path)
    for rule, regex in _COMPILED:
        if regex.fullmatch(key):
            return rule
    return None


def family_of(path: str) -> str | None:
    """The origin family of a file, from its path relative to the source (``without_mask/0_0_qiqi_0001.jpg``)."""
    rule = rule_of(path)
    return rule.family if rule else None


def table(paths_labels: Iterable[tuple[str, str]], classes: list[str]) -> list[dict]:
    """One row per rule that matched something (then ``None`` for the unmatched): pattern,
    family, count per class, total."""
    counts: dict[str | None, Counter] = {}
    for path, label in paths_labels:
        rule = rule_of(path)
        counts.setdefault(rule.shown if rule else None, Counter())[label] += 1
    rows = []
    for rule in (*RULES, None):
        shown = rule.shown if rule else None
        if shown not in counts:
            continue
        c = counts[shown]
        rows.append({"pattern": shown or "(no rule)", "family": rule.family if rule else "(none)",
                     **{cls: c.get(cls, 0) for cls in classes}, "total": sum(c.values())})
    return rows


def markdown(rows: list[dict], classes: list[str]) -> str:
    """The rows of ``table`` as a markdown table."""
    head = ["pattern (`<class>/<stem>`)", "family", *classes, "total"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join([f"`{r['pattern']}`", f"`{r['family']}`",
                                        *(str(r[c]) for c in classes), str(r["total"])]) + " |")
    totals = [str(sum(r[c] for r in rows)) for c in classes]
    lines.append("| **all** | | " + " | ".join(totals) + f" | {sum(r['total'] for r in rows)} |")
    return "\n".join(lines) + "\n"
