"""`maskcls` with a pause inside one stage, so a test can SIGKILL it exactly there.

    python tests/faults/pause_cli.py train --profile smoke ...   (the same arguments as `maskcls`)

MASKCLS_TEST_PAUSE names the point: ``augment`` (after the augmented array was written to
its temporary file in the store, under the stage's cache-key lock), ``train`` (after the
first epoch), ``register`` (after the model's artifacts were logged, before its version
exists). There the process writes its pid to MASKCLS_TEST_PAUSE_MARKER and waits until
MASKCLS_TEST_PAUSE_RELEASE exists (forever when unset). Everything else is the real CLI.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def _pause() -> None:
    marker = Path(os.environ["MASKCLS_TEST_PAUSE_MARKER"])
    release = os.environ.get("MASKCLS_TEST_PAUSE_RELEASE") or ""
    marker.write_text(str(os.getpid()))
    while not (release and Path(release).exists()):
        time.sleep(0.1)


def install(point: str) -> None:
    if point == "augment":
        import maskcls.augment as aug

        real_augment = aug.augment_to_file

        def augment_to_file(*args, **kwargs):
            out = real_augment(*args, **kwargs)
            _pause()
            return out

        aug.augment_to_file = augment_to_file
    elif point == "train":
        import maskcls.train as mt

        real_train = mt.train_model

        def train_model(*args, callbacks=None, **kwargs):
            import keras

            class Pause(keras.callbacks.Callback):
                def on_epoch_end(self, epoch, logs=None):
                    if epoch == 0:
                        _pause()

            return real_train(*args, callbacks=[*(callbacks or []), Pause()], **kwargs)

        mt.train_model = train_model
    elif point == "register":
        from tasks import tracking

        real_log = tracking.log_pyfunc

        def log_pyfunc(*args, **kwargs):
            out = real_log(*args, **kwargs)
            _pause()
            return out

        tracking.log_pyfunc = log_pyfunc
    elif point:
        raise SystemExit(f"unknown pause point {point!r}")


if __name__ == "__main__":
    install(os.environ.get("MASKCLS_TEST_PAUSE", ""))
    from flows.cli import app

    sys.argv[0] = "maskcls"
    app()
