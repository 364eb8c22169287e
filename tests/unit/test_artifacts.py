"""The artifact layout has one owner, and it never leaves its root."""

from __future__ import annotations

import uuid

import pytest

from server.execution.artifacts import ArtifactPathError, ArtifactStore


def test_the_layout(tmp_path):
    store = ArtifactStore(tmp_path / "artifacts")
    job = uuid.uuid4()
    folder = store.create_attempt_folder("acme-corp", "forecast", job, 2)
    assert folder == (tmp_path / "artifacts" / "acme-corp" / "forecast" / f"{job}-attempt2").resolve() and folder.is_dir()
    model = folder / "model.txt"
    model.write_text("x")
    uri = store.uri(model)
    assert uri.startswith("file://") and store.model_file(uri) == model
    assert store.remove_version(uri) == model and not folder.exists()
    store.create_attempt_folder("acme-corp", "forecast", job, 3)
    store.remove_attempt_folder("acme-corp", "forecast", job, 3)
    assert not (tmp_path / "artifacts" / "acme-corp" / "forecast" / f"{job}-attempt3").exists()


@pytest.mark.parametrize("tenant", ["../../../../tmp/x", "/tmp/x", "evil/../acme-corp", "..", ".", "", "a\x00b"])
def test_a_tenant_id_cannot_name_a_folder_outside_its_own(tmp_path, tenant):
    store = ArtifactStore(tmp_path / "artifacts")
    with pytest.raises(ArtifactPathError):
        store.create_attempt_folder(tenant, "forecast", uuid.uuid4(), 1)
    assert not (tmp_path / "tmp").exists() and list(tmp_path.iterdir()) == []


def test_uris_outside_the_root_are_neither_read_nor_deleted(tmp_path):
    store = ArtifactStore(tmp_path / "artifacts")
    victim = tmp_path / "elsewhere" / "model.txt"
    victim.parent.mkdir()
    victim.write_text("keep me")
    (tmp_path / "artifacts").mkdir()
    (tmp_path / "artifacts" / "other-tenant").mkdir()
    for uri in (
        victim.as_uri(),
        f"file://{tmp_path}/artifacts/../elsewhere/model.txt",
        "http://example.com/m.txt",
        (tmp_path / "artifacts").as_uri(),
        (tmp_path / "artifacts" / "model.txt").as_uri(),
    ):
        with pytest.raises(ArtifactPathError):
            store.remove_version(uri)
    assert victim.read_text() == "keep me" and (tmp_path / "artifacts" / "other-tenant").is_dir()
