from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from retrieval import selectors
from retrieval.management.options import add_saliency_options


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
        add_saliency_options(
            parser, saliency="4-channel stage: the saliency maps it trains on (default: vanilla gradient, the "
                             "thesis's; integrated: integrated gradients, then evaluate and index with the same)",
            ig_steps="with --saliency integrated: number of steps (default 32)",
            ig_baseline="with --saliency integrated: baseline image (default black)")
        parser.add_argument("--queue", action="store_true",
                            help="queue the training as a background job of the worker instead of training in this "
                                 "process (progress per epoch in the admin and with --status; a killed worker's "
                                 "job resumes from its last epoch)")
        parser.add_argument("--add-to-index", action="store_true",
                            help="with --queue and --stage contrastive|triplet: once trained, add the embedding to "
                                 "the active index (only its vectors are encoded; the method is then served)")
        parser.add_argument("--status", type=int, metavar="JOB",
                            help="show a queued training job's status and progress, and exit")
        parser.add_argument("--stem-init", choices=["mean", "zero"],
                            help="4-channel stage: how the saliency filter of the widened stem starts: mean of the "
                                 "RGB filters, or zero (the 4-channel model then starts as exactly the 3-channel "
                                 "one); default: see docs/retrieval.md, 'Stem initialisation'")

    def handle(self, *args, **o):
        from retrieval.services.training import REQUEST_DEFAULTS, training_plan, training_queue

        if o["status"] is not None:
            return self.show_status(o["status"])
        if o["resume"] and not o["resume"].is_file():
            raise CommandError(f"--resume {o['resume']}: no such file")
        if o["add_to_index"] and not o["queue"]:
            raise CommandError("--add-to-index is for a queued training (--queue)")
        if o["resume"] and o["queue"]:
            raise CommandError("--resume is for a run in this process; a queued training resumes by itself")
        request = {key: o[key] for key in REQUEST_DEFAULTS}
        if o["groups"]:
            request["groups"] = str(o["groups"])  # a CSV file; the plan reads it
        try:
            if o["queue"]:
                job = training_queue(request=request)
            else:
                plan = training_plan(request)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        if o["queue"]:
            self.stdout.write(f"Queued training job {job.id}: {job.message.removeprefix('waiting for the worker: ')}. "
                              "The worker trains it one epoch at a time; follow it in the admin (Training jobs) or "
                              f"with `train_model --status {job.id}`.")
            return
        work_dir = Path(settings.MEDIA_ROOT) / "training" / f"{plan.config}-{plan.collection}-seed{o['seed']}"
        for options in plan.options.values():
            options.progress = o["verbosity"] > 0
        try:
            if plan.embedding:
                self.train_embedding(o, plan, work_dir)
            else:
                self.train_classifiers(o, plan, work_dir)
        except (ValueError, RuntimeError) as exc:
            raise CommandError(str(exc)) from None

    def show_status(self, job_id: int) -> None:
        from retrieval.services.training import training_refresh

        job = selectors.training_job_get(job_id=job_id)
        if job is None:
            raise CommandError(f"no training job {job_id}")
        job = training_refresh(job)
        versions = ", ".join(str(v) for v in job.model_versions.order_by("id")) or "none yet"
        self.stdout.write(f"Training job {job.id} ({job.config} {job.stage} on {job.collection!r}): {job.status}, "
                          f"{job.done} of {job.total} epochs; {job.message or 'no message'}; models: {versions}")

    def train_classifiers(self, o, plan, work_dir: Path) -> None:
        from retrieval.services.training import model_train

        if o["verbosity"] > 0:
            plan_text = ", ".join(f"{stage} {plan.options[stage].epochs} epochs" for stage in plan.stages)
            four = ""
            if "4ch" in plan.stages:
                chosen = plan.options["4ch"]
                four = f"; 4-channel stage: {chosen.saliency_options['method']} saliency maps, {chosen.stem_init} stem"
            self.stdout.write(f"Training {plan.config} on {plan.collection!r}, profile {plan.profile}: {plan_text}, "
                              f"batch {plan.options[plan.stages[0]].batch_size}{four}")
        versions = model_train(config_name=plan.config, stages=plan.stages, collection=plan.collection,
                               options=plan.options, resume=o["resume"], parent=plan.parent, work_dir=work_dir)
        for version in versions:
            m = version.metrics
            self.stdout.write(f"{version}: validation accuracy {m['accuracy']:.3f}, macro sensitivity "
                              f"{m['macro_sensitivity']:.3f} (epoch {m['epoch']}); {version.weights_source}")

    def train_embedding(self, o, plan, work_dir: Path) -> None:
        """--stage contrastive|triplet: train the embedding and register it like the classifiers."""
        from retrieval.services.training import embedding_train, training_items

        stage, options, groups = plan.stage, plan.options[plan.stage], plan.groups
        train, _ = training_items(collection=plan.collection)
        if groups is not None and o["verbosity"] > 0:
            grouped = sum(item.key in groups for item in train)
            self.stdout.write(f"Similarity groups: {grouped} of {len(train)} training images in "
                              f"{len(set(groups.values()))} groups ({'non-' if o['non_hierarchical'] else ''}"
                              "hierarchical selection)")
        if o["verbosity"] > 0:
            start = f"the backbone of {plan.parent}" if plan.parent else "ImageNet weights"
            self.stdout.write(f"Training a {stage} embedding of {plan.config} on {plan.collection!r} from {start}, "
                              f"profile {plan.profile}: {options.epochs} epochs, batch {options.batch_size}")
        version = embedding_train(config_name=plan.config, stage=stage, collection=plan.collection, options=options,
                                  work_dir=work_dir, parent=plan.parent, groups=groups,
                                  hierarchical=plan.hierarchical, margin=plan.margin, resume=o["resume"])
        m = version.metrics
        val_loss = f", loss {m['val_loss']:.4f}" if "val_loss" in m else ""
        cutoffs = ", ".join(f"P@{k} {m[f'precision_at_{k}']:.3f}" for k in (1, 3, 6, 9) if f"precision_at_{k}" in m)
        self.stdout.write(f"{version}: validation AP@6 {m.get('ap_at_6', float('nan')):.3f}, {cutoffs}{val_loss} "
                          f"(epoch {m['epoch']}); {version.weights_source}")
