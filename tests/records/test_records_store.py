"""The record-store contract, run on every store (SQLite, YAML, PostgreSQL)."""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path

import pytest
from _records_helpers import add_many, rec
from pydantic import BaseModel

from modeldepot.configs import (
    LoRALyCORISConfig,
    MainCheckpointConfig,
    MainDiffusersConfig,
    VAECheckpointConfig,
    parse_config,
)
from modeldepot.errors import (
    DuplicateModelException,
    InvalidModelConfigException,
    UnknownModelException,
)
from modeldepot.records import ModelRecordServiceBase
from modeldepot.taxonomy import BaseModelType, ModelFormat, ModelType


def _names(models: list) -> list[str]:
    return [m.name for m in models]


def _populate(store: ModelRecordServiceBase) -> dict[str, str]:
    """A small catalogue across bases, types and tags; returns name -> key."""
    records = [
        rec("dreamshaper", "main", "diffusers", "sd-1", tags=["photo", "favourite"], description="Dream Shaper"),
        rec("juggernaut", "main", "checkpoint", "sdxl", tags=["photo"], source="https://civitai.com/models/133005"),
        rec("detail-tweaker", "lora", "lycoris", "sd-1", tags=["detail"], hash="blake3:aa"),
        rec("xl-detail", "lora", "lycoris", "sdxl", tags=["detail", "favourite"], hash="blake3:aa"),
        rec("sd-vae", "vae", "checkpoint", "sd-1", compatible_bases=["sd-2"], hash="blake3:bb"),
        rec("anything", "main", "checkpoint", "sd-1"),
    ]
    return {r["name"]: store.add_model(r).key for r in records}


# ---- add / get ---------------------------------------------------------------------------------


def test_add_config_object_and_get(store: ModelRecordServiceBase) -> None:
    cfg = MainDiffusersConfig(name="sd15", base=BaseModelType.StableDiffusion1, path="/m/sd15", hash="blake3:1")
    added = store.add_model(cfg)
    assert added.key == cfg.key
    got = store.get_model(cfg.key)
    assert isinstance(got, MainDiffusersConfig)
    assert got == cfg
    assert store.exists(cfg.key)
    assert not store.exists("0" * 32)


def test_add_dict_validates_through_union_and_accepts_aliases(store: ModelRecordServiceBase) -> None:
    added = store.add_model(
        {"name": "vae", "model_type": "vae", "model_format": "checkpoint", "base_model": "sdxl", "path": "/m/vae"}
    )
    assert isinstance(added, VAECheckpointConfig)
    got = store.get_model(added.key)
    assert isinstance(got, VAECheckpointConfig)
    assert got.base is BaseModelType.StableDiffusionXL
    assert got.compatible_bases == {BaseModelType.StableDiffusionXL}


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"type": "lora", "format": "lycoris", "base": "sd-1", "path": "/m/x"}, "name"),
        (rec("x", base="sd-9"), "base"),
        (rec("x", type="main", format="lycoris"), "type"),
        ({"name": "x", "format": "lycoris", "base": "sd-1", "path": "/m/x"}, "type"),
        (rec("x", hash=12), "hash"),
        (rec("x", bogus_field=1), "bogus_field"),
    ],
)
def test_invalid_dict_names_the_field(store: ModelRecordServiceBase, bad: dict, field: str) -> None:
    with pytest.raises(InvalidModelConfigException) as info:
        store.add_model(bad)
    assert info.value.field == field
    assert field in str(info.value)
    assert store.all_models() == []


def test_add_rejects_non_mapping(store: ModelRecordServiceBase) -> None:
    with pytest.raises(InvalidModelConfigException):
        store.add_model(["not", "a", "record"])  # type: ignore[arg-type]


def test_duplicate_key_and_duplicate_path(store: ModelRecordServiceBase) -> None:
    first = store.add_model(rec("a"))
    with pytest.raises(DuplicateModelException, match=first.key):
        store.add_model(rec("b", key=first.key))
    with pytest.raises(DuplicateModelException, match="already registered") as info:
        store.add_model(rec("c", path=first.path))
    assert info.value.key == first.key
    assert [m.key for m in store.all_models()] == [first.key]


