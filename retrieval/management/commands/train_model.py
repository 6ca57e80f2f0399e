from __future__ import annotations

import csv
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from retrieval.models import ModelVersion


class Command(BaseCommand):
    help = (
        "Train the SE-CBIR classifiers on the library's train/val split: the 3-channel model, the 4-channel "
        "(RGB + saliency) model widened from it, or both; or a metric-learning embedding: --stage contrastive "
        "(siamese network, contrastive loss on image pairs, paper 002) or --stage triplet (triplet loss with "
        "global average pooling, paper 004), from ImageNet weights or, with --parent, from a trained "
        "3-channel model's backbone; similar = same class, or with --groups CSV (image_id,group) the same "
        "similarity group, with paper 004's hierarchical triplet selection. Each trained stage is registered "
        "as a ModelVersion (an index build picks up the newest contrastive/triplet model). "
        "--profile picks epochs per stage, batch size and learning-rate schedule (thesis: the thesis recipe; "
        "demo: the few-minute CPU run of make run); explicit --epochs, --batch-size and --config override it. "
        "--saliency integrated trains the 4-channel model on integrated-gradient maps (recorded on its "
        "ModelVersion; evaluation and indexing then use the same maps); --stem-init zero starts the 4-channel "
        "model as exactly the 3-channel one."
    )

    def add_arguments(self, parser):
        from retrieval.ml.configs import config_names
        from retrieval.ml.profiles import DEFAULT_PROFILE, TRAINING_PROFILES

        parser.add_argument("--profile", default=DEFAULT_PROFILE, choices=list(TRAINING_PROFILES),
                            help="training profile (default: %(default)s)")
        parser.add_argument("--config", choices=config_names(),
                            help="model config (default: the profile's: " + ", ".join(
                                f"{p.name} {p.config}" for p in TRAINING_PROFILES.values()) + ")")
        parser.add_argument("--stage", default="both", choices=["3ch", "4ch", "both", "contrastive", "triplet"],
                            help="3ch, 4ch or both: the SE-CBIR classifiers; contrastive or triplet: a "
                                 "metric-learning embedding (default: %(default)s)")
        parser.add_argument("--epochs", type=int, help="epochs of every trained stage (default: the profile's)")
        parser.add_argument("--batch-size", type=int, help="default: the profile's")
        parser.add_argument("--device", default=settings.TORCH_DEVICE, choices=["auto", "cpu", "cuda"])
        parser.add_argument("--resume", type=Path, help="a *-last.pt checkpoint of an interrupted run of the first stage")
        parser.add_argument("--parent", type=int, help="ModelVersion id of the 3-channel model (for --stage 4ch; "
                                                       "default: the newest of this config and collection; for "
                                                       "contrastive/triplet: start from its backbone instead of "
                                                       "ImageNet weights)")
        parser.add_argument("--groups", type=Path, metavar="CSV",
                            help="contrastive/triplet: similarity groups, a CSV with columns image_id,group; "
                                 "similar images are siblings of one group (within a diagnosis), training "
                                 "images without a group are not sampled (default: similar = same class)")
        parser.add_argument("--non-hierarchical", action="store_true",
                            help="with --groups: take dissimilar images from any other group, same-diagnosis "
                                 "cousins included (default: hierarchical, other diagnoses only)")
        parser.add_argument("--margin", type=float, help="contrastive/triplet loss margin (default: 1)")
        parser.add_argument("--collection", help="case collection (default: the only one in the library)")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--lr", type=float, help="base learning rate (default: the thesis value of the stage; "
                                                    "5e-3 for contrastive/triplet)")
        parser.add_argument("--workers", type=int, default=4, help="DataLoader workers (CUDA only)")
        parser.add_argument("--saliency", choices=["vanilla", "integrated"],
                            help="4-channel stage: the saliency maps it trains on (default: vanilla gradient, the "
                                 "thesis's; integrated: integrated gradients, then evaluate and index with the same)")
        parser.add_argument("--ig-steps", type=int, help="with --saliency integrated: number of steps (default 32)")
        parser.add_argument("--ig-baseline", choices=["black", "grey"],
                            help="with --saliency integrated: baseline image (default black)")
        parser.add_argument("--stem-init", choices=["mean", "zero"],
                            help="4-channel stage: how the saliency filter of the widened stem starts: mean of the "
                                 "RGB filters, or zero (the 4-channel model then starts as exactly the 3-channel "
                                 "one); default: see docs/retrieval.md, 'Stem initialisation'")

    def handle(self, *args, **o):
        from retrieval.ml.profiles import get_profile
        from retrieval.selectors import default_collection
        from retrieval.services import model_train

        if (o["epochs"] is not None and o["epochs"] < 1) or (o["batch_size"] is not None and o["batch_size"] < 1):
            raise CommandError("--epochs and --batch-size must be at least 1")
        profile = get_profile(o["profile"])
        o["config"] = o["config"] or profile.config
        if o["resume"] and not o["resume"].is_file():
            raise CommandError(f"--resume {o['resume']}: no such file")
        try:
            collection = o["collection"] or default_collection()
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        if o["stage"] in ("contrastive", "triplet"):
            if any(o[key] is not None for key in FOUR_CHANNEL_OPTIONS):
                raise CommandError("--saliency, --ig-steps, --ig-baseline and --stem-init are options of the "
                                   "4-channel stage (--stage 4ch or both)")
            return self.train_embedding(o, profile, collection)
        if o["groups"] or o["non_hierarchical"] or o["margin"] is not None:
            raise CommandError("--groups, --non-hierarchical and --margin are options of --stage contrastive|triplet")
        stages = ["3ch", "4ch"] if o["stage"] == "both" else [o["stage"]]
        four_channel = four_channel_options(o, stages)
        parent = None
        if stages == ["4ch"]:
            parents = ModelVersion.objects.filter(stage="3ch", config=o["config"], collection=collection)
            parent = parents.filter(id=o["parent"]).first() if o["parent"] else parents.first()
            if parent is None:
                raise CommandError(f"no 3-channel {o['config']} model for {collection!r}; train --stage 3ch first")
        explicit = {key: o[key] for key in ("epochs", "batch_size") if o[key] is not None}
        try:
            options = profile.stage_options(stages, seed=o["seed"], device=o["device"], num_workers=o["workers"],
                                            lr=o["lr"], progress=o["verbosity"] > 0, **explicit, **four_channel)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        if o["verbosity"] > 0:
            plan = ", ".join(f"{stage} {options[stage].epochs} epochs" for stage in stages)
            four = ""
            if "4ch" in stages:
                chosen = options["4ch"]
                four = f"; 4-channel stage: {chosen.saliency_options['method']} saliency maps, {chosen.stem_init} stem"
            self.stdout.write(f"Training {o['config']} on {collection!r}, profile {profile.name}: {plan}, "
                              f"batch {options[stages[0]].batch_size}{four}")
        work_dir = Path(settings.MEDIA_ROOT) / "training" / f"{o['config']}-{collection}-seed{o['seed']}"
        try:
            versions = model_train(config_name=o["config"], stages=stages, collection=collection, options=options,
                                   resume=o["resume"], parent=parent, work_dir=work_dir)
        except (ValueError, RuntimeError) as exc:
            raise CommandError(str(exc)) from None
        for version in versions:
            m = version.metrics
            self.stdout.write(f"{version}: validation accuracy {m['accuracy']:.3f}, macro sensitivity "
                              f"{m['macro_sensitivity']:.3f} (epoch {m['epoch']}); {version.weights_source}")

    def train_embedding(self, o, profile, collection: str) -> None:
        """--stage contrastive|triplet: train the embedding and register it like the classifiers."""
        from retrieval.ml.configs import get_config
        from retrieval.ml.train import data_fingerprint, train_embedding
        from retrieval.services.library import _register_model, training_items

        stage = o["stage"]
        if o["resume"]:
            raise CommandError(f"--resume is not supported for --stage {stage}")
        if o["margin"] is not None and o["margin"] <= 0:
            raise CommandError("--margin must be positive")
        if o["non_hierarchical"] and not o["groups"]:
            raise CommandError("--non-hierarchical needs --groups")
        parent = None
        if o["parent"] is not None:
            parent = ModelVersion.objects.filter(id=o["parent"], stage="3ch", config=o["config"],
                                                 collection=collection).first()
            if parent is None:
                raise CommandError(f"--parent {o['parent']}: no 3-channel {o['config']} model of {collection!r} "
                                   "with that id")
        groups = read_groups(o["groups"], collection) if o["groups"] else None
        explicit = {key: o[key] for key in ("epochs", "batch_size") if o[key] is not None}
        options = profile.options(stage, seed=o["seed"], device=o["device"], num_workers=o["workers"], lr=o["lr"],
                                  progress=o["verbosity"] > 0, **explicit)
        try:
            train, val = training_items(collection=collection)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        if groups is not None:
            grouped = sum(item.key in groups for item in train)
            if o["verbosity"] > 0:
                self.stdout.write(f"Similarity groups: {grouped} of {len(train)} training images in "
                                  f"{len(set(groups.values()))} groups ({'non-' if o['non_hierarchical'] else ''}"
                                  "hierarchical selection)")
        if o["verbosity"] > 0:
            start = f"the backbone of {parent}" if parent else "ImageNet weights"
            self.stdout.write(f"Training a {stage} embedding of {o['config']} on {collection!r} from {start}, "
                              f"profile {profile.name}: {options.epochs} epochs, batch {options.batch_size}")
        work_dir = Path(settings.MEDIA_ROOT) / "training" / f"{o['config']}-{collection}-seed{o['seed']}"
        try:
            result = train_embedding(stage, get_config(o["config"]), train, val, work_dir, options=options,
                                     groups=groups, init_checkpoint=Path(parent.checkpoint.path) if parent else None,
                                     hierarchical=not o["non_hierarchical"], margin=o["margin"])
        except (ValueError, RuntimeError) as exc:
            raise CommandError(str(exc)) from None
        version = _register_model(config=o["config"], stage=stage, collection=collection, result=result,
                                  parent=parent, options=options, fingerprint=data_fingerprint(train, val))
        m = version.metrics
        val_loss = f", loss {m['val_loss']:.4f}" if "val_loss" in m else ""
        cutoffs = ", ".join(f"P@{k} {m[f'precision_at_{k}']:.3f}" for k in (1, 3, 6, 9) if f"precision_at_{k}" in m)
        self.stdout.write(f"{version}: validation AP@6 {m.get('ap_at_6', float('nan')):.3f}, {cutoffs}{val_loss} "
                          f"(epoch {m['epoch']}); {version.weights_source}")


