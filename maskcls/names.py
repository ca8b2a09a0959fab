"""Names of the Prefect work pool, flows and deployments: plain data, imports nothing.

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

#: Every deployment flows/deploy.py registers, as (flow name, deployment name).
DEPLOYMENTS = (
    (FLOW_NAME, ON_DEMAND),
    (FLOW_NAME, SCHEDULED),
    (FLOW_NAME, SWEEP_MEMBER),
    (SWEEP_FLOW_NAME, SWEEP),
)

#: flows/deploy.py's option that creates the work pool only (the stack runs it before workers start).
POOL_ONLY_FLAG = "--pool-only"
