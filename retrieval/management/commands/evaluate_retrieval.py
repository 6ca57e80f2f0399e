"""Quantitative retrieval evaluation (P@k per class, AP@k): the thesis's Table 4.I.

Two sources of ``results`` (method name -> (scores, lesion-aware scores)) share one output
step: the project's own SE-CBIR model and its 3-channel baseline (default: the newest
4-channel ModelVersion; queries = test split, retrieval set = train + val), or external runs
(``--run NAME=RUN.csv --metadata META.csv``). For the project's models the classifiers'
accuracy and macro sensitivity on the test split (Table 3.I) are reported too, and with them
(``--bootstrap B``, default 2000 replicates; 0 turns it off) lesion-bootstrap intervals of every
figure, paired comparisons of each method with SE-CBIR, each method's neighbour vote next to the
classifiers (accuracy, macro sensitivity, calibration) and how often tied scores decided a rank.
``--library-saliency`` chooses the library's saliency maps (the thesis: the ground-truth class;
``predicted``: the predicted class, as queries get them; ``both``: side by side).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from retrieval.ham10000 import MetadataError
from retrieval.management.options import add_saliency_options
from retrieval.methods import METHODS
from retrieval.ml.metrics import DEFAULT_KS, RetrievalScores, validate_ks
from retrieval.ml.bootstrap import DEFAULT_REPLICATES
from retrieval.ml.report import (
    Results, decisions_csv, decisions_json, decisions_markdown, plot_precision_vs_k, plot_reliability, ties_markdown,
    to_csv, to_json, to_markdown,
)
from retrieval.ml.runs import RunError, load_metadata, parse_run, score_run

FORMATS = ("md", "csv", "json")
DEFAULT_FORMAT = "md"
OUTPUT_FILES = {"md": "results.md", "csv": "results.csv", "json": "results.json"}
PLOT_FILE = "precision_at_k.png"
DECISIONS_FILE = "decisions.csv"
#: One row per (query, method): what the bootstrap resampled, so that runs of different models on
#: the same split can be compared pairwise later (bench/paired_runs.py).
QUERIES_FILE = "queries.csv"
RELIABILITY_FILE = "reliability.png"
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
        add_saliency_options(
            parser, saliency="saliency method for the 4-channel input (default: the one the model was trained on, "
                             "recorded on its ModelVersion; another one is refused)",
            ig_steps="integrated gradients: number of steps (default: the model's)",
            ig_baseline="integrated gradients: baseline image (default: the model's)")
        parser.add_argument("--library-saliency", choices=["truth", "predicted", "both"], default="truth",
                            help="library images' saliency maps for their ground-truth class (default, the thesis), "
                                 "for the 3-channel model's predicted class (as queries get them), or both side by "
                                 "side (SE-CBIR with predicted-class maps as method secbir-predicted)")
        parser.add_argument("--bootstrap", type=int, default=DEFAULT_REPLICATES, metavar="B",
                            help="lesion-bootstrap replicates for intervals and paired tests (default %(default)s; "
                                 "0: none)")
        parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default %(default)s)")
        parser.add_argument("--tie-seed", type=int, default=0,
                            help="seed of the order of equal scores (default %(default)s, as in the product)")
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
        if options["bootstrap"] < 0:
            raise CommandError("--bootstrap must be 0 (no intervals) or a number of replicates")
        if runs:
            results = self.score_external_runs(runs, metadata, cutoffs)
            self.write_results(results, output_format, out)
            return
        saliency = {"method": options["saliency"], "ig_steps": options["ig_steps"],
                    "ig_baseline": options["ig_baseline"]}
        evaluation, methods = self.evaluate_own_model(
            model_version, cutoffs, device, options["verbosity"] > 0, saliency, options["methods"],
            options["segmentation_model"], library_saliency=options["library_saliency"],
            tie_seed=options["tie_seed"])
        results = {name: evaluation.results[name] for name in methods}
        classifiers = evaluation.classification
        uncertainty = decisions = None
        if options["bootstrap"]:
            from retrieval.evaluation import evaluation_uncertainty

            uncertainty, decisions = evaluation_uncertainty(evaluation, replicates=options["bootstrap"],
                                                            seed=options["seed"])
        self.write_results(results, output_format, out, classifiers, uncertainty=uncertainty, decisions=decisions,
                           evaluation=evaluation)

    def evaluate_own_model(self, version_id: int | None, cutoffs: list[int], device: str | None, progress: bool,
                           saliency: dict, method_names: str = "all", segmentation_id: int | None = None, *,
                           library_saliency: str = "truth", tie_seed: int = 0):
        """The retrieval methods of one 4-channel ModelVersion side by side, and its classifiers:
        (ModelEvaluation, the methods' row names in order)."""
        from django.conf import settings

        from retrieval import selectors
        from retrieval.evaluation import (
            LIBRARY_BOTH, METHOD_SECBIR, METHOD_SECBIR_PREDICTED, checked_saliency, evaluate_model, model_stem_init,
        )
        from retrieval.models import ModelVersion

        four_channel = ModelVersion.Stage.RGB_SALIENCY
        version = (selectors.model_version_get(version_id=version_id, stage=four_channel) if version_id
                   else selectors.model_version_newest(stage=four_channel))
        if version is None:
            raise CommandError(f"no 4-channel ModelVersion {version_id}" if version_id else NO_MODEL)
        segmentation = None
        if segmentation_id is not None:
            segmentation = selectors.model_version_get(version_id=segmentation_id, stage=ModelVersion.Stage.SEGMENTATION)
            if segmentation is None:
                raise CommandError(f"--segmentation-model: no segmentation ModelVersion #{segmentation_id}")
        newest = {stage: selectors.model_version_newest(stage=stage, collection=version.collection)
                  for stage in ("contrastive", "triplet")}
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
            record = checked_saliency(version, **saliency)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        if library_saliency == LIBRARY_BOTH:
            if METHOD_SECBIR not in methods:
                methods.insert(0, METHOD_SECBIR)
            methods.insert(methods.index(METHOD_SECBIR) + 1, METHOD_SECBIR_PREDICTED)
        try:
            evaluation = evaluate_model(version, ks=cutoffs, device=device or settings.TORCH_DEVICE, progress=progress,
                                        methods=methods, contrastive=newest["contrastive"],
                                        triplet=newest["triplet"], segmentation=segmentation,
                                        style_components=settings.STYLE_COMPONENTS,
                                        library_saliency=library_saliency, tie_seed=tie_seed, **record)
        except (ValueError, RuntimeError) as exc:
            raise CommandError(str(exc)) from None
        self.stderr.write(f"{version} on {version.collection!r}: {evaluation.n_queries} test queries, "
                          f"{evaluation.n_library} train + val images to retrieve from; {record['method']} saliency "
                          f"maps (as trained), {model_stem_init(version)} stem, library maps: {library_saliency}")
        for name, milliseconds in (evaluation.cost or {}).items():
            self.stderr.write(f"  {name}: {milliseconds:.2f} ms scoring per query (descriptors precomputed)")
        for name, outcome in evaluation.records.items():
            if outcome.ties.tied_ranks:
                self.stderr.write(f"  {name}: ties decided {outcome.ties.tied_ranks} of {outcome.ties.ranks} ranks "
                                  f"({outcome.ties.queries} queries), broken by the seeded tie-break")
        return evaluation, methods

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

    def write_results(self, results: Results, output_format: str, out: Path | None, classifiers=None, *,
                      uncertainty=None, decisions=None, evaluation=None) -> None:
        """The table on stdout in ``output_format``; with ``out``, all formats and the plots as files."""
        document = to_json(results, uncertainty)
        markdown = to_markdown(results, uncertainty)
        if classifiers:
            document["classifiers"] = classifiers_json(classifiers)
            markdown = classifiers_markdown(classifiers) + "\n" + markdown
        if evaluation is not None:
            document["evaluation"] = dict(evaluation.options)
            ties = {name: evaluation.records[name].ties.as_dict() for name in results if name in evaluation.records}
            for name, counts in ties.items():
                document["methods"][name]["ties"] = counts
                document["methods"][name]["vote_k"] = evaluation.options.get("vote_k")
            markdown += "\n" + evaluation_note(evaluation) + "\n" + ties_markdown(ties, document["k"])
        if decisions:
            document["decisions"] = decisions_json(decisions)
            markdown += "\n" + decisions_markdown(decisions, uncertainty.level if uncertainty else 0.95,
                                                   evaluation.options.get("vote_k", 6) if evaluation else 6)
        texts = {
            "md": markdown,
            "csv": to_csv(results, uncertainty),
            "json": json.dumps(document, indent=JSON_INDENT) + "\n",
        }
        self.stdout.write(texts[output_format], ending="")
        if out is None:
            return
        try:
            out.mkdir(parents=True, exist_ok=True)
            for fmt, filename in OUTPUT_FILES.items():
                (out / filename).write_text(texts[fmt], encoding="utf-8")
            plot_precision_vs_k(results, out / PLOT_FILE, uncertainty)
            if evaluation is not None:
                (out / QUERIES_FILE).write_text(queries_csv(evaluation, list(results)), encoding="utf-8")
            if decisions:
                (out / DECISIONS_FILE).write_text(decisions_csv(decisions), encoding="utf-8")
                plot_reliability(decisions, out / RELIABILITY_FILE)
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


def queries_csv(evaluation, methods: list[str]) -> str:
    """Per query and method: P@k (standard, lesion-aware), the vote and its share, and the two
    classifiers' predictions and top softmax probabilities."""
    import csv
    import io

    ks = evaluation.ks
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["image_id", "lesion_id", "dx", "method", *(f"p_at_{k}" for k in ks),
                     *(f"p_at_{k}_lesion_aware" for k in ks), "vote", "vote_share", "predicted_3ch", "confidence_3ch",
                     "predicted_4ch", "confidence_4ch"])
    for name in methods:
        record = evaluation.records[name]
        for i, image_id in enumerate(evaluation.query_ids):
            writer.writerow([image_id, evaluation.query_lesions[i], evaluation.query_labels[i], name,
                             *map(repr, record.hits[i].tolist()), *map(repr, record.hits_lesion_aware[i].tolist()),
                             record.vote[i], repr(float(record.vote_share[i])),
                             evaluation.predicted["3-channel"][i], repr(float(evaluation.confidence["3-channel"][i])),
                             evaluation.predicted["4-channel"][i], repr(float(evaluation.confidence["4-channel"][i]))])
    return buffer.getvalue()


def evaluation_note(evaluation) -> str:
    """One line saying what was evaluated how (model, saliency maps, stem, library maps, seeds)."""
    o = evaluation.options
    saliency = o["saliency"]
    how = saliency["method"] if saliency["method"] == "vanilla" else (
        f"integrated gradients ({saliency['ig_steps']} steps, {saliency['ig_baseline']} baseline)")
    library = {"truth": "ground-truth class", "predicted": "predicted class",
               "both": "ground-truth class (secbir) and predicted class (secbir-predicted)"}[o["library_saliency"]]
    return (f"Model #{o['model_version']}: {how} saliency maps, {o['stem_init']} stem init; library saliency maps for "
            f"the {library}; queries' maps for the predicted class; {evaluation.n_queries} test queries, "
            f"{evaluation.n_library} library images; tie seed {o['tie_seed']}.\n")


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
