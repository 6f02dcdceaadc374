"""The package's promises about itself: one error tree, a light base import, clear extras (the pinned public
names are in test_public_api.py)."""

import subprocess
import sys

import pytest

import embedopt
from embedopt import EmbedOptError, MissingExtraError


def test_every_error_is_an_embedopt_error():
    for name in embedopt.__all__:
        obj = getattr(embedopt, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, EmbedOptError), name


def test_base_import_loads_no_model_library():
    code = ("import sys, embedopt, embedopt.providers, embedopt.cli\n"
            "heavy = [m for m in ('torch', 'sentence_transformers', 'model2vec', 'transformers') if m in sys.modules]\n"
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(("module", "factory", "extra"), [
    ("sentence_transformers", "SentenceTransformerProvider", "local"),
    ("model2vec", "StaticProvider", "static"),
])
def test_missing_extra_names_the_pip_command(monkeypatch, module, factory, extra):
    import embedopt.providers as providers

    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    cls = getattr(providers, factory)
    with pytest.raises(MissingExtraError, match=rf'pip install "embedopt\[{extra}\]"'):
        cls("anything")