def test_unknown_key_raises_keyerror_subclass(store: ModelRecordServiceBase) -> None:
    missing = "f" * 32
    for call in (
        lambda: store.get_model(missing),
        lambda: store.del_model(missing),
        lambda: store.update_model(missing, {"name": "x"}),
        lambda: store.rename_model(missing, "x"),
    ):
        with pytest.raises(UnknownModelException) as info:
            call()
        assert isinstance(info.value, KeyError)
        assert missing in str(info.value)


# ---- update / rename / delete ------------------------------------------------------------------


def test_update_sparse_dict_and_whole_config(store: ModelRecordServiceBase) -> None:
    cfg = store.add_model(rec("a", tags=["x"]))
    new = store.update_model(cfg.key, {"description": "hello", "tags": ["x", "y"], "base_model": "sdxl"})
    assert new.description == "hello"
    assert new.base is BaseModelType.StableDiffusionXL
    assert new.updated_at >= cfg.updated_at
    assert store.get_model(cfg.key) == new
    assert _names(store.search_by_tag("y")) == ["a"]
    assert _names(store.search_by_attr(base="sdxl")) == ["a"]

    whole = new.model_copy(update={"name": "renamed-whole"})
    stored = store.update_model(cfg.key, whole)
    assert store.get_model(cfg.key).name == "renamed-whole" == stored.name


class _Changes(BaseModel):
    """Shaped like InvokeAI's ModelRecordChanges: every field optional; only set ones apply."""

    name: str | None = None
    description: str | None = None
    tags: list[str] | None = None


def test_update_with_a_pydantic_changes_object(store: ModelRecordServiceBase) -> None:
    cfg = store.add_model(rec("a", description="before", tags=["x"]))
    new = store.update_model(cfg.key, _Changes(description="after"))
    assert (new.name, new.description, new.tags) == ("a", "after", ["x"])
    assert store.get_model(cfg.key).description == "after"


def test_update_changing_class_drops_fields_of_the_old_class(store: ModelRecordServiceBase) -> None:
    main = store.add_model(rec("m", "main", "checkpoint", config_path="v1-inference.yaml", vae="/vae", tags=["t"]))
    assert isinstance(main, MainCheckpointConfig)
    new = store.update_model(main.key, {"type": "lora", "format": "lycoris"})
    assert isinstance(new, LoRALyCORISConfig)
    got = store.get_model(main.key)
    assert isinstance(got, LoRALyCORISConfig)
    assert not hasattr(got, "vae") and not hasattr(got, "config_path")
    assert got.tags == ["t"]
    assert _names(store.search_by_attr(type="lora")) == ["m"]
    assert store.search_by_attr(type="main") == []


def test_update_rejects_invalid_changes_and_keeps_record(store: ModelRecordServiceBase) -> None:
    cfg = store.add_model(rec("a"))
    with pytest.raises(InvalidModelConfigException) as info:
        store.update_model(cfg.key, {"base": "not-a-base"})
    assert info.value.field == "base"
    with pytest.raises(InvalidModelConfigException, match="key"):
        store.update_model(cfg.key, {"key": "0" * 32})
    with pytest.raises(InvalidModelConfigException):
        store.update_model(cfg.key, {"no_such_field": 1})
    with pytest.raises(InvalidModelConfigException):
        store.update_model(cfg.key, "name=x")  # type: ignore[arg-type]
    assert store.get_model(cfg.key) == cfg


def test_update_path_to_existing_path_is_duplicate(store: ModelRecordServiceBase) -> None:
    a = store.add_model(rec("a"))
    b = store.add_model(rec("b"))
    with pytest.raises(DuplicateModelException):
        store.update_model(b.key, {"path": a.path})
    assert store.get_model(b.key).path == b.path
    moved = store.update_model(b.key, {"path": "/elsewhere/b.safetensors"})
    assert _names(store.search_by_path("/elsewhere/b.safetensors")) == ["b"]
    assert store.search_by_path(b.path) == []
    # The freed path can be taken again.
    store.add_model(rec("c", path=b.path))
    assert moved.path == "/elsewhere/b.safetensors"


