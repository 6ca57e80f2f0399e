"""train_model --stage contrastive|triplet on a small synthetic library: registered, loadable, clear errors."""
from __future__ import annotations

from io import StringIO

import numpy as np
import pytest
import torch
from django.core.management import CommandError, call_command

from retrieval.models import Case, ModelVersion

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


SMALL_LIBRARY_SIZE = 40  # images: enough for tuples of every class, fast to train


def test_triplet_stage_registers_a_loadable_embedding(small_library, media_root):
    from retrieval.ml.embedding import EmbeddingNet, load_embedding

    out = StringIO()
    call_command("train_model", "--config", "tiny", "--stage", "triplet", "--epochs", "1", "--batch-size", "8",
                 "--device", "cpu", stdout=out, verbosity=0)

    version = ModelVersion.objects.get(stage="triplet")
    assert (version.config, version.collection, version.epochs, version.parent) == ("tiny", "synthetic", 1, None)
    assert len(version.checkpoint_sha256) == 64 and len(version.data_fingerprint) == 64
    assert 0 <= version.metrics["ap_at_6"] <= 1 and len(version.metrics["history"]) == 1
    net = load_embedding(media_root / version.checkpoint.name)
    assert isinstance(net, EmbeddingNet)
    with torch.no_grad():
        embedded = net.embed(torch.randn(2, 3, 64, 64))
    assert embedded.shape == (2, 256) and np.allclose(embedded.norm(dim=1).numpy(), 1, atol=1e-5)
    assert "tiny triplet" in out.getvalue() and "validation AP@6" in out.getvalue()


def test_groups_and_parent_are_checked(small_library, media_root, tmp_path):
    groups = tmp_path / "groups.csv"
    train = list(Case.objects.filter(split="train").order_by("image_id").values_list("image_id", flat=True))
    groups.write_text("image_id,group\n" + "".join(f"{i},g{n % 2}\n" for n, i in enumerate(train))
                      + "NOT_AN_IMAGE,g1\n")
    with pytest.raises(CommandError, match="1 image id\\(s\\) not in collection 'synthetic': NOT_AN_IMAGE"):
        call_command("train_model", "--config", "tiny", "--stage", "triplet", "--epochs", "1",
                     "--groups", str(groups), verbosity=0)
    with pytest.raises(CommandError, match="no 3-channel tiny model"):
        call_command("train_model", "--config", "tiny", "--stage", "contrastive", "--epochs", "1",
                     "--parent", "999", verbosity=0)
    with pytest.raises(CommandError, match="options of --stage contrastive\\|triplet"):
        call_command("train_model", "--config", "tiny", "--stage", "3ch", "--groups", str(groups), verbosity=0)
    assert not ModelVersion.objects.exists()

    # valid groups, from a 3-channel parent: registered with that parent
    groups.write_text("image_id,group\n" + "".join(f"{i},g{n % 2}\n" for n, i in enumerate(train)))
    call_command("train_model", "--config", "tiny", "--stage", "3ch", "--epochs", "1", "--batch-size", "8",
                 "--device", "cpu", verbosity=0)
    rgb = ModelVersion.objects.get(stage="3ch")
    call_command("train_model", "--config", "tiny", "--stage", "contrastive", "--epochs", "1", "--batch-size", "8",
                 "--device", "cpu", "--groups", str(groups), "--parent", str(rgb.id), verbosity=0)
    version = ModelVersion.objects.get(stage="contrastive")
    assert version.parent == rgb and version.metrics["grouped"] and "backbone of" in version.weights_source
