"""Quantitative retrieval evaluation (P@k per class, AP@k): the thesis's Table 4.I.

Two sources of ``results`` (method name -> (scores, lesion-aware scores)) share one output
step: the project's own SE-CBIR model and its 3-channel baseline (default: the newest
4-channel ModelVersion; queries = test split, retrieval set = train + val), or external runs
(``--run NAME=RUN.csv --metadata META.csv``). For the project's models the classifiers'
accuracy and macro sensitivity on the test split (Table 3.I) are reported too.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from retrieval.ham10000 import MetadataError
from retrieval.methods import METHODS
from retrieval.ml.metrics import DEFAULT_KS, RetrievalScores, validate_ks
from retrieval.ml.report import Results, plot_precision_vs_k, to_csv, to_json, to_markdown
from retrieval.ml.runs import RunError, load_metadata, parse_run, score_run

FORMATS = ("md", "csv", "json")
DEFAULT_FORMAT = "md"
OUTPUT_FILES = {"md": "results.md", "csv": "results.csv", "json": "results.json"}
PLOT_FILE = "precision_at_k.png"
JSON_INDENT = 2
# Names end up in CSV cells and Markdown tables: keep out ',', '|', '=' and line breaks.
RUN_NAME = re.compile(r"^[\w.+\-()]([\w.+\-() ]{0,38}[\w.+\-()])?$")
NO_MODEL = "no trained SE-CBIR model yet: run train_model first, or score external runs with --run NAME=RUN.csv"


class Command(BaseCommand):
    help = (
        "P@k per class and AP@k (macro mean over classes), standard and lesion-aware, for external "
        "retrieval runs (CSV: query_id,rank,neighbour_id[,score]) scored against HAM10000 metadata. "
        "Problems found in the runs are reported on stderr, one per line, prefixed with the run name."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--run", action="append", default=[], dest="runs", metavar="NAME=RUN.csv",
            help="an external run to score, under the method name NAME (repeat for several runs)",
        )
        parser.add_argument("--metadata", type=Path, help="HAM10000 metadata CSV giving each image's class and lesion")
        parser.add_argument(
            "--k", nargs="+", type=int, default=list(DEFAULT_KS), dest="ks",
            help=f"cut-offs (default {' '.join(map(str, DEFAULT_KS))}, as in the thesis)",
        )
        parser.add_argument("--model-version", type=int, help="id of the 4-channel ModelVersion to evaluate "
                                                              "(default: the newest)")
        parser.add_argument("--device", default=None, choices=["auto", "cpu", "cuda"],
                            help="where the models run (default: the TORCH_DEVICE setting)")
        parser.add_argument("--methods", default="all",
                            help="comma-separated retrieval methods to score side by side, or 'all' (default): every "
                                 f"method ({', '.join(METHODS)}); contrastive and triplet only when such a model "
                                 "is trained (else they are listed as skipped)")
        parser.add_argument("--segmentation-model", type=int, metavar="V",
                            help="learned segmentation ModelVersion for the Dice methods (default: classical "
                                 "segmentation)")
        parser.add_argument("--saliency", choices=["vanilla", "integrated"], default="vanilla",
                            help="saliency method for the 4-channel input (default: vanilla gradient, as in the thesis)")
        parser.add_argument("--ig-steps", type=int, default=32, help="integrated gradients: number of steps")
        parser.add_argument("--ig-baseline", choices=["black", "grey"], default="black",
                            help="integrated gradients: baseline image")
        parser.add_argument("--format", choices=FORMATS, default=DEFAULT_FORMAT, dest="output_format",
                            help=f"table format on stdout (default {DEFAULT_FORMAT})")
        parser.add_argument("--out", type=Path,
                            help=f"folder to write {', '.join(OUTPUT_FILES.values())} and {PLOT_FILE} into")

    def handle(self, *args, runs: list[str], metadata: Path | None, ks: list[int], output_format: str,
               out: Path | None, model_version: int | None, device: str | None, **options):
        try:
            cutoffs = validate_ks(ks)
        except ValueError as exc:
            raise CommandError(f"--k: {exc}") from None
        classifiers = None
        if runs:
            results = self.score_external_runs(runs, metadata, cutoffs)
        else:
            saliency = {"method": options["saliency"], "ig_steps": options["ig_steps"],
                        "ig_baseline": options["ig_baseline"]}
            results, classifiers = self.evaluate_own_model(model_version, cutoffs, device, options["verbosity"] > 0,
                                                           saliency, options["methods"],
                                                           options["segmentation_model"])
        self.write_results(results, output_format, out, classifiers)

    def evaluate_own_model(self, version_id: int | None, cutoffs: list[int], device: str | None, progress: bool,
                           saliency: dict, method_names: str = "all", segmentation_id: int | None = None):
        """The retrieval methods of one 4-channel ModelVersion side by side, and its classifiers."""
        from django.conf import settings

        from retrieval.evaluation import evaluate_model
        from retrieval.models import ModelVersion

        versions = ModelVersion.objects.filter(stage=ModelVersion.Stage.RGB_SALIENCY).select_related("parent")
        version = versions.filter(id=version_id).first() if version_id else versions.first()
        if version is None:
            raise CommandError(f"no 4-channel ModelVersion {version_id}" if version_id else NO_MODEL)
        segmentation = None
        if segmentation_id is not None:
            segmentation = ModelVersion.objects.filter(id=segmentation_id, stage=ModelVersion.Stage.SEGMENTATION).first()
            if segmentation is None:
                raise CommandError(f"--segmentation-model: no segmentation ModelVersion #{segmentation_id}")
        newest = {stage: ModelVersion.objects.filter(stage=stage, collection=version.collection)
                  .order_by("-created_at", "-id").first() for stage in ("contrastive", "triplet")}
        if method_names.strip() == "all":
            methods = [name for name in METHODS if name not in newest or newest[name] is not None]
            skipped = [name for name in newest if newest[name] is None]
            if skipped:
                self.stderr.write(f"skipped {', '.join(skipped)}: no trained model for {version.collection!r} "
                                  "(train_model --stage contrastive|triplet)")
        else:
            methods = [name.strip() for name in method_names.split(",") if name.strip()]
            unknown = [name for name in methods if name not in METHODS]
            if unknown or not methods:
                raise CommandError(f"--methods: unknown {', '.join(unknown) or '(none given)'}; "
                                   f"choose from {', '.join(METHODS)} or 'all'")
        try:
            evaluation = evaluate_model(version, ks=cutoffs, device=device or settings.TORCH_DEVICE, progress=progress,
                                        methods=methods, contrastive=newest["contrastive"],
                                        triplet=newest["triplet"], segmentation=segmentation,
                                        style_components=settings.STYLE_COMPONENTS,
                                        **saliency)
        except (ValueError, RuntimeError) as exc:
            raise CommandError(str(exc)) from None
        self.stderr.write(f"{version} on {version.collection!r}: {evaluation.n_queries} test queries, "
                          f"{evaluation.n_library} train + val images to retrieve from")
        for name, milliseconds in (evaluation.cost or {}).items():
            self.stderr.write(f"  {name}: {milliseconds:.2f} ms scoring per query (descriptors precomputed)")
        return {name: evaluation.results[name] for name in methods}, evaluation.classification

    def score_external_runs(self, specs: list[str], metadata: Path | None, cutoffs: list[int]) -> Results:
        """Parse and score each ``NAME=RUN.csv``, standard and lesion-aware, reporting problems."""
        runs = parse_run_specs(specs)
        if metadata is None:
            raise CommandError("--metadata META.csv is needed to know the class and lesion of each image in the runs")
        try:
            rows, problems = load_metadata(metadata)
        except MetadataError as exc:
            raise CommandError(str(exc)) from None
        self.report("metadata", problems)
        results: dict[str, tuple[RetrievalScores, RetrievalScores | None]] = {}
        for name, path in runs.items():
            try:
                parsed = parse_run(path, name, rows.keys())
                self.report(name, parsed.problems)
                scores, standard_problems = score_run(parsed, rows, cutoffs, lesion_aware=False)
                lesion_aware, lesion_problems = score_run(parsed, rows, cutoffs, lesion_aware=True)
            except RunError as exc:
                raise CommandError(f"run {name!r}: {exc}") from None
            self.report(name, standard_problems + lesion_problems)
            results[name] = (scores, lesion_aware)
        return results

    def write_results(self, results: Results, output_format: str, out: Path | None, classifiers=None) -> None:
        """The table on stdout in ``output_format``; with ``out``, all formats and the plot as files."""
        document = to_json(results)
        markdown = to_markdown(results)
        if classifiers:
            document["classifiers"] = classifiers_json(classifiers)
            markdown = classifiers_markdown(classifiers) + "\n" + markdown
        texts = {
            "md": markdown,
            "csv": to_csv(results),
            "json": json.dumps(document, indent=JSON_INDENT) + "\n",
        }
        self.stdout.write(texts[output_format], ending="")
        if out is None:
            return
        try:
            out.mkdir(parents=True, exist_ok=True)
            for fmt, filename in OUTPUT_FILES.items():
                (out / filename).write_text(texts[fmt], encoding="utf-8")
            plot_precision_vs_k(results, out / PLOT_FILE)
        except OSError as exc:
            raise CommandError(f"cannot write results into {out}: {exc.strerror or exc}") from None

    def report(self, source: str, problems: list[str]) -> None:
        for problem in problems:
            self.stderr.write(f"{source}: {problem}")


def parse_run_specs(specs: list[str]) -> dict[str, Path]:
    """``NAME=RUN.csv`` arguments as {name: path}, refusing bad names, duplicates and missing files."""
    runs: dict[str, Path] = {}
    for spec in specs:
        name, separator, path_text = spec.partition("=")
        name = name.strip()
        if not separator or not name or not path_text:
            raise CommandError(f"--run {spec!r}: expected NAME=RUN.csv")
        if not RUN_NAME.match(name):
            raise CommandError(
                f"--run {spec!r}: run name {name!r} may use letters, digits, spaces and _ . + - ( ) only "
                "(at most 40 characters)"
            )
        if name in runs:
            raise CommandError(f"--run {spec!r}: run name {name!r} is used twice; give each run its own name")
        path = Path(path_text)
        if not path.is_file():
            raise CommandError(f"--run {spec!r}: run file {path} not found")
        runs[name] = path
    return runs


def classifiers_json(classifiers: dict) -> dict:
    return {name: {"n": s.n, "accuracy": s.accuracy, "macro_sensitivity": s.macro_sensitivity,
                   "sensitivity": s.sensitivity, "classes": list(s.classes), "confusion": s.confusion.tolist()}
            for name, s in classifiers.items()}


def classifiers_markdown(classifiers: dict) -> str:
    """The thesis's Table 3.I: accuracy and macro-averaged sensitivity of each classifier."""
    lines = ["| Model | Accuracy | Sensitivity |", "|---|---|---|"]
    for name, scores in classifiers.items():
        lines.append(f"| {name} CNN classifier | {scores.accuracy:.2f} | {scores.macro_sensitivity:.2f} |")
    n = next(iter(classifiers.values())).n
    return "\n".join(lines) + f"\n\nClassifiers on the {n} test images (multi-class accuracy, macro sensitivity).\n"