def test_rename(store: ModelRecordServiceBase) -> None:
    cfg = store.add_model(rec("old"))
    assert store.rename_model(cfg.key, "new").name == "new"
    assert store.get_model(cfg.key).name == "new"
    assert store.search_by_attr(name="old") == []
    assert _names(store.search_by_attr(name="new")) == ["new"]
    with pytest.raises(InvalidModelConfigException):
        store.rename_model(cfg.key, "")


def test_rename_to_a_name_taken_in_the_same_base_and_type_is_refused(store: ModelRecordServiceBase) -> None:
    a = store.add_model(rec("a"))
    b = store.add_model(rec("b"))
    with pytest.raises(DuplicateModelException, match=a.key) as info:
        store.rename_model(b.key, "a")
    assert info.value.key == a.key and "sd-1/lora" in str(info.value)
    with pytest.raises(DuplicateModelException, match=a.key):
        store.update_model(b.key, {"name": "a", "description": "x"})  # the same rule for any update
    assert store.get_model(b.key).name == "b" and store.get_model(b.key).description is None
    assert _names(store.search_by_attr(name="a")) == ["a"]
    # Another base or another type may hold the name; keeping one's own name is no clash.
    xl = store.add_model(rec("xl", base="sdxl"))
    assert store.rename_model(xl.key, "a").name == "a"
    vae = store.add_model(rec("v", "vae", "checkpoint"))
    assert store.rename_model(vae.key, "a").name == "a"
    assert store.rename_model(a.key, "a").name == "a"
    assert store.update_model(a.key, {"description": "same name, other change"}).name == "a"


def test_delete_removes_record_and_its_index_rows(store: ModelRecordServiceBase) -> None:
    keys = _populate(store)
    store.del_model(keys["sd-vae"])
    assert not store.exists(keys["sd-vae"])
    with pytest.raises(UnknownModelException):
        store.get_model(keys["sd-vae"])
    assert store.search_by_attr(base="sd-2") == []
    assert store.search_by_hash("blake3:bb") == []
    store.del_model(keys["xl-detail"])
    assert _names(store.search_by_tag("favourite")) == ["dreamshaper"]
    assert len(store.all_models()) == 4


# ---- searches ----------------------------------------------------------------------------------


def test_all_models_sorted_by_base_type_name(store: ModelRecordServiceBase) -> None:
    _populate(store)
    got = [(m.base.value, m.type.value, m.name) for m in store.all_models()]
    assert got == sorted(got)
    assert len(got) == 6
    assert store.search_by_attr() == store.all_models()


def test_search_by_attr_each_field_and_aliases(store: ModelRecordServiceBase) -> None:
    _populate(store)
    assert _names(store.search_by_attr(name="juggernaut")) == ["juggernaut"]
    assert _names(store.search_by_attr(base="sdxl")) == ["xl-detail", "juggernaut"]  # lora < main
    assert _names(store.search_by_attr(type=ModelType.LoRA)) == ["detail-tweaker", "xl-detail"]
    assert _names(store.search_by_attr(format="checkpoint")) == ["anything", "sd-vae", "juggernaut"]
    assert _names(store.search_by_attr(base="sd-1", type="main")) == ["anything", "dreamshaper"]
    assert _names(store.search_by_attr(base="sd-1", type="main", format=ModelFormat.Diffusers)) == ["dreamshaper"]
    assert store.search_by_attr(base="sd-3") == []
    # InvokeAI's spellings
    assert store.search_by_attr(
        model_name="dreamshaper", base_model=BaseModelType.StableDiffusion1, model_type="main", model_format="diffusers"
    ) == store.search_by_attr(name="dreamshaper")
    assert _names(store.search_by_name(model_type="vae")) == ["sd-vae"]
    assert _names(store.search_by_name("anything")) == ["anything"]


