"""Where one stack keeps its state: $MASKCLS_HOME/stack/..."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StackPaths:
    """The state folders of the stack whose MASKCLS_HOME is `home`."""

    home: Path

    @property
    def root(self) -> Path:
        return self.home / "stack"

    @property
    def prefect_home(self) -> Path:
        return self.root / "prefect"

    @property
    def mlflow_db(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def artifacts(self) -> Path:
        return self.root / "mlartifacts"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def tag(self) -> str:
        """Value of the environment tag (stack.processes.TAG_ENV) of this stack's processes."""
        return str(self.root)

    def pid_file(self, name: str) -> Path:
        return self.run / f"{name}.json"

    def log_file(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def make(self) -> None:
        for path in (self.prefect_home, self.artifacts, self.logs, self.run):
            path.mkdir(parents=True, exist_ok=True)
