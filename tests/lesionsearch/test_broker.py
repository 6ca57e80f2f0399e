"""The embedded broker (lesionsearch/broker.py): whole messages only, and consumers woken by a
producer instead of finding a message only at their next folder listing."""
from __future__ import annotations

import threading
import time

import pytest
from kombu import Connection, Exchange, Queue
from kombu.transport import virtual

from lesionsearch import broker


def _connection(folder, polling_interval: float) -> Connection:
    for name in ("queue", "control"):
        (folder / name).mkdir(parents=True, exist_ok=True)
    return Connection(transport="lesionsearch.broker:Transport", transport_options={
        "data_folder_in": str(folder / "queue"), "data_folder_out": str(folder / "queue"),
        "control_folder": str(folder / "control"), "store_processed": False,
        "polling_interval": polling_interval,
    })


@pytest.mark.parametrize("woken", [True, False])
def test_a_waiting_consumer_gets_a_message_as_soon_as_it_is_sent(tmp_path, monkeypatch, woken):
    """A consumer polling every 2 s receives the message within a few milliseconds when the
    producer wakes it; without the wake-up it finds it only at its next listing."""
    # kombu keeps declared bindings in a class-wide state; this test's folders are new
    monkeypatch.setattr(broker.Transport, "global_state", virtual.BrokerState())
    if not woken:
        monkeypatch.setattr(broker.wakeup, "wake_all", lambda folder: 0)
    exchange = Exchange("jobs", type="direct")
    queue = Queue("inference", exchange, routing_key="inference")
    received: list[tuple[dict, float]] = []
    with _connection(tmp_path, polling_interval=2.0) as consumer_conn, _connection(tmp_path, 2.0) as producer_conn:
        def on_message(body, message):
            received.append((body, time.monotonic()))
            message.ack()

        with consumer_conn.Consumer(queue, callbacks=[on_message], accept=["json"]):
            waiting = threading.Thread(target=lambda: consumer_conn.drain_events(timeout=5), daemon=True)
            waiting.start()
            time.sleep(0.3)  # the consumer has listed the empty folder and waits
            sent = time.monotonic()
            producer_conn.Producer().publish({"query": 7}, exchange=exchange, routing_key="inference",
                                             declare=[queue], serializer="json")
            waiting.join(6)
    assert [body for body, _ in received] == [{"query": 7}]
    delay = received[0][1] - sent
    if woken:
        assert delay < 0.2, f"woken consumer took {delay:.3f} s"
    else:
        assert delay > 1.0, f"an unwoken consumer should wait for its next listing, took {delay:.3f} s"
    assert not list((tmp_path / "wake").glob("*.wake"))  # the consumer removed its pipe when its connection closed


def test_an_acknowledgement_lets_a_full_consumer_take_the_message_that_waited(tmp_path, monkeypatch):
    """With its one prefetch place taken (a task running, acknowledged late) a consumer cannot
    take the next message when its wake-up comes; the acknowledgement ends its wait instead of
    its next listing 2 s later (the query's evidence stage queued behind its first stage)."""
    monkeypatch.setattr(broker.Transport, "global_state", virtual.BrokerState())
    exchange = Exchange("jobs", type="direct")
    queue = Queue("inference", exchange, routing_key="inference")
    received: list = []
    with _connection(tmp_path, polling_interval=2.0) as consumer_conn, _connection(tmp_path, 2.0) as producer_conn:
        producer = producer_conn.Producer()

        def send(body):
            producer.publish(body, exchange=exchange, routing_key="inference", declare=[queue], serializer="json")

        with consumer_conn.Consumer(queue, callbacks=[lambda body, message: received.append((body, message))],
                                    accept=["json"], prefetch_count=1):
            send({"stage": 1})
            consumer_conn.drain_events(timeout=1)
            assert [body for body, _ in received] == [{"stage": 1}]  # held, not acknowledged yet
            waiting = threading.Thread(target=lambda: consumer_conn.drain_events(timeout=5), daemon=True)
            waiting.start()
            send({"stage": 2})  # woken, but its one place is taken: it waits again
            time.sleep(0.3)
            assert len(received) == 1
            acked = time.monotonic()
            received[0][1].ack()
            waiting.join(6)
            assert [body for body, _ in received] == [{"stage": 1}, {"stage": 2}]
            assert time.monotonic() - acked < 0.3
            received[1][1].ack()
