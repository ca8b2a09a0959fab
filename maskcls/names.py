"""Names of the Prefect work pool, flows and deployments (and the scan flow's MLflow names): plain
data, imports nothing.

flows/deploy.py registers exactly `DEPLOYMENTS`; the stack's `status` and `up`
check that every one of them exists. Changing a name here changes both.
"""

POOL_NAME = "maskcls"

FLOW_NAME = "train-face-mask"
SWEEP_FLOW_NAME = "sweep-face-mask"

ON_DEMAND = "on-demand"
SCHEDULED = "scheduled-retrain"
# A deployment of the training flow for the sweep's points, without on-demand's
# one-run limit so that the pool's workers train several points at once.
SWEEP_MEMBER = "sweep-member"
SWEEP = "sweep"

SCAN_FLOW_NAME = "scan-photos"
SCAN_ON_DEMAND = "on-demand"
SCAN_INBOX = "scan-inbox"

#: Every deployment flows/deploy.py registers, as (flow name, deployment name).
DEPLOYMENTS = (
    (FLOW_NAME, ON_DEMAND),
    (FLOW_NAME, SCHEDULED),
    (FLOW_NAME, SWEEP_MEMBER),
    (SWEEP_FLOW_NAME, SWEEP),
    (SCAN_FLOW_NAME, SCAN_ON_DEMAND),
    (SCAN_FLOW_NAME, SCAN_INBOX),
)

#: The scan flow's MLflow experiment, and the registered scanner per MASKCLS_SCANNER_CLASSES.
SCAN_EXPERIMENT = "face-mask-scans"
SCANNER_MODELS = {2: "face-mask-scanner", 3: "face-mask-scanner-3class"}

#: `maskcls evaluate --log`: one run per scoring of a model version on a user's labelled folders.
EVALUATION_EXPERIMENT = "face-mask-evaluations"
#: `maskcls champion set`: one run per alias moved by hand (who, why, from which version), into
#: which the scanner that follows the new champion is logged.
CHAMPION_EXPERIMENT = "face-mask-champion-changes"

#: flows/deploy.py's option that creates the work pool only (the stack runs it before workers start).
POOL_ONLY_FLAG = "--pool-only"

#: The registered classifier per class set: promotion only ever compares models of one name,
#: so a model only competes with models that answer the same question.
CLASSIFIER_MODELS = {
    ("with_mask", "without_mask"): "face-mask-classifier",
    ("mask_weared_incorrect", "with_mask", "without_mask"): "face-mask-classifier-3class",
}


def _class_set_suffix(classes: tuple[str, ...] | list[str]) -> str:
    """A name-safe suffix for a class set of no listed name (its classes, sorted)."""
    text = "-".join(sorted(classes)).lower()
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in text)[:120]


def classifier_model_name(classes: tuple[str, ...] | list[str]) -> str:
    """`face-mask-classifier` for {with_mask, without_mask}, `face-mask-classifier-3class` for those
    and mask_weared_incorrect, `face-mask-classifier-<classes>` for any other set."""
    key = tuple(sorted(classes))
    return CLASSIFIER_MODELS.get(key, f"face-mask-classifier-{_class_set_suffix(key)}")


def scanner_model_name(classes: tuple[str, ...] | list[str]) -> str:
    """The scanner bundling a champion of ``classifier_model_name(classes)``: `face-mask-scanner`,
    `face-mask-scanner-3class`, or `face-mask-scanner-<classes>`."""
    key = tuple(sorted(classes))
    if key in CLASSIFIER_MODELS:
        return SCANNER_MODELS[len(key)]
    return f"face-mask-scanner-{_class_set_suffix(key)}"
