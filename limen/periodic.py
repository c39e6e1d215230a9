"""A background thread that does one round of work every few seconds until it is stopped: the
guest watch, the graphs' sampler and the pruner are each one."""

import logging
import threading

log = logging.getLogger(__name__)


class Periodic:
    """Calls ``round`` every ``interval`` seconds (and once at start when ``at_start``) on a
    daemon thread named ``name``; a round that raises is logged, and the next one runs."""

    name = "limen-periodic"
    at_start = False

    def __init__(self, interval: float):
        self.interval = float(interval)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread:
            self._stop.set()
            self._thread.join(timeout=15)
            self._thread = None

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def round(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        if self.at_start:
            self._round()
        while not self._stop.wait(self.interval):
            self._round()

    def _round(self) -> None:
        try:
            self.round()
        except Exception:
            log.exception("%s: a round failed; the next in %g s", self.name, self.interval)
