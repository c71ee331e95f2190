from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from bandit.errors import RequestError, RouteBanditError
from bandit.outcomes import OutcomeTable, OutcomeTableError, assign_split, load_outcomes

HEADER = (
    "id,task,split,prompt,a|quality,a|cost_usd,a|output_chars,"
    "b|quality,b|cost_usd,b|output_chars"
)
ROWS = [
    'p1,math,train,"What is 2+2?",1,0.001,10,0,0.0001,5',
    'p2,code,train,"Write a loop, please",0,0.002,20,1,0.0002,6',
    'p3,math,test,"What is 3+3?",1,0.001,12,0.5,0.0001,4',
]


def write(tmp_path: Path, header: str = HEADER, rows: list[str] | None = None) -> Path:
    path = tmp_path / "outcomes.csv"
    path.write_text("\n".join([header, *(ROWS if rows is None else rows)]) + "\n",
                    encoding="utf-8")
    return path


def shared_outcomes() -> Path:
    root = Path(__file__).resolve().parents[2]
    shared = Path(os.environ.get("ROUTEBANDIT_SHARED", root.parent / "shared"))
    return shared / "data" / "routerbench-subset" / "outcomes.csv"


def test_load_valid_table_into_arrays(tmp_path: Path) -> None:
    t = load_outcomes(write(tmp_path))
    assert t.models == ("a", "b")
    assert t.ids == ("p1", "p2", "p3")
    assert t.tasks == ("math", "code", "math")
    assert t.splits == ("train", "train", "test")
    assert t.prompts[1] == "Write a loop, please"
    assert t.quality.shape == t.cost_usd.shape == t.output_chars.shape == (3, 2)
    assert t.quality[2].tolist() == [1.0, 0.5]
    assert t.cost_usd[1].tolist() == [0.002, 0.0002]
    assert t.indices("train").tolist() == [0, 1]
    assert not t.split_assigned


def test_columns_may_come_in_any_order_and_extra_plain_columns_are_ignored(
    tmp_path: Path,
) -> None:
    header = "b|quality,note,prompt,b|output_chars,id,b|cost_usd,task,split"
    rows = ["1,x,hi,3,p1,0.1,t,train", "0,y,yo,4,p2,0.2,t,test"]
    t = load_outcomes(write(tmp_path, header, rows))
    assert t.models == ("b",)
    assert t.quality[:, 0].tolist() == [1.0, 0.0]


@pytest.mark.parametrize(
    ("header", "rows", "message"),
    [
        (HEADER.replace(",b|cost_usd", ""), [r.rsplit(",", 3)[0] + ",0,5" for r in ROWS],
         "column 'b|cost_usd' is missing"),
        (HEADER.replace("prompt", "text"), ROWS, "column 'prompt' is missing"),
        (HEADER + ",b|latency", [r + ",1" for r in ROWS], "column 'b|latency'"),
        ("id,task,prompt", ["p1,t,hi"], "no model columns"),
        (HEADER, [ROWS[0], ROWS[1].replace(",1,0.0002", ",1.5,0.0002")],
         "line 3, column 'b|quality': must be in [0, 1], got '1.5'"),
        (HEADER, [ROWS[0].replace("0.001", "cheap")],
         "line 2, column 'a|cost_usd': not a number: 'cheap'"),
        (HEADER, [ROWS[0].replace(",10,", ",-1,")],
         "line 2, column 'a|output_chars': must be a finite number >= 0"),
        (HEADER, [ROWS[0], ROWS[1].replace("train", "valid")],
         "line 3, column 'split': must be 'train' or 'test', got 'valid'"),
        (HEADER, [ROWS[0], ROWS[0].replace("math", "x"), ROWS[2]],
         "line 3, column 'id': duplicate id 'p1' (first on line 2)"),
        (HEADER, [ROWS[0], "p9,t,test,hi,1,2"], "line 3: expected 10 fields, got 6"),
        (HEADER, ROWS[:2], "no 'test' prompts"),
        (HEADER, [], "no prompts"),
    ],
    ids=["missing-metric", "missing-prompt", "unknown-metric", "no-models", "quality-range",
         "not-a-number", "negative", "bad-split", "duplicate-id", "ragged-row", "no-test",
         "empty"],
)
def test_errors_name_the_bad_column_or_line(
    tmp_path: Path, header: str, rows: list[str], message: str
) -> None:
    with pytest.raises(OutcomeTableError) as info:
        load_outcomes(write(tmp_path, header, rows))
    assert message in str(info.value)
    assert isinstance(info.value, RequestError)
    assert isinstance(info.value, RouteBanditError)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(OutcomeTableError, match="cannot read outcome table"):
        load_outcomes(tmp_path / "nope.csv")


def test_table_without_split_gets_a_seeded_70_30_split(tmp_path: Path) -> None:
    header = "id,task,prompt,m|quality,m|cost_usd,m|output_chars"
    rows = [f"p{i},t,prompt {i},1,0.001,3" for i in range(20)]
    path = write(tmp_path, header, rows)
    t = load_outcomes(path, seed=5)
    assert t.split_assigned
    assert t.splits.count("test") == 6 and t.splits.count("train") == 14
    assert load_outcomes(path, seed=5).splits == t.splits
    assert any(load_outcomes(path, seed=s).splits != t.splits for s in range(6, 10))
    assert load_outcomes(path, test_fraction=0.5).splits.count("test") == 10


def test_assign_split_keeps_both_sides_non_empty() -> None:
    assert assign_split(2).count("test") == 1
    with pytest.raises(OutcomeTableError):
        assign_split(1)
    with pytest.raises(OutcomeTableError):
        assign_split(10, test_fraction=1.0)


def test_limit_is_seeded_and_keeps_split_shares() -> None:
    n = 100
    t = OutcomeTable.from_rows(
        [f"p{i}" for i in range(n)], ["t"] * n, ["train"] * 70 + ["test"] * 30,
        [f"q{i}" for i in range(n)], ["m"], quality=np.ones((n, 1)),
        cost_usd=np.zeros((n, 1)), output_chars=np.ones((n, 1)),
    )
    small = t.limit(20, seed=1)
    assert (len(small.indices("train")), len(small.indices("test"))) == (14, 6)
    assert small.ids == t.limit(20, seed=1).ids
    assert small.ids != t.limit(20, seed=2).ids
    assert t.limit(1000) is t


@pytest.mark.shared_data
def test_routerbench_subset_loads() -> None:
    path = shared_outcomes()
    if not path.exists():
        pytest.skip(f"routerbench subset not found at {path} (set ROUTEBANDIT_SHARED)")
    t = load_outcomes(path)
    assert (t.n_prompts, t.n_models) == (3150, 11)
    assert (len(t.indices("train")), len(t.indices("test"))) == (2205, 945)
    assert set(t.tasks) == {"arc-challenge", "mbpp", "winogrande"}
    assert ((t.quality == 0) | (t.quality == 1)).all()
