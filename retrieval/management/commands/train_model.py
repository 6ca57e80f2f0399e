from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from retrieval.models import ModelVersion


class Command(BaseCommand):
    help = (
        "Train the SE-CBIR classifiers on the library's train/val split: the 3-channel model, the 4-channel "
        "(RGB + saliency) model widened from it, or both. Each trained stage is registered as a ModelVersion."
    )

    def add_arguments(self, parser):
        from retrieval.ml.configs import config_names

        parser.add_argument("--config", default="secbir-lite0", choices=config_names())
        parser.add_argument("--stage", default="both", choices=["3ch", "4ch", "both"])
        parser.add_argument("--epochs", type=int, default=20)
        parser.add_argument("--batch-size", type=int, default=32)
        parser.add_argument("--device", default=settings.TORCH_DEVICE, choices=["auto", "cpu", "cuda"])
        parser.add_argument("--resume", type=Path, help="a *-last.pt checkpoint of an interrupted run of the first stage")
        parser.add_argument("--parent", type=int, help="ModelVersion id of the 3-channel model (for --stage 4ch; "
                                                       "default: the newest of this config and collection)")
        parser.add_argument("--collection", help="case collection (default: the only one in the library)")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--lr", type=float, help="base learning rate (default: the thesis value of the stage)")
        parser.add_argument("--workers", type=int, default=4, help="DataLoader workers (CUDA only)")

    def handle(self, *args, **o):
        from retrieval.ml.train import TrainOptions
        from retrieval.selectors import default_collection
        from retrieval.services import model_train

        if o["epochs"] < 1 or o["batch_size"] < 1:
            raise CommandError("--epochs and --batch-size must be at least 1")
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
        options = TrainOptions(epochs=o["epochs"], batch_size=o["batch_size"], seed=o["seed"], device=o["device"],
                               num_workers=o["workers"], lr=o["lr"], progress=o["verbosity"] > 0)
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
