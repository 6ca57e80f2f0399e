"""The embedded broker: kombu's filesystem transport with atomic message files.

kombu's filesystem transport creates a message file, then locks and writes it. A consumer
that lists the folder in between reads an empty file, fails to decode it, and Celery's
consumer stops consuming: the worker looks alive but takes no more tasks. (Seen with the
fast polling interval the query path needs.) Here a message is written under a name the
consumers ignore and renamed into place, which is atomic on one filesystem, so a consumer only
ever sees complete messages.
"""
from __future__ import annotations

import os
import uuid
from time import monotonic

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


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


class Transport(filesystem.Transport):
    Channel = Channel
