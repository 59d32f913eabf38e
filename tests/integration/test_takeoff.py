"""Takeoff totals agree with a direct computation over the IFC file with IfcOpenShell."""

from __future__ import annotations

import csv
import io
import zipfile
from collections import defaultdict
from typing import Any

import ifcopenshell.util.element as util
import pytest

from bem.testing import ifcgen
from tests.conftest import Api
from tests.integration.test_query_api import loaded

pytestmark = pytest.mark.hot_path

QTO = "Qto_WallBaseQuantities"


def expected(group: str) -> dict[Any, dict[str, float]]:
    """count, sum(NetVolume), max(Length) of the walls per group, by IfcOpenShell."""
    out: dict[Any, dict[str, float]] = defaultdict(lambda: {"n": 0, "vol": 0.0, "len": 0.0})
    model = ifcgen.generate(96)  # keep the file alive while its entities are read
    for wall in model.by_type("IfcWall"):
        qto = util.get_psets(wall)[QTO]
        if group == "storey":
            keys = [util.get_container(wall).Name]
        elif group == "type":
            keys = [util.get_type(wall).Name]
        else:  # apportioned by layer thickness, read from IfcOpenShell's layer set
            layers = util.get_material(wall, should_skip_usage=True).MaterialLayers
            total = sum(layer.LayerThickness for layer in layers)
            keys = [layer.Material.Name for layer in layers]
            shares = [layer.LayerThickness / total for layer in layers]
        for i, key in enumerate(keys):
            first = key not in keys[:i]  # a material of two layers counts the wall once
            out[key]["n"] += first
            out[key]["vol"] += qto["NetVolume"] * (shares[i] if group == "material" else 1)
            out[key]["len"] = max(out[key]["len"], qto["Length"])
    return out


