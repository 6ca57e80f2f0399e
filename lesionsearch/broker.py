"""The embedded broker: kombu's filesystem transport with atomic message files and wake-ups.

Atomic messages. kombu's filesystem transport creates a message file, then locks and writes it.
A consumer that lists the folder in between reads an empty file, fails to decode it, and
Celery's consumer stops consuming: the worker looks alive but takes no more tasks. (Seen with
a fast polling interval.) Here a message is written under a name the consumers ignore and
renamed into place, which is atomic on one filesystem, so a consumer only ever sees complete
messages.

Wake-ups. kombu's consumer lists the folder, finds nothing and sleeps ``polling_interval``; a
message sent during the sleep waits for its end (half the interval on average), and a shorter
interval costs an idle worker CPU. Here each consuming process waits on its own named pipe in
the ``wake`` folder beside the queue (``lesionsearch.wakeup``), which every producer writes to
once its message is in place; it still lists the folder after ``polling_interval`` in any case.
"""
from __future__ import annotations

import logging
import os
import socket
import uuid
from pathlib import Path
from queue import Empty
from time import monotonic, sleep

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

from lesionsearch import wakeup

logger = logging.getLogger(__name__)


def wake_folder(data_folder: str) -> Path:
    """Where the consumers of the queue folder ``data_folder`` keep their pipes."""
    return Path(data_folder).parent / "wake"


class Channel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs):
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = final + ".part"  # consumers only pick up names ending in ".<queue>.msg"
        try:
            with open(partial, "wb") as handle:
                handle.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc
        wakeup.wake_all(wake_folder(self.data_folder_out))

    # A consumer that holds as many unacknowledged messages as its prefetch allows lists nothing
    # (kombu's QoS), and its wait is not ended by the message that arrives meanwhile (its wake-up
    # came while it could not take it). An acknowledgement frees a place: end the wait then, as
    # the poll after it did when the interval was short.
    def basic_ack(self, delivery_tag, multiple=False):
        super().basic_ack(delivery_tag, multiple=multiple)
        self.connection.wake_self()

    def basic_reject(self, delivery_tag, requeue=False):
        super().basic_reject(delivery_tag, requeue=requeue)
        self.connection.wake_self()


class Transport(filesystem.Transport):
    Channel = Channel
    _wake: wakeup.Pipe | None = None
    _wake_pid: int | None = None

    def _wake_pipe(self) -> wakeup.Pipe | None:
        """This process's pipe, made on its first wait (a forked child makes its own)."""
        if self._wake is None or self._wake_pid != os.getpid():
            folder = self.client.transport_options.get("data_folder_in")
            try:
                self._wake = wakeup.Pipe(wake_folder(folder)) if folder else None
            except OSError as exc:  # no pipes here: plain polling, as kombu does
                logger.warning("broker wake-up pipe unavailable (%s): polling every %s s", exc, self.polling_interval)
                self._wake = None
            self._wake_pid = os.getpid()
        return self._wake

    def wake_self(self) -> None:
        """End this process's own wait (from any of its threads)."""
        if self._wake is not None and self._wake_pid == os.getpid():
            self._wake.poke()

    def drain_events(self, connection, timeout=None):
        """kombu's loop (``virtual.Transport.drain_events``), waiting on the wake pipe instead of sleeping."""
        started = monotonic()
        interval = self.polling_interval
        if timeout and interval and interval > timeout:
            interval = timeout
        while True:
            try:
                self.cycle.get(self._deliver, timeout=timeout)
                return
            except Empty:
                if timeout is not None and monotonic() - started >= timeout:
                    raise socket.timeout() from None
                if interval is None:
                    continue
                pipe = self._wake_pipe()
                if pipe is None:
                    sleep(interval)
                else:
                    pipe.wait(interval)

    def close_connection(self, connection):
        if self._wake is not None and self._wake_pid == os.getpid():
            self._wake.close()
            self._wake = None
        super().close_connection(connection)
