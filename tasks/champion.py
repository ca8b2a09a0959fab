"""The champion by hand: `maskcls champion set` moves the alias back (or forward), `show` says where it is.

Moving it is a promotion like ``tasks.promotion``'s: under the same `promotion` lock under
MASKCLS_HOME (so it cannot interleave with a run's compare-and-set), the version tagged the
same way (`promotion`, `promotion_reason`, plus who and when), and the scanning model follows
(``tasks.promotion._sync_scanner`` registers a scanner bundling the new champion). Each move is
a run in experiment `face-mask-champion-changes` (names.CHAMPION_EXPERIMENT): who, why, from
which version; the new scanner's model is logged into it.
"""

from __future__ import annotations

import getpass
import logging
import socket
from datetime import datetime, timezone
from typing import Any

from maskcls.config import CHAMPION_ALIAS, Settings
from maskcls.errors import ConfigError
from maskcls.names import CHAMPION_EXPERIMENT
from tasks import tracking
from tasks.locking import exclusive
from tasks.promotion import LOCK_KEY, _sync_scanner

log = logging.getLogger("maskcls.champion")
#: The `promotion` tag of a version made champion by hand (promotion's own are promoted, not_better, ...).
MANUAL = "manual"


def _who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no user name for this uid (some containers)
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def check_request(version: str, reason: str) -> str:
    """The version number asked for (`3` or `v3`); ConfigError for another text or an empty reason."""
    number = version.strip().removeprefix("v")
    if not number.isdigit():
        raise ConfigError(f"VERSION {version!r} is not a version number: give e.g. 3 (`maskcls champion show` "
                          "prints the current one)")
    if not reason.strip():
        raise ConfigError("--reason is empty: say why the champion moves (it is kept as the version's tag)")
    return number


def set_champion(settings: Settings, name: str, version: str, reason: str) -> dict[str, Any]:
    """Point `champion` of ``name`` at ``version`` (which must exist), tagged with ``reason``, who and
    when; then the scanner follows. Returns what changed (previous, version, run id, scanner tags)."""
    version = check_request(version, reason)
    client = tracking.configure(settings)
    target = tracking.model_version(client, name, version)  # names the existing versions if there is none
    classes = tracking.version_classes(client, name, target)
    who, when = _who(), datetime.now(timezone.utc).isoformat(timespec="seconds")
    run_id = tracking.create_run(client, settings, f"champion-set-{name}-v{version}", {
        "champion_set": "true", "model_name": name, "model_version": version, "reason": reason[:5000], "by": who,
    }, experiment=CHAMPION_EXPERIMENT)
    ok = False
    try:
        with exclusive(settings.locks_dir, LOCK_KEY):
            previous = tracking.alias_version(client, name, CHAMPION_ALIAS)
            before = str(previous.version) if previous is not None else "none"
            tracking.move_alias(client, name, version, {
                "promotion": MANUAL, "promotion_reason": reason[:4000], "promotion_by": who, "promotion_at": when,
                "promotion_previous_champion": before,
            })
            # Each class set's scanner bundles its classifier's champion (tasks.promotion).
            scanner = _sync_scanner(client, run_id, classes, log)
        with tracking.translated():
            tracking.set_tags(client, run_id, {"previous_champion": before, **scanner})
        ok = True
    finally:
        tracking.end_run(client, run_id, ok)
    return {"name": name, "version": version, "previous": before, "run_id": run_id, "by": who, "at": when,
            "scanner_version": scanner.get("scanner_version"), "scanner_error": scanner.get("scanner_error")}


def show_champion(settings: Settings, name: str) -> dict[str, Any] | None:
    """Where `champion` of ``name`` points: version, run, test metrics, when and why (None: no champion)."""
    client = tracking.configure(settings)
    tracking.model_versions(client, name)  # no such model: an error naming the registered ones
    current = tracking.alias_version(client, name, CHAMPION_ALIAS)
    if current is None:
        return None
    tags = dict(current.tags)
    registered = datetime.fromtimestamp(current.creation_timestamp / 1000, timezone.utc).isoformat(timespec="seconds")
    info: dict[str, Any] = {
        "name": name, "version": str(current.version), "run_id": current.run_id,
        "registered_at": registered,
        # Promotion by a run happens as the version is registered; by hand, when the tag says.
        "champion_since": tags.get("promotion_at", registered),
        "promotion": tags.get("promotion"), "reason": tags.get("promotion_reason"), "by": tags.get("promotion_by"),
        "profile": tags.get("profile"), "dataset_fingerprint": tags.get("dataset_fingerprint"),
        "metrics": {k: float(v) for k, v in sorted(tags.items()) if k.startswith("test_")},
    }
    scanner = tracking.scanner_model_name(tracking.version_classes(client, name, current))
    info["scanner"] = {"name": scanner, "version": tracking.scanner_champion(client, scanner),
                       "bundles_version": tracking.scanner_wraps(client, scanner)}
    return info