def test_search_by_attr_rejects_bad_arguments(store: ModelRecordServiceBase) -> None:
    with pytest.raises(InvalidModelConfigException) as info:
        store.search_by_attr(base="sd-9")
    assert info.value.field == "base" and "sd-9" in str(info.value)
    with pytest.raises(InvalidModelConfigException):
        store.search_by_attr(type="main", model_type="lora")
    with pytest.raises(TypeError):
        store.search_by_attr(colour="red")


def test_base_search_matches_compatible_bases(store: ModelRecordServiceBase) -> None:
    keys = _populate(store)
    assert _names(store.search_by_attr(base="sd-2")) == ["sd-vae"]
    assert "sd-vae" in _names(store.search_by_attr(base="sd-1", type="vae"))
    assert store.search_by_attr(base="sdxl", type="vae") == []
    store.update_model(keys["sd-vae"], {"compatible_bases": ["sdxl"]})
    assert store.search_by_attr(base="sd-2") == []
    assert _names(store.search_by_attr(base="sdxl", type="vae")) == ["sd-vae"]
    # base itself is always among the compatible bases
    assert _names(store.search_by_attr(base="sd-1", type="vae")) == ["sd-vae"]


def test_search_by_tag_requires_every_tag(store: ModelRecordServiceBase) -> None:
    _populate(store)
    assert _names(store.search_by_tag(["photo"])) == ["dreamshaper", "juggernaut"]
    assert _names(store.search_by_tag("photo")) == ["dreamshaper", "juggernaut"]
    assert _names(store.search_by_tag(["photo", "favourite"])) == ["dreamshaper"]
    assert _names(store.search_by_tag(["favourite", "detail"])) == ["xl-detail"]
    assert store.search_by_tag(["photo", "nope"]) == []


def test_tags_are_case_insensitive_and_keep_the_first_spelling(store: ModelRecordServiceBase) -> None:
    cfg = store.add_model(rec("a", tags=["Portrait", "portrait", "Été", "PORTRAIT"]))
    assert cfg.tags == ["Portrait", "Été"]
    assert store.get_model(cfg.key).tags == ["Portrait", "Été"]
    updated = store.update_model(cfg.key, {"tags": [*cfg.tags, "portrait", "ÉTÉ", "new"]})
    assert updated.tags == ["Portrait", "Été", "new"]
    assert store.get_model(cfg.key).tags == ["Portrait", "Été", "new"]
    store.add_model(rec("b", tags=["landscape"]))
    for spelling in ("PORTRAIT", "portrait", "Portrait", "pOrTrAiT"):
        assert _names(store.search_by_tag(spelling)) == ["a"], spelling
        assert _names(store.search_models(tag=spelling)) == ["a"], spelling
        assert store.count_models(tag=spelling) == 1, spelling
    assert _names(store.search_by_tag(["été", "NEW"])) == ["a"]
    assert _names(store.search_by_tag("LANDSCAPE")) == ["b"]
    assert store.search_by_tag(["portrait", "landscape"]) == []
    # Removing a tag in one spelling is seen by every search.
    store.update_model(cfg.key, {"tags": ["new"]})
    assert store.search_by_tag("portrait") == []


def test_search_by_key_prefix(store: ModelRecordServiceBase) -> None:
    keys = ["abcdef01" + "0" * 24, "abcdef02" + "0" * 24, "abcdf0" + "0" * 26, "abcdee" + "f" * 26]
    for i, key in enumerate(keys):
        store.add_model(rec(f"m{i}", key=key))
    assert [m.key for m in store.search_by_key_prefix("abcdef")] == keys[:2]
    assert [m.key for m in store.search_by_key_prefix("abcdef02")] == [keys[1]]
    assert [m.key for m in store.search_by_key_prefix("abcd")] == sorted(keys)
    assert [m.key for m in store.search_by_key_prefix("abcd", limit=2)] == sorted(keys)[:2]
    assert [m.key for m in store.search_by_key_prefix(keys[2])] == [keys[2]]  # a whole key is a prefix too
    assert store.search_by_key_prefix("abcdeg") == []
    assert store.search_by_key_prefix("ABCDEF") == []  # case-sensitive: keys are lower-case hex
    assert store.search_by_key_prefix("%") == [] and store.search_by_key_prefix("abc_ef") == []  # no wildcards
    assert len(store.search_by_key_prefix("")) == 4


