"""Multi-reader multi-case analysis of ratings collected anywhere (readerstudy.analysis.mrmc).

Input: a CSV ``reader,treatment,case,truth,rating`` (MRMCaov's column names; truth 0/1; for
``--fom accuracy`` the rating is 1 correct / 0 wrong). The file and its design are checked in
full before anything is written: a malformed file is refused with every offending line, a
design the analysis cannot take with the reason and the designs it takes. No database needed.
"""
from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from lesionsearch.audit import services as audit
from readerstudy.analysis.endpoints import planned_sample_size
from readerstudy.analysis.mrmc import DesignRefused, RatingsInvalid, analyse, parse_ratings
from readerstudy.analysis.mrmc.analysis import DEFAULT_ALPHA
from readerstudy.analysis.mrmc.fom import COVARIANCES, DEFAULT_THRESHOLD, FIGURES_OF_MERIT
from readerstudy.analysis.mrmc.power import DEFAULT_POWER
from readerstudy.analysis.mrmc.report import FORMATS, render_files
from readerstudy.management.files import read_text, refused, write_atomically


class Command(BaseCommand):
    help = (
        "Obuchowski-Rockette MRMC analysis (Hillis degrees of freedom; random and fixed readers and cases; DBM "
        "view; sample size for a next study) of a ratings CSV reader,treatment,case,truth,rating. Writes "
        "mrmc.json, mrmc.md, CSV tables and PNG figures into a folder; refuses a malformed file with every "
        "offending line and writes nothing."
    )
    requires_system_checks = []  # works without a database

    def add_arguments(self, parser):
        parser.add_argument("--ratings", type=Path, required=True, metavar="FILE.csv")
        parser.add_argument("--out", type=Path, required=True, metavar="DIR")
        parser.add_argument("--format", default=",".join(FORMATS), dest="formats", metavar="F1,F2",
                            help=f"comma-separated, of {','.join(FORMATS)} (default all)")
        parser.add_argument("--fom", default="auc", choices=list(FIGURES_OF_MERIT),
                            help="figure of merit (default auc)")
        parser.add_argument("--covariance", default="jackknife", choices=list(COVARIANCES),
                            help="covariance estimate (default jackknife; delong for the AUC of a factorial design)")
        parser.add_argument("--alpha", type=float, default=DEFAULT_ALPHA, help="two-sided level (default 0.05)")
        parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                            help="sensitivity/specificity: a rating at or above it counts as positive "
                                 f"(default {DEFAULT_THRESHOLD})")
        parser.add_argument("--effect", type=float, default=None,
                            help="difference to plan the next study for (default: the observed one)")
        parser.add_argument("--power", type=float, default=DEFAULT_POWER, dest="target_power",
                            help=f"target power of the planned study (default {DEFAULT_POWER})")

    def handle(self, *args, ratings: Path, out: Path, formats: str, fom: str, covariance: str, alpha: float,
               threshold: float, effect: float | None, target_power: float, **options):
        chosen = [name.strip() for name in formats.split(",") if name.strip()]
        unknown = [name for name in chosen if name not in FORMATS]
        if unknown or not chosen:
            raise CommandError(f"--format: {'unknown ' + ', '.join(map(repr, unknown)) if unknown else 'none given'};"
                               f" valid: {', '.join(FORMATS)}")
        if not 0 < alpha < 1:
            raise CommandError("--alpha: must be between 0 and 1")
        if not 0 < target_power < 1:
            raise CommandError("--power: must be between 0 and 1")
        if effect is not None and effect <= 0:
            raise CommandError("--effect: must be a positive difference")
        if out.exists() and not out.is_dir():
            raise CommandError(f"--out {out}: exists and is not a folder")
        text = read_text(ratings)
        try:
            rows = parse_ratings(text)
            result = analyse(rows, fom=fom, covariance=covariance, alpha=alpha, threshold=threshold)
        except RatingsInvalid as exc:
            raise refused(ratings, exc, exc.errors) from None
        except DesignRefused as exc:
            raise CommandError(f"{ratings} cannot be analysed; nothing was written: {exc}") from None
        result["sample_size"] = planned_sample_size(result, effect=effect, target_power=target_power)
        files = render_files(result, rows, [f for f in FORMATS if f in chosen], title=f"MRMC analysis of {ratings.name}")

        def write(folder: Path) -> list[Path]:
            for name, content in files.items():
                (folder / name).write_bytes(content)
            return [folder / name for name in files]

        paths = write_atomically(out, write)
        not_audited = audit.record_if_database(
            audit.Action.STUDY_EXPORT, object_type="ratings file", object_id=ratings.name,
            detail={"ratings": str(ratings.absolute()), "out": str(out.absolute()), "fom": fom,
                    "covariance": covariance, "files": len(paths)})
        rrrc = result["random_readers_random_cases"]
        self.stdout.write(f"{result['n_readers']} readers, {result['n_treatments']} treatments, {result['n_cases']} "
                          f"cases; design {result['design']}; {fom}, {covariance} covariance.")
        for name, values in result["treatments"].items():
            self.stdout.write(f"  {name}: {values['fom']:.4f}")
        if rrrc["F"] is not None:
            self.stdout.write(f"Random readers and cases: F({rrrc['ndf']}, {rrrc['ddf']:.2f}) = {rrrc['F']:.4f}, "
                              f"p = {rrrc['p']:.4g}")
        else:
            self.stdout.write(f"Random readers and cases: not available ({rrrc['note']}).")
        self.stdout.write(f"Wrote {len(paths)} files into {out}: {', '.join(path.name for path in paths)}")
        if not_audited:
            self.stdout.write(f"Not recorded in the audit log: {not_audited}.")