#: train_model options of the 4-channel stage -> TrainOptions fields.
FOUR_CHANNEL_OPTIONS = {"saliency": "saliency", "ig_steps": "ig_steps", "ig_baseline": "ig_baseline",
                        "stem_init": "stem_init"}


def four_channel_options(o: dict, stages: list[str]) -> dict:
    """The explicitly given 4-channel options as TrainOptions overrides; refused without a 4ch stage,
    and the IG options without --saliency integrated."""
    given = {field: o[key] for key, field in FOUR_CHANNEL_OPTIONS.items() if o[key] is not None}
    if given and "4ch" not in stages:
        raise CommandError("--saliency, --ig-steps, --ig-baseline and --stem-init are options of the 4-channel "
                           "stage (--stage 4ch or both)")
    if (o["ig_steps"] is not None or o["ig_baseline"] is not None) and o["saliency"] != "integrated":
        raise CommandError("--ig-steps and --ig-baseline need --saliency integrated")
    if o["ig_steps"] is not None and o["ig_steps"] < 1:
        raise CommandError("--ig-steps must be at least 1")
    return given


def read_groups(path: Path, collection: str) -> dict[str, str]:
    """``image_id,group`` rows -> {case sha256 (the training items' key): group}; CommandError on bad input."""
    from retrieval.models import Case

    if not path.is_file():
        raise CommandError(f"--groups {path}: no such file")
    groups: dict[str, str] = {}
    with open(path, newline="", encoding="utf-8-sig") as handle:
        for number, row in enumerate(csv.reader(handle), start=1):
            if not row or not any(cell.strip() for cell in row):
                continue
            cells = [cell.strip() for cell in row]
            if number == 1 and [c.lower() for c in cells[:2]] == ["image_id", "group"]:
                continue
            if len(cells) != 2 or not cells[0] or not cells[1]:
                raise CommandError(f"--groups {path}, line {number}: expected image_id,group, got {row!r}")
            image_id, group = cells
            if groups.get(image_id, group) != group:
                raise CommandError(f"--groups {path}, line {number}: {image_id} is in two groups "
                                   f"({groups[image_id]!r} and {group!r})")
            groups[image_id] = group
    if not groups:
        raise CommandError(f"--groups {path}: no rows")
    keys = dict(Case.objects.filter(collection=collection, image_id__in=list(groups))
                .values_list("image_id", "sha256"))
    unknown = sorted(set(groups) - set(keys))
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise CommandError(f"--groups {path}: {len(unknown)} image id(s) not in collection {collection!r}: {shown}")
    return {keys[image_id]: group for image_id, group in groups.items()}