def test_resolve_by_key_name_or_unique_key_prefix(store: ModelRecordServiceBase) -> None:
    a = store.add_model(rec("alpha", key="aaaaaa11" + "0" * 24))
    b = store.add_model(rec("beta", key="aaaaaa22" + "0" * 24))
    store.add_model(rec("twin", key="bbbbbb" + "0" * 26))
    store.add_model(rec("twin", base="sdxl", key="cccccc" + "0" * 26))
    assert store.resolve(a.key).key == a.key
    assert store.resolve("beta").key == b.key
    assert store.resolve("aaaaaa1").key == a.key
    assert store.resolve("AAAAAA2").key == b.key  # keys are hex: capitals mean the same key
    assert store.resolve("bbbbbb").name == "twin"
    with pytest.raises(DuplicateModelException, match=r"aaaaaa11.*aaaaaa22"):
        store.resolve("aaaaaa")
    with pytest.raises(DuplicateModelException, match="twin"):
        store.resolve("twin")
    with pytest.raises(UnknownModelException, match="at least 6"):
        store.resolve("aaaaa")  # too short to be taken as a prefix
    with pytest.raises(UnknownModelException, match="dddddd"):
        store.resolve("dddddd")


def test_search_by_path_and_hash(store: ModelRecordServiceBase) -> None:
    keys = _populate(store)
    got = store.search_by_path(Path("/models/sd-1/vae/sd-vae.safetensors"))
    assert [m.key for m in got] == [keys["sd-vae"]]
    assert store.search_by_path("/models/nowhere") == []
    assert _names(store.search_by_hash("blake3:aa")) == ["detail-tweaker", "xl-detail"]
    assert store.search_by_hash("blake3:zz") == []


def test_model_info_by_name(store: ModelRecordServiceBase) -> None:
    keys = _populate(store)
    assert store.model_info_by_name("dreamshaper", "sd-1", "main").key == keys["dreamshaper"]
    # Found through compatible_bases when nothing has that exact base.
    assert store.model_info_by_name("sd-vae", BaseModelType.StableDiffusion2, ModelType.VAE).key == keys["sd-vae"]
    with pytest.raises(UnknownModelException):
        store.model_info_by_name("dreamshaper", "sdxl", "main")
    # A record with the exact base wins over one merely compatible with it.
    sd2 = store.add_model(rec("sd-vae", "vae", "checkpoint", "sd-2"))
    assert store.model_info_by_name("sd-vae", "sd-2", "vae").key == sd2.key
    store.add_model(rec("sd-vae", "vae", "checkpoint", "sd-2", path="/other/sd-vae.safetensors"))
    with pytest.raises(DuplicateModelException):
        store.model_info_by_name("sd-vae", "sd-2", "vae")


def test_search_models_pagination_q_and_count(store: ModelRecordServiceBase) -> None:
    _populate(store)
    everything = store.all_models()
    assert store.count_models() == 6
    assert store.search_models(offset=2, limit=3) == everything[2:5]
    assert store.search_models(offset=5, limit=10) == everything[5:]
    assert store.search_models(limit=0) == []
    assert _names(store.search_models(q="DREAM")) == ["dreamshaper"]  # name and description
    assert _names(store.search_models(q="civitai.com/models")) == ["juggernaut"]  # source
    assert _names(store.search_models(q="favour")) == ["dreamshaper", "xl-detail"]  # tags
    assert store.search_models(q="100%_") == []  # LIKE wildcards are literal
    assert store.count_models(q="detail") == 2
    assert _names(store.search_models(base="sd-1", tag="photo")) == ["dreamshaper"]
    assert store.count_models(base="sd-1", type="main") == 2
    assert store.count_models(tag=["detail", "favourite"]) == 1
    with pytest.raises(InvalidModelConfigException):
        store.search_models(offset=-1)


