import dataclasses

import pytest

from embedopt import Fingerprint

BASE = Fingerprint(provider="sentence-transformers", model="sentence-transformers/all-MiniLM-L6-v2",
                   revision="sha256:abc", input_type="document", prompt="", dim=384, normalize=True)


def test_id_is_stable_and_readable():
    assert BASE.id == Fingerprint(**dataclasses.asdict(BASE)).id
    assert BASE.id.startswith("sentence-transformers.sentence-transformers_all-MiniLM-L6-v2.document.")
    assert ":" not in BASE.id and " " not in BASE.id


@pytest.mark.parametrize(("field", "value"), [
    ("provider", "openai"), ("model", "other"), ("revision", "sha256:def"), ("input_type", "query"),
    ("prompt", "query: "), ("dim", 768), ("normalize", False),
])
def test_every_field_changes_the_id(field, value):
    assert dataclasses.replace(BASE, **{field: value}).id != BASE.id


def test_space_id_ignores_only_the_provider():
    assert dataclasses.replace(BASE, provider="tei").space_id == BASE.space_id
    assert dataclasses.replace(BASE, revision="x").space_id != BASE.space_id


def test_round_trip_and_tamper_detection():
    data = BASE.to_dict()
    assert Fingerprint.from_dict(data) == BASE
    data["dim"] = 256
    with pytest.raises(ValueError, match="does not match its fields"):
        Fingerprint.from_dict(data)


def test_frozen_and_validated():
    with pytest.raises(dataclasses.FrozenInstanceError):
        BASE.dim = 1  # type: ignore[misc]
    with pytest.raises(ValueError, match="input_type"):
        dataclasses.replace(BASE, input_type="passage")