@pytest.mark.parametrize("group", ["storey", "type", "material"])
async def test_takeoff_matches_ifcopenshell(api: Api, group: str) -> None:
    headers, vid = await loaded(api, 96)
    r = await api.client.get(
        f"/v1/versions/{vid}/takeoff",
        params={
            "q": "IfcWall",
            "group_by": group,
            "measures": f"{QTO}.NetVolume,{QTO}.Length:max",
        },
        headers=headers,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert [c.get("unit") for c in body["columns"]] == [None, None, "m3", "m"]
    got = {
        row[group]: (row["count"], row[f"sum({QTO}.NetVolume)"], row[f"max({QTO}.Length)"])
        for row in body["rows"]
    }
    want = expected(group)
    assert set(got) == set(want)
    for key, values in want.items():
        assert got[key][0] == values["n"]
        assert got[key][1] == pytest.approx(values["vol"])
        assert got[key][2] == pytest.approx(values["len"])
    # Apportioned, the totals by material equal the walls' total: nothing counted twice.
    walls = sum(v["vol"] for v in expected("storey").values())
    assert body["totals"][f"sum({QTO}.NetVolume)"] == pytest.approx(walls, abs=1e-5)
    assert bool(body["notes"]) == (group == "material")
    for row in body["rows"]:  # rounded to 6 decimals: no float noise
        value = row[f"sum({QTO}.NetVolume)"]
        assert value == round(value, 6)


async def test_group_by_class_and_property_with_downloads(api: Api) -> None:
    headers, vid = await loaded(api, 48)
    params = {"group_by": "class,Pset_WallCommon.FireRating", "measures": "BEM_Cost.UnitCost"}
    url = f"/v1/versions/{vid}/takeoff"
    body = (await api.client.get(url, params=params, headers=headers)).json()
    walls = [r for r in body["rows"] if r["class"] == "IfcWall"]
    assert {r["Pset_WallCommon.FireRating"] for r in walls} <= {"REI30", "REI60", "REI90", "REI120"}
    assert body["totals"]["count"] == sum(r["count"] for r in body["rows"])
    beams = [r for r in body["rows"] if r["class"] == "IfcBeam"]
    assert beams and beams[0]["sum(BEM_Cost.UnitCost)"] > 0

    r = await api.client.get(url, params={**params, "format": "csv"}, headers=headers)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    table = list(csv.reader(io.StringIO(r.text)))
    assert table[0] == ["class", "Pset_WallCommon.FireRating", "count", "sum(BEM_Cost.UnitCost)"]
    assert len(table) == len(body["rows"]) + 1

    r = await api.client.get(url, params={**params, "format": "xlsx"}, headers=headers)
    assert r.status_code == 200
    with zipfile.ZipFile(io.BytesIO(r.content)) as book:
        assert "xl/worksheets/sheet1.xml" in book.namelist()


async def test_csv_header_cells_cannot_run_as_formulas(sqlite_api: Api) -> None:
    """Column names come from the query: a group or measure named like a formula is quoted
    in the header as data cells are."""
    headers, vid = await loaded(sqlite_api, 12)
    params = {"group_by": "=HYPERLINK(1).x", "measures": "@SUM(1).Q", "format": "csv"}
    r = await sqlite_api.client.get(f"/v1/versions/{vid}/takeoff", params=params, headers=headers)
    assert r.status_code == 200, r.text
    header = next(csv.reader(io.StringIO(r.text)))
    assert header[0] == "'=HYPERLINK(1).x", header
    assert not any(cell.startswith(("=", "+", "-", "@")) for cell in header), header


@pytest.mark.parametrize(
    "params",
    [
        {"group_by": "colour"},
        {"group_by": "class,type,storey,material"},
        {"measures": "NetVolume"},
        {"measures": "Qto_WallBaseQuantities.NetVolume:median"},
        {"q": "IfcWall,"},
    ],
)
async def test_bad_takeoffs_are_400(sqlite_api: Api, params: dict[str, str]) -> None:
    headers, vid = await loaded(sqlite_api, 12)
    r = await sqlite_api.client.get(f"/v1/versions/{vid}/takeoff", params=params, headers=headers)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/problem+json"


async def test_exports_are_throttled_per_user(sqlite_url: str) -> None:
    from tests.conftest import make_api, settings_for

    settings = settings_for(sqlite_url, rate_limit_enabled=True, max_concurrent_exports=1)
    async with make_api(settings) as api:
        headers, vid = await loaded(api, 12)
        user = api.users["alice"]
        url = f"/v1/versions/{vid}/takeoff"
        async with api.app.state.concurrency.slot(f"export:{user.id}", 1):
            busy = await api.client.get(url, params={"format": "csv"}, headers=headers)
            assert busy.status_code == 429
            assert busy.json()["type"].endswith("/too-many-concurrent")
            assert busy.headers["retry-after"]
            # JSON takeoffs are not exports and still answer.
            assert (await api.client.get(url, headers=headers)).status_code == 200
        assert (await api.client.get(url, params={"format": "csv"}, headers=headers)).is_success


async def test_json_takeoffs_are_reads_and_files_spend_the_export_budget(sqlite_url: str) -> None:
    """A script polling JSON takeoffs got 429 once the `export` budget was spent; only the
    file downloads take it now."""
    from tests.conftest import make_api, settings_for

    settings = settings_for(
        sqlite_url, rate_limit_enabled=True, rate_limit_rules={"export": "2/minute"}
    )
    async with make_api(settings) as api:
        headers, vid = await loaded(api, 12)
        url = f"/v1/versions/{vid}/takeoff"
        for group_by in ("class", "storey", "type", "class", "storey"):
            r = await api.client.get(url, params={"group_by": group_by}, headers=headers)
            assert r.status_code == 200, r.text
        for fmt in ("csv", "xlsx"):
            assert (await api.client.get(url, params={"format": fmt}, headers=headers)).is_success
        spent = await api.client.get(url, params={"format": "csv"}, headers=headers)
        assert spent.status_code == 429 and spent.headers["retry-after"], spent.text
        assert (await api.client.get(url, headers=headers)).status_code == 200
