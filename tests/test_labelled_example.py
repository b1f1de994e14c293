"""One labelled example for the whole package: streams, deployments and the generator share its class."""

from __future__ import annotations

import pytest

from rehearsal.errors import ValidationError
from rehearsal.examples import Example
from rehearsal.runner.tasks import Task, TaskStream


def test_the_streams_example_is_the_one_class() -> None:
    from rehearsal.runner import tasks

    assert tasks.Example is Example


def test_defaults_name_no_task_no_tags_and_the_default_tenant() -> None:
    ex = Example("hello", "greeting")
    assert (ex.task, ex.tags, ex.tenant) == ("default", (), "default")
    assert ex.metadata() == {"task": "default", "label": "greeting", "tags": []}


def test_tags_and_tenant_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        Example("hello", "greeting", "chat", ("safety",))  # type: ignore[misc]
    assert Example("hello", "greeting", "chat", tags=("safety",)).tags == ("safety",)


def test_an_unlabelled_example_has_no_known_label() -> None:
    assert Example("hi", "greeting").known_label == "greeting"
    with pytest.raises(ValidationError, match="an example of task 'chat' has no label"):
        _ = Example("my card number is 4111", None, "chat").known_label


def test_an_unlabelled_example_is_refused_by_a_task_and_a_stream() -> None:
    with pytest.raises(ValidationError, match="has no label"):
        Task.from_examples("chat", [Example("hi", None, "chat")], [])
    stream = TaskStream.from_tasks([Task.from_examples("chat", [Example("hi", "greeting", "chat")], [])])
    assert stream.label_id("greeting") == 0
    with pytest.raises(ValidationError, match="an unlabelled example has no label id"):
        stream.label_id(None)
