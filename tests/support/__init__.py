"""What every test suite shares: free ports, waiting, subsets of the shared data, zip
crafting and the one Prefect + MLflow server harness. Each suite's conftest.py keeps
only its own fixtures and builds them from these."""

from __future__ import annotations

from pathlib import Path

#: The project's checkout (the folder holding maskcls/, tasks/, flows/ and tests/).
REPO = Path(__file__).resolve().parents[2]
