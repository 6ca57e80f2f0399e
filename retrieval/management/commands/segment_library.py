from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError

from retrieval import selectors
from retrieval.classes import CODES, SPLIT_CHOICES, TEST
from retrieval.models import ModelVersion


class Command(BaseCommand):
    help = (
        "Lesion masks for the Dice similarity measure. 'evaluate' prints the Dice of the classical method "
        "(and of a learned model with --model-version) against the ground-truth masks of a split; 'train' "
        "trains the small U-Net on the train/val cases with masks, registers it as a segmentation "
        "ModelVersion and prints its Dice."
    )

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["evaluate", "train"],
                            help="evaluate: Dice against the ground-truth masks of --split; train: train and "
                                 "register the learned model")
        parser.add_argument("--collection", help="case collection (default: the only one in the library)")
        parser.add_argument("--device", default=settings.TORCH_DEVICE, choices=["auto", "cpu", "cuda"])
        parser.add_argument("--model-version", type=int,
                            help="evaluate: also score this learned segmentation ModelVersion")
        parser.add_argument("--split", default=TEST, choices=[code for code, _ in SPLIT_CHOICES],
                            help="evaluate: the split whose ground-truth masks are compared (default: %(default)s)")
        parser.add_argument("--epochs", type=int, default=10, help="train: epochs (default: %(default)s)")
        parser.add_argument("--seed", type=int, default=0, help="train: random seed (default: %(default)s)")

    def handle(self, *args, **o):
        from retrieval.selectors import default_collection

        try:
            collection = o["collection"] or default_collection()
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        if o["action"] == "train":
            self.train(collection, o)
        else:
            self.evaluate(collection, o)

    def evaluate(self, collection: str, o) -> None:
        from retrieval.loaders import load_segmenter
        from retrieval.services.segmentation import NoMasks, segmentation_evaluate

        versions = [None]
        if o["model_version"] is not None:
            version = selectors.model_version_get(version_id=o["model_version"], stage=ModelVersion.Stage.SEGMENTATION)
            if version is None:
                raise CommandError(f"no segmentation ModelVersion #{o['model_version']}")
            versions.append(version)
        rows = []
        try:
            for version in versions:
                segmenter = load_segmenter(version, device=o["device"])
                rows.append(segmentation_evaluate(collection=collection, segmenter=segmenter, split=o["split"]))
        except NoMasks as exc:
            raise CommandError(str(exc)) from None
        self.write_table(rows)

    def train(self, collection: str, o) -> None:
        from retrieval.loaders import load_segmenter
        from retrieval.services.segmentation import NoMasks, cases_with_masks, segmentation_evaluate, segmentation_train

        if o["epochs"] < 1:
            raise CommandError("--epochs must be at least 1")
        if o["model_version"] is not None or o["split"] != TEST:
            raise CommandError("--model-version and --split are options of 'evaluate'")

        def progress(metrics: dict) -> None:
            if o["verbosity"] > 1:
                self.stdout.write(f"  epoch {metrics['epoch']}: loss {metrics['loss']:.4f}, validation Dice "
                                  f"{metrics['val_dice_mean']:.3f} ({metrics['train_seconds']:.0f} s)")

        try:
            version = segmentation_train(collection=collection, epochs=o["epochs"], seed=o["seed"],
                                         device=o["device"], progress=progress)
        except NoMasks as exc:
            raise CommandError(str(exc)) from None
        except RuntimeError as exc:
            raise CommandError(str(exc)) from None
        except DatabaseError as exc:
            raise CommandError(f"could not register the model ({exc}); is the database migrated (manage.py "
                               f"migrate)?") from None
        m = version.metrics
        self.stdout.write(f"Registered {version}: validation Dice mean {m['val_dice_mean']:.3f}, median "
                          f"{m['val_dice_median']:.3f} (epoch {m['epoch']} of {version.epochs}, {m['n_train']} "
                          f"training and {m['n_val']} validation masks)")
        try:
            cases_with_masks(collection=collection, split=TEST)
        except NoMasks:
            return
        rows = [segmentation_evaluate(collection=collection, segmenter=load_segmenter(v, device=o["device"]),
                                      split=TEST) for v in (None, version)]
        self.write_table(rows)

    def write_table(self, rows: list[dict]) -> None:
        first = rows[0]
        self.stdout.write(f"Lesion segmentation Dice on {first['collection']!r}, split {first['split']} "
                          f"({first['n']} cases with ground-truth masks)")
        codes = [code for code in CODES if code in first["per_class"]]
        name_width = max(10, *(len(row["segmenter"]) for row in rows))
        header = f"{'method':<{name_width}} {'n':>5} {'mean':>6} {'median':>6} " + " ".join(
            f"{code:>6}" for code in codes) + "  no lesion found"
        self.stdout.write(header)
        for row in rows:
            per_class = " ".join(f"{row['per_class'][code]['mean']:>6.3f}" for code in codes)
            self.stdout.write(f"{row['segmenter']:<{name_width}} {row['n']:>5} {row['mean']:>6.3f} "
                              f"{row['median']:>6.3f} {per_class}  {row['not_found']}")
