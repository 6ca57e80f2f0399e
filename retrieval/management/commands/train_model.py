from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from retrieval.models import ModelVersion


class Command(BaseCommand):
    help = (
        "Train the SE-CBIR classifiers on the library's train/val split: the 3-channel model, the 4-channel "
        "(RGB + saliency) model widened from it, or both. Each trained stage is registered as a ModelVersion. "
        "--profile picks epochs per stage, batch size and learning-rate schedule (thesis: the thesis recipe; "
        "demo: the few-minute CPU run of make run); explicit --epochs, --batch-size and --config override it."
    )

    def add_arguments(self, parser):
        from retrieval.ml.configs import config_names
        from retrieval.ml.profiles import DEFAULT_PROFILE, TRAINING_PROFILES

        parser.add_argument("--profile", default=DEFAULT_PROFILE, choices=list(TRAINING_PROFILES),
                            help="training profile (default: %(default)s)")
        parser.add_argument("--config", choices=config_names(),
                            help="model config (default: the profile's: " + ", ".join(
                                f"{p.name} {p.config}" for p in TRAINING_PROFILES.values()) + ")")
        parser.add_argument("--stage", default="both", choices=["3ch", "4ch", "both"])
        parser.add_argument("--epochs", type=int, help="epochs of every trained stage (default: the profile's)")
        parser.add_argument("--batch-size", type=int, help="default: the profile's")
        parser.add_argument("--device", default=settings.TORCH_DEVICE, choices=["auto", "cpu", "cuda"])
        parser.add_argument("--resume", type=Path, help="a *-last.pt checkpoint of an interrupted run of the first stage")
        parser.add_argument("--parent", type=int, help="ModelVersion id of the 3-channel model (for --stage 4ch; "
                                                       "default: the newest of this config and collection)")
        parser.add_argument("--collection", help="case collection (default: the only one in the library)")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--lr", type=float, help="base learning rate (default: the thesis value of the stage)")
        parser.add_argument("--workers", type=int, default=4, help="DataLoader workers (CUDA only)")

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
        stages = ["3ch", "4ch"] if o["stage"] == "both" else [o["stage"]]
        parent = None
        if stages == ["4ch"]:
            parents = ModelVersion.objects.filter(stage="3ch", config=o["config"], collection=collection)
            parent = parents.filter(id=o["parent"]).first() if o["parent"] else parents.first()
            if parent is None:
                raise CommandError(f"no 3-channel {o['config']} model for {collection!r}; train --stage 3ch first")
        explicit = {key: o[key] for key in ("epochs", "batch_size") if o[key] is not None}
        options = profile.stage_options(stages, seed=o["seed"], device=o["device"], num_workers=o["workers"],
                                        lr=o["lr"], progress=o["verbosity"] > 0, **explicit)
        if o["verbosity"] > 0:
            plan = ", ".join(f"{stage} {options[stage].epochs} epochs" for stage in stages)
            self.stdout.write(f"Training {o['config']} on {collection!r}, profile {profile.name}: {plan}, "
                              f"batch {options[stages[0]].batch_size}")
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
