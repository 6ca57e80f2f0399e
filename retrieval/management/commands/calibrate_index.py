from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from retrieval import selectors
from retrieval.models import IndexVersion


class Command(BaseCommand):
    help = (
        "Recompute the out-of-distribution calibration of a finished index (default: the one that serves "
        "queries) in this process: held-out library images and the non-dermoscopic evaluation set are encoded "
        "as queries, every candidate score is measured, one is chosen on the select half and its figures on the "
        "report half are stored with the index. Queries that run afterwards use it; finished queries keep theirs."
    )

    def add_arguments(self, parser):
        parser.add_argument("--index", type=int, metavar="ID", help="IndexVersion id (default: the active index)")

    def handle(self, *args, index, **options):
        # In this process, not in a worker: it is an administrator's maintenance step that prints its
        # figures when done (like evaluate_retrieval); it needs the model files and MEDIA_ROOT, as
        # build_index --here does, and takes about as long as encoding the held-out images once.
        from retrieval.services.ood import CalibrationError, index_calibrate

        target = selectors.index_get(index_id=index) if index is not None else selectors.index_for_queries()
        if target is None:
            raise CommandError(f"no index #{index}" if index is not None else "no active index; give --index")
        try:
            target = index_calibrate(index=target)
        except (ValueError, CalibrationError) as exc:
            raise CommandError(str(exc)) from None
        self._report(target)

    def _report(self, index: IndexVersion) -> None:
        calibration = index.calibration
        held, evaluation = calibration["in_distribution"], calibration["evaluation_set"]
        write = self.stdout.write
        write(f"{index}: out-of-distribution score {calibration['method']} ({calibration['description']}), "
              f"threshold {calibration['threshold']:.6g}, target at most {calibration['target_false_warning']:.0%} "
              f"of library-like queries warned (conformal bound {calibration['false_warning_bound']:.1%}).")
        write(f"Held out: {held['n']} library images of {held['lesions']} lesions {held['per_source']} "
              f"(select {held['select']} / report {held['report']}); evaluation set: {evaluation['n']} images "
              f"{evaluation['per_kind']} (select {evaluation['select']} / report {evaluation['report']}).")
        kinds = list(calibration["ood_warned_per_kind"])
        write("Report half (the choice and the thresholds used the select half only):")
        write(f"{'score':<13} {'threshold':>11} {'AUROC':>6} {'OOD warned':>10} {'ID warned':>9}  "
              + "  ".join(f"{kind:>8}" for kind in kinds) + "   select: AUROC, per-kind mean warned")

        def pct(value):
            return "-" if value is None else f"{value:.1%}"

        def num(value):
            return "-" if value is None else f"{value:.3f}"

        for name, figures in calibration["candidates"].items():
            report, select = figures["report"], figures["select"]
            mark = "*" if name == calibration["method"] else " "
            write(f"{mark}{name:<12} {figures['threshold']:>11.5g} {num(report['auroc']):>6} "
                  f"{pct(report['ood_warned']):>10} {pct(report['id_warned']):>9}  "
                  + "  ".join(f"{pct(report['ood_warned_per_kind'].get(kind)):>8}" for kind in kinds)
                  + f"   {num(select['auroc'])}, {pct(select['ood_warned_macro'])}")
        write("Report-half evaluation images not warned by the chosen score: "
              + (", ".join(calibration.get("not_warned") or []) or "none"))
