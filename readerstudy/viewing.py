"""Staff reads of what readers looked at: a study's neighbour enlargements as analysis rows.

The rows carry each enlarged neighbour's class (its library diagnosis, which the reader saw on its
frame) and the case's image id, so they are for study administrators, like ``selectors.study_reads``;
nothing here is shown to readers. The analysis (``readerstudy.analysis.viewing``) takes them with
the study's reads: ``viewing_summary(reads, views)`` and ``views_csv(views)``.
"""
from __future__ import annotations

from readerstudy.analysis.viewing import NeighbourView as ViewRow
from readerstudy.models import TASK_WITH_NEIGHBOURS, Answer, NeighbourView, Study, StudyNeighbour


def study_views(study: Study) -> list[ViewRow]:
    """Every enlargement in the study as ``readerstudy.analysis.viewing.NeighbourView`` rows
    (reader = username, case = image id, as ``selectors.study_reads``), by reader, Task 2 order and time.

    ``seconds_after_shown`` counts from the showing the case's Task 2 answer was timed from (the
    answer's ``seconds``), so that the analysis can tell an enlargement before the answer from one
    after it: where an enlargement was made on another showing of the case (the page reloaded before
    answering, or the case revisited after) and both showings' server times are known, the time
    between the two showings is added. Otherwise (no answer yet, or a showing without a valid token)
    it is the page's own measure.
    """
    answered_showing = dict(Answer.objects.filter(item__assignment__study=study, task=TASK_WITH_NEIGHBOURS)
                            .values_list("item_id", "shown_at"))
    classes = {(study_case, rank): dx for study_case, rank, dx in StudyNeighbour.objects
               .filter(study_case__study=study).values_list("study_case_id", "rank", "case__dx")}
    placed = []
    for view in (NeighbourView.objects.filter(item__assignment__study=study)
                 .select_related("item__assignment__reader", "item__study_case__case")):
        seconds = view.seconds_after_shown
        anchor = answered_showing.get(view.item_id)
        if anchor is not None and view.shown_at is not None and view.shown_at != anchor:
            seconds += (view.shown_at - anchor).total_seconds()
        row = ViewRow(reader=view.item.assignment.reader.username, case=view.item.study_case.case.image_id,
                      task=view.task, rank=view.rank, neighbour_class=classes[(view.item.study_case_id, view.rank)],
                      seconds_after_shown=seconds, seconds_open=view.seconds_open)
        placed.append(((row.reader, view.item.task2_position, seconds, view.id), row))
    return [row for _, row in sorted(placed, key=lambda pair: pair[0])]
