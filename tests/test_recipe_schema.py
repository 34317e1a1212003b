"""Recipes are checked against a schema: unknown keys and bad values are one-line errors naming the key;
the Dataset's selection and "no normalisation" are recipe settings; a --model switch drops the recipe's
options of another model, with a note."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from benmm.cli.app import app
from benmm.train.fit import datamodule_for, model_from_recipe
from benmm.train.recipes import RecipeError, load_recipe


@pytest.mark.parametrize(("override", "message"), [
    ("data.batch_size=abc", r"data.batch_size = 'abc': expected a positive integer"),
    ("data.batch_size=0", r"data.batch_size = 0: expected a positive integer"),
    ("optim.lr=-1", r"optim.lr = -1: expected a positive number"),
    ("data.resample=cubic", r"data.resample = 'cubic': expected nearest, bilinear or bicubic"),
    ("data.stats=/no/such.json", r"data.stats = '/no/such.json': expected \"v1\", a file"),
    ("trainer.gradient_clip=1", r"unknown recipe setting 'trainer.gradient_clip'; did you mean "
                                r"'trainer.gradient_clip_val'"),
])
def test_bad_settings_name_the_key(override: str, message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        load_recipe("demo", [override])


def test_unknown_keys_in_a_recipe_file_are_refused(tmp_path: Path) -> None:
    text = (Path(__file__).resolve().parents[1] / "src/benmm/train/recipes/demo.toml").read_text()
    bad = tmp_path / "mine.toml"
    bad.write_text(text.replace("[trainer]", "[trainer]\nwarmup = 3"))
    with pytest.raises(RecipeError, match=r"unknown recipe setting trainer.warmup.*training would ignore"):
        load_recipe(bad)


def test_selection_and_no_normalisation_reach_the_data(synthetic) -> None:  # type: ignore[no-untyped-def]
    store = synthetic.store(pairs=60, seed=0, layout="v1")
    countries = sorted(set(store.metadata["country"]))[:1]
    rec = load_recipe("demo", ["data.stats=none", "data.recommended=false", f"data.countries={countries!r}"
                               .replace("'", '"')])
    assert rec["data"]["stats"] is None and rec["data"]["countries"] == countries
    dm = datamodule_for(store, model_from_recipe(rec, 19), rec, workers=0)
    ds = dm.dataset("train")
    assert set(store.metadata.set_index("patch_id").loc[ds.names, "country"]) == set(countries)
    assert dm.eval_transform.stats is None


def test_a_model_switch_drops_the_recipes_options_of_another_model() -> None:
    rec = load_recipe("demo", ["model.name=resnet18"])
    assert "width" not in rec["model"] and "embed" not in rec["model"]
    assert "options width" in rec["notes"][0] and "'kbranch'" in rec["notes"][0]
    kept = load_recipe("demo", ["model.name=resnet18", "model.drop_rate=0.2"])
    assert kept["model"]["drop_rate"] == 0.2  # an option given with the switch stays
    model_from_recipe(rec, 19)  # builds: no K-Branch option reaches resnet18
    assert load_recipe("demo")["notes"] == []


def test_cli_train_model_switch_prints_the_note(synthetic, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    store = synthetic.store(pairs=60, seed=0, layout="v1")
    out = CliRunner().invoke(app, ["train", str(store.path), "--recipe", "demo", "--model", "timm:resnet10t",
                                   "--epochs", "1", "-w", "0", "--out", str(tmp_path / "r")])
    text = " ".join(out.output.split())
    assert out.exit_code == 0, text
    assert "note: model 'timm:resnet10t' instead of the recipe's 'kbranch'" in text
