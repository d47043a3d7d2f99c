"""The teacher as a read-only view of the student: the frozen initial model behind the same contract.

``AudioLLM.teacher()`` yields ``teacher_view(student)``: a shallow copy sharing the processor, the
token sets and the feature-cache service, marked ``is_teacher``, that computes with

* ``frozen_copy`` -- the frozen deep copy made at load time (full fine-tuning);
* ``adapter_disabled`` -- the student's HF model with the LoRA adapter disabled, for the duration of
  each computing call (``computes``; peft's ``disable_adapter``, no second copy in memory);
* ``self`` -- the model itself (an untrained evaluation model is its own initial model).

Nothing on the student changes: it keeps computing as the student while a view exists. The view
cannot be saved and has no trainable parameters. ``with model.teacher():`` followed by calls on
``model`` (the student) would silently score with the student: ``checked`` raises at the end of a
block in which the student computed and its view did not.
"""

from __future__ import annotations

import copy
import functools
from contextlib import contextmanager
from typing import Any, Callable, Iterator


def teacher_view(student: Any) -> Any:
    """The read-only teacher view of ``student`` (an ``AudioLLM``); a view is its own teacher."""
    if student.is_teacher:
        return student
    view = copy.copy(student)
    view.is_teacher, view.calls = True, 0
    if student.teacher_mode == "frozen_copy":
        view._model = student.teacher_model
    return view


@contextmanager
def adapter_scope(llm: Any) -> Iterator[None]:
    """On a LoRA teacher view: the adapter disabled while inside (re-entrant: nested calls stay inside)."""
    if not (llm.is_teacher and llm.teacher_mode == "adapter_disabled") or llm._adapter_off:
        yield
        return
    llm._adapter_off = True
    try:
        with llm.peft.disable_adapter():
            yield
    finally:
        llm._adapter_off = False


def computes(fn: Callable) -> Callable:
    """Decorator of ``AudioLLM``'s computing methods: each runs inside ``adapter_scope`` and is counted."""
    @functools.wraps(fn)
    def run(self, *args, **kwargs):
        self.calls += 1
        with adapter_scope(self):
            return fn(self, *args, **kwargs)
    return run


@contextmanager
def checked(student: Any) -> Iterator[Any]:
    """``teacher_view(student)`` for a ``with`` block; raises if only the student computed inside it."""
    view, before = teacher_view(student), student.calls
    yield view
    if view is not student and view.calls == 0 and student.calls > before:
        raise RuntimeError("inside `with model.teacher():` the student computed and the teacher did not: "
                           "write `with model.teacher() as teacher:` and call teacher.*")


__all__ = ["teacher_view", "adapter_scope", "computes", "checked"]
