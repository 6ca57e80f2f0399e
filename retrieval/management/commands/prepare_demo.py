from __future__ import annotations

import os
import time
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from retrieval import selectors
from retrieval.classes import NO_SPLIT
from retrieval.models import ModelVersion

COLLECTION = "synthetic"
SPLIT_SEED = 71
DEMO_STUDY = "Demo reader study"


class Command(BaseCommand):
    help = (
        "Prepare the demo end to end, idempotently: render and import the synthetic library, split it, train "
        "the demo SE-CBIR model (training profile 'demo'), build and activate its index, and open a demo reader "
        "study for the demo reader. Each step is skipped when its result is already there; a re-run finishes "
        "in seconds."
    )

    def add_arguments(self, parser):
        parser.add_argument("--size", type=int, default=int(os.environ.get("DEMO_LIBRARY_SIZE", 1500)),
                            help="about this many synthetic images (default: $DEMO_LIBRARY_SIZE or 1500)")
        parser.add_argument("--profile", default="demo", help="training profile (default: demo)")
        parser.add_argument("--device", default=settings.TORCH_DEVICE, choices=["auto", "cpu", "cuda"])
        parser.add_argument("--seed", type=int, default=0, help="training seed")

    def _step(self, number: int, text: str) -> None:
        self.stdout.write(self.style.MIGRATE_HEADING(f"[{number}/6] {text}"))

    def handle(self, *args, size, profile, device, seed, **options):
        from retrieval.ml.profiles import get_profile

        try:
            training = get_profile(profile)
        except KeyError as exc:
            raise CommandError(str(exc.args[0])) from None
        verbosity = options["verbosity"]
        started = time.monotonic()

        self._step(1, f"Synthetic case library (~{size} images)")
        call_command("make_synthetic_library", "--limit", str(size), "--collection", COLLECTION, verbosity=verbosity,
                     stdout=self.stdout, stderr=self.stderr)

        model4 = self._newest_model(training.config)
        self._step(2, "Train/validation/test split")
        if selectors.case_list(collection=COLLECTION, split=NO_SPLIT).exists() and model4 is None:
            call_command("split_library", "--collection", COLLECTION, "--seed", str(SPLIT_SEED), verbosity=verbosity,
                         stdout=self.stdout)
        else:
            self.stdout.write("  already split" + (" (new cases stay unsplit: they are library cases, "
                                                   "never test queries)" if model4 else ""))

        self._step(3, f"Demo model ({training.config}, profile {training.name!r})")
        if model4 is None:
            model4 = self._train(training, device, seed, verbosity)
        else:
            self.stdout.write(f"  using {model4}: validation accuracy {model4.metrics.get('accuracy', 0):.3f}")

        self._step(4, "Retrieval index")
        active = selectors.index_active(collection=COLLECTION, model_version=model4)
        if active is None:
            call_command("build_index", "--model-version", str(model4.id), "--here", verbosity=verbosity,
                         stdout=self.stdout, stderr=self.stderr)
        else:
            indexed = active.size + len(active.skipped)
            library = selectors.case_indexable_count(collection=COLLECTION)
            if library > indexed:
                call_command("build_index", "--model-version", str(model4.id), "--incremental", "--here",
                             verbosity=verbosity, stdout=self.stdout, stderr=self.stderr)
            else:
                self.stdout.write(f"  index #{active.id} is active ({active.size} cases)")

        self._step(5, "Demo reader study")
        self._demo_study()
        self._step(6, "Demo embeddings (contrastive, paper 002; triplet, paper 004): in the background")
        self._embeddings(training, model4, device, seed)
        self.stdout.write(self.style.SUCCESS(f"Demo ready in {time.monotonic() - started:.0f} s."))

    @staticmethod
    def _newest_model(config: str) -> ModelVersion | None:
        return selectors.model_version_newest(stage=ModelVersion.Stage.RGB_SALIENCY, config=config, collection=COLLECTION)

    def _train(self, training, device: str, seed: int, verbosity: int) -> ModelVersion:
        from retrieval.services import model_train

        parent = selectors.model_version_newest(stage=ModelVersion.Stage.RGB, config=training.config,
                                                collection=COLLECTION)
        stages = ["4ch"] if parent else ["3ch", "4ch"]
        epochs = " + ".join(f"{training.epochs[s]} {s}" for s in stages)
        self.stdout.write(f"  training {epochs} epochs on the CPU takes a few minutes; progress bars follow")
        options = training.stage_options(stages, seed=seed, device=device, progress=verbosity > 0)
        work_dir = Path(settings.MEDIA_ROOT) / "training" / f"demo-{training.config}-seed{seed}"
        try:
            versions = model_train(config_name=training.config, stages=stages, collection=COLLECTION,
                                   options=options, parent=parent, work_dir=work_dir)
        except (ValueError, RuntimeError) as exc:
            raise CommandError(str(exc)) from None
        for version in versions:
            self.stdout.write(f"  {version}: validation accuracy {version.metrics['accuracy']:.3f}, "
                              f"macro sensitivity {version.metrics['macro_sensitivity']:.3f}")
        return versions[-1]

    def _embeddings(self, training, model4: ModelVersion, device: str, seed: int) -> None:
        """Queue the training of each demo embedding the library lacks (the worker's training queue,
        one epoch per task, from the demo 3-channel model's backbone); each is added to the active
        index once trained (only its vectors are encoded). The search page lists the two methods as
        being prepared until then. Nothing here waits for them."""
        from retrieval.services.index import index_methods_add
        from retrieval.services.training import training_queue

        queued = []
        for stage in (ModelVersion.Stage.CONTRASTIVE, ModelVersion.Stage.TRIPLET):
            if selectors.model_version_newest(stage=stage, collection=COLLECTION) is not None:
                continue
            job = selectors.training_job_unfinished(stage=stage, collection=COLLECTION)
            if job is None:
                job = training_queue(request={
                    "profile": training.name, "config": training.config, "stage": stage, "collection": COLLECTION,
                    "seed": seed, "device": device, "parent": model4.parent_id, "add_to_index": True})
                queued.append(stage)
            self.stdout.write(f"  {stage}: training job #{job.id} {'queued' if stage in queued else job.status}, "
                              f"{job.total} epochs (progress: /ops/, the admin's training jobs)")
        if queued:
            return
        active = selectors.index_active(collection=COLLECTION)
        if active is not None and {"contrastive", "triplet"} <= set(active.methods or []):
            self.stdout.write(f"  both are served by index #{active.id}")
            return
        try:
            build = index_methods_add(collection=COLLECTION)
        except ValueError as exc:
            self.stdout.write(f"  not added to the index yet: {exc}")
        else:
            adds = ", ".join((build.descriptors or {}).get("adds") or []) or "them"
            self.stdout.write(f"  index build #{build.id} ({build.status}) adds {adds}")

    def _demo_study(self) -> None:
        """An open study for the demo reader: 20 cases, a 2-minute washout so that both tasks can be
        tried in one sitting (a real study keeps the default 24 hours)."""
        from datetime import timedelta

        from readerstudy.models import Study
        from readerstudy.selectors import readers_by_username, study_by_name
        from readerstudy.services import study_assign, study_create, study_open, study_prepare

        study = study_by_name(name=DEMO_STUDY)
        if study is not None:
            self.stdout.write(f"  study {study.name!r} exists ({study.get_status_display().lower()})")
            return
        readers = readers_by_username(usernames=["reader"])
        study = study_create(user=None, name=DEMO_STUDY, cases_per_reader=20, washout=timedelta(minutes=2), enqueue=False,
                             description="A demonstration of the two-task protocol: 20 images, first alone, then "
                                         "(two minutes after you finish) rotated and with the six most similar cases.")
        study_prepare(study_id=study.id, worker="prepare_demo")
        study.refresh_from_db()
        if study.status != Study.Status.DRAFT:
            raise CommandError(f"the demo study could not be prepared: {study.message}")
        if readers:
            study_assign(study=study, readers=readers)
        study_open(study=study)
        self.stdout.write(f"  {study.message} Open for: {', '.join(r.username for r in readers) or 'nobody yet'}.")
