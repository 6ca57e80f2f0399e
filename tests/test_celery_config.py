"""Celery is configured for long ML tasks, with separate queues."""
from __future__ import annotations

from django.conf import settings

from lesionsearch.celery import app, light_task, ml_task


def queue_of(task) -> str:
    """The queue the app's router sends this task to."""
    return app.amqp.router.route({}, task.name, (), {}, task_type=task)["queue"].name


def test_serialisation_prefetch_and_limits():
    conf = app.conf
    assert conf.task_serializer == "json" and conf.accept_content == ["json"]
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_soft_time_limit < conf.task_time_limit < conf.broker_transport_options["visibility_timeout"]
    assert conf.task_default_queue == settings.CELERY_QUEUE_LIGHT


def test_ml_tasks_ack_late_and_reject_on_worker_loss():
    @ml_task(name="tests.example_ml_task")
    def example_ml_task(x):
        return x

    @light_task(name="tests.example_light_task")
    def example_light_task(x):
        return x

    assert example_ml_task.acks_late is True and example_ml_task.reject_on_worker_lost is True
    assert queue_of(example_ml_task) == settings.CELERY_QUEUE_INFERENCE
    assert queue_of(example_light_task) == settings.CELERY_QUEUE_LIGHT
    assert not example_light_task.acks_late


def test_library_check_task_is_registered_on_the_light_queue():
    import retrieval.tasks  # noqa: F401

    task = app.tasks["retrieval.library_check_run"]
    assert queue_of(task) == settings.CELERY_QUEUE_LIGHT


def test_training_has_its_own_queue_so_that_queries_never_wait_behind_an_epoch():
    import retrieval.tasks  # noqa: F401

    training = app.tasks["retrieval.training_run"]
    assert queue_of(training) == settings.CELERY_QUEUE_TRAINING == "training"
    assert training.acks_late is True and training.reject_on_worker_lost is True
    assert queue_of(app.tasks["retrieval.query_run"]) == settings.CELERY_QUEUE_INFERENCE
