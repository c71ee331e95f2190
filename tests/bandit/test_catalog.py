"""bandit/catalog.py: validation names the bad field; the example ships and loads."""

from __future__ import annotations

import pytest

from bandit.catalog import Catalog, ModelSpec, example_catalog_path, parse_model
from bandit.errors import CatalogError


def test_example_catalog_loads() -> None:
    cat = Catalog.load(example_catalog_path())
    assert len(cat) >= 3
    assert all(m.base_url for m in cat)
    assert cat.digest() == Catalog.from_yaml(cat.to_yaml()).digest()


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("models: []", "catalog.models: must be a non-empty list"),
        ("foo: 1", "catalog: must be a mapping with a 'models' list"),
        ("models: [{name: a, input_price: cheap}]", "models[0].input_price: must be a number"),
        ("models: [{name: a}, {name: a}]", "models[1].name: duplicate model name 'a'"),
        ("models: [{name: 'a b'}]", "models[0].name: must be 1-128 characters"),
        ("models: [{name: a, capabilities: [telepathy]}]",
         "models[0].capabilities: unknown capability 'telepathy'"),
        ("models: [{name: a, context_window: 1.5}]", "models[0].context_window"),
        ("models: [{name: a, base_url: ftp://x}]", "models[0].base_url: must start with"),
        ("models: [{name: a, colour: red}]", "models[0].colour: unknown field"),
        ("models: [{name: a, latency_ms: -5}]", "models[0].latency_ms"),
        ("models: [unclosed", "catalog: not valid YAML"),
    ],
)
def test_errors_name_the_bad_field(yaml_text: str, message: str) -> None:
    with pytest.raises(CatalogError) as err:
        Catalog.from_yaml(yaml_text)
    assert str(err.value).startswith(message)


def test_missing_file_is_a_catalog_error(tmp_path) -> None:
    with pytest.raises(CatalogError, match="cannot read catalog file"):
        Catalog.load(tmp_path / "nope.yaml")


def test_add_replace_remove() -> None:
    cat = Catalog.of([ModelSpec(name="a"), ModelSpec(name="b")])
    assert cat.with_model(ModelSpec(name="c")).names == ("a", "b", "c")
    assert cat.with_model(ModelSpec(name="a", input_price=2.0)).get("a").input_price == 2.0
    assert cat.without("a").names == ("b",)
    with pytest.raises(CatalogError, match="empty"):
        cat.without("a").without("b")


@pytest.mark.parametrize("value", [0, -1, "slow"], ids=["zero", "negative", "text"])
def test_first_byte_timeout_is_a_positive_number(value: object) -> None:
    assert parse_model({"name": "m", "first_byte_timeout_s": 90}).first_byte_timeout_s == 90
    with pytest.raises(CatalogError, match="first_byte_timeout_s"):
        parse_model({"name": "m", "first_byte_timeout_s": value})


@pytest.mark.parametrize("api", ["anthropic", "gemini"])
def test_api_names_the_upstream_protocol(api: str) -> None:
    assert parse_model({"name": "m", "api": api}).api == api
    # openai is the default, stored as None: older catalogs keep their digests
    assert parse_model({"name": "m", "api": "openai"}) == parse_model({"name": "m"})
    with pytest.raises(CatalogError, match="api: must be one of openai, anthropic, gemini"):
        parse_model({"name": "m", "api": "cohere"})


@pytest.mark.parametrize("field", ["cached_input_price", "cache_write_price"])
@pytest.mark.parametrize("value", [-1, "cheap", float("nan"), True],
                         ids=["negative", "text", "nan", "bool"])
def test_cache_prices_are_validated_like_prices(field: str, value: object) -> None:
    assert getattr(parse_model({"name": "m", field: 0.3}), field) == 0.3
    with pytest.raises(CatalogError, match=rf"^model\.{field}: must be"):
        parse_model({"name": "m", field: value})


def test_absent_cache_prices_keep_older_digests() -> None:
    old = Catalog.from_dict({"models": [{"name": "a", "input_price": 1.0}]})
    assert "cached_input_price" not in old.to_dict()["models"][0]
    assert old.digest() == Catalog.from_dict({"models": [
        {"name": "a", "input_price": 1.0, "cached_input_price": None}]}).digest()
    priced = Catalog.from_dict({"models": [
        {"name": "a", "input_price": 1.0, "cached_input_price": 0.1}]})
    assert priced.digest() != old.digest()
    assert Catalog.from_yaml(priced.to_yaml()) == priced


def test_cached_and_cache_write_tokens_are_charged_at_their_prices() -> None:
    spec = ModelSpec(name="m", input_price=3.0, output_price=15.0, cached_input_price=0.3,
                     cache_write_price=3.75)
    # 10k prompt tokens of which 6k read from the cache and 2k written to it
    cost = spec.call_cost_usd(input_tokens=10_000, output_tokens=1_000,
                              cached_input_tokens=6_000, cache_write_tokens=2_000)
    assert cost == pytest.approx((2_000 * 3.0 + 6_000 * 0.3 + 2_000 * 3.75 + 1_000 * 15.0)
                                 / 1e6)
    # without cache prices the cached tokens cost what any prompt token costs
    plain = ModelSpec(name="p", input_price=3.0, output_price=15.0)
    assert plain.call_cost_usd(input_tokens=10_000, output_tokens=0,
                               cached_input_tokens=6_000) == pytest.approx(0.03)
    # cached tokens are a part of the prompt: never more than all of it
    assert spec.call_cost_usd(input_tokens=100, output_tokens=0,
                              cached_input_tokens=500) == pytest.approx(100 * 0.3 / 1e6)