def test_non_ascii_and_case_sort_is_by_code_point(store: ModelRecordServiceBase) -> None:
    for name in ["beta", "Zeta", "alpha", "Émile", "_under"]:
        store.add_model(rec(name))
    assert _names(store.all_models()) == sorted(["beta", "Zeta", "alpha", "Émile", "_under"])
    assert _names(store.search_models(q="émile")) == ["Émile"]


# ---- durability and concurrency ----------------------------------------------------------------


def test_persists_across_reopen(open_store) -> None:  # type: ignore[no-untyped-def]
    first = open_store()
    keys = _populate(first)
    first.update_model(keys["anything"], {"description": "kept"})
    version = first.schema_version()
    first.close()
    again = open_store()
    assert {m.key for m in again.all_models()} == set(keys.values())
    assert again.get_model(keys["anything"]).description == "kept"
    assert _names(again.search_by_attr(base="sd-2")) == ["sd-vae"]
    assert again.schema_version() == version >= 1
    assert again.version() == first.version() == "3.2"


def test_two_handles_see_each_others_writes(open_store) -> None:  # type: ignore[no-untyped-def]
    a, b = open_store(), open_store()
    ka = a.add_model(rec("from-a")).key
    kb = b.add_model(rec("from-b")).key
    assert a.get_model(kb).name == "from-b"
    assert {m.key for m in b.all_models()} == {ka, kb}
    a.del_model(kb)
    assert not b.exists(kb)


def test_record_whose_file_vanished_still_lists(store: ModelRecordServiceBase, tmp_path: Path) -> None:
    weights = tmp_path / "gone.safetensors"
    weights.write_bytes(b"x" * 16)
    cfg = store.add_model(rec("gone", path=str(weights)))
    weights.unlink()
    assert [m.key for m in store.all_models()] == [cfg.key]
    assert store.get_model(cfg.key).path == str(weights)


def test_threads_adding_concurrently(store: ModelRecordServiceBase) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def work(t: int) -> None:
        try:
            barrier.wait(timeout=30)
            for i in range(15):
                store.add_model(rec(f"t{t}-{i}"))
                store.search_by_attr(base="sd-1")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    assert store.count_models() == 60


@pytest.mark.slow
def test_two_processes_adding_concurrently_lose_nothing(location: str, store: ModelRecordServiceBase) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=add_many, args=(location, p, 50, barrier)) for p in ("p1", "p2")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
    assert [p.exitcode for p in procs] == [0, 0]
    names = _names(store.all_models())
    assert len(names) == 100
    assert {n for n in names if n.startswith("p1-")} == {f"p1-{i:03d}" for i in range(50)}
    assert {n for n in names if n.startswith("p2-")} == {f"p2-{i:03d}" for i in range(50)}


def test_add_models_batch_is_all_or_nothing(store: ModelRecordServiceBase) -> None:
    existing = store.add_model(rec("existing"))
    added = store.add_models([rec("b1"), rec("b2", type="vae", format="checkpoint")])
    assert {m.name for m in added} == {"b1", "b2"}
    with pytest.raises(DuplicateModelException):
        store.add_models([rec("b3"), rec("b4", path=existing.path)])
    with pytest.raises(DuplicateModelException):
        store.add_models([rec("b5"), rec("b6", path=rec("b5")["path"])])
    assert sorted(_names(store.all_models())) == ["b1", "b2", "existing"]


def test_returned_records_are_independent_copies(store: ModelRecordServiceBase) -> None:
    cfg = store.add_model(parse_config(rec("a", tags=["x"])))
    got = store.get_model(cfg.key)
    got.tags.append("mutated")
    got.name = "mutated"
    assert store.get_model(cfg.key).tags == ["x"]
    assert store.get_model(cfg.key).name == "a"
