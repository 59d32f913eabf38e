"""File imports as background jobs (in-process runner), on SQLite and PostgreSQL: IFC agrees
with IfcOpenShell element by element, units become SI, DXF becomes elements, and bad files
fail cleanly without leaving anything behind."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import os
import random
import re
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ezdxf
import ifcopenshell
import ifcopenshell.api.pset
import ifcopenshell.api.root
import ifcopenshell.api.spatial
import ifcopenshell.api.unit
import ifcopenshell.util.element as util
import orjson
import pytest

from bem.ingest.ifc import element_documents
from bem.testing import ifcgen
from tests.conftest import Api, make_api, settings_for

pytestmark = pytest.mark.hot_path

TABLES = ("versions", "version_elements", "relations", "element_payloads")


async def model_of(api: Api, user: str = "alice") -> tuple[dict[str, str], str]:
    headers = await api.user(user)
    _, model_id = await api.model(headers)
    return headers, model_id


async def submit(
    api: Api, headers: dict[str, str], model_id: str, name: str, content: bytes, **form: str
) -> Any:
    return await api.client.post(
        f"/v1/models/{model_id}/imports",
        files={"file": (name, content, "application/octet-stream")},
        data=form,
        headers=headers,
    )


async def wait_for(api: Api, headers: dict[str, str], job_id: str) -> dict[str, Any]:
    for _ in range(600):
        job: dict[str, Any] = (await api.client.get(f"/v1/jobs/{job_id}", headers=headers)).json()
        if job["status"] in ("succeeded", "failed"):
            return job
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish: {job}")


async def geometry_when_done(api: Api, headers: dict[str, str], vid: str) -> dict[str, Any]:
    """The version's geometry state once its job (if any) has ended."""
    for _ in range(600):
        r = await api.client.get(f"/v1/versions/{vid}/geometry", headers=headers)
        assert r.status_code == 200, r.text
        if r.json()["status"] not in ("queued", "running"):
            return dict(r.json())
        await asyncio.sleep(0.05)
    raise AssertionError(f"the geometry of {vid} was not made")


async def imported(
    api: Api, headers: dict[str, str], model_id: str, name: str, content: bytes
) -> dict[str, Any]:
    """The import job once it has ended, and the geometry job it queued too (nothing of
    the import is still running when a test looks, or stops its app)."""
    r = await submit(api, headers, model_id, name, content)
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"/v1/jobs/{r.json()['id']}"
    job = await wait_for(api, headers, r.json()["id"])
    if job["status"] == "succeeded":
        await geometry_when_done(api, headers, job["version_id"])
    return job


async def all_elements(api: Api, headers: dict[str, str], vid: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    cursor = None
    while True:
        params = {"limit": 500, **({"cursor": cursor} if cursor else {})}
        page = (
            await api.client.get(f"/v1/versions/{vid}/elements", params=params, headers=headers)
        ).json()
        out.update({e["global_id"]: e for e in page["items"]})
        if not (cursor := page["next_cursor"]):
            return out


def ifc_bytes(model: ifcopenshell.file) -> bytes:
    return model.to_string().encode()


def _gid(entity: Any) -> str | None:
    return entity.GlobalId if entity is not None else None


def _plain(sets: dict[str, Any]) -> dict[str, Any]:
    return {name: {k: v for k, v in values.items() if k != "id"} for name, values in sets.items()}


async def test_ifc_import_agrees_with_ifcopenshell(api: Api) -> None:
    model = ifcgen.generate(120)
    content = ifc_bytes(model)
    headers, mid = await model_of(api)
    job = await imported(api, headers, mid, "tower.ifc", content)
    assert job["status"] == "succeeded", job
    assert job["progress"]["percent"] == 100.0
    assert job["progress"]["elements_per_second"] > 0
    assert job["attempts"] == 1 and job["error"] is None
    vid = job["version_id"]

    version = (await api.client.get(f"/v1/versions/{vid}", headers=headers)).json()
    products = model.by_type("IfcProduct")
    assert version["status"] == "ready" and version["element_count"] == len(products)
    assert version["source_format"] == "ifc" and version["source_schema"] == "IFC4"
    assert version["source_sha256"] == hashlib.sha256(content).hexdigest()
    assert version["units"]["length"] == {"unit": "METRE", "to_si": 1.0}

    stored = await all_elements(api, headers, vid)
    assert set(stored) == {p.GlobalId for p in products}
    for element in products:
        doc = stored[element.GlobalId]
        assert doc["ifc_class"] == element.is_a()
        assert doc["name"] == element.Name
        assert doc["predefined_type"] == util.get_predefined_type(element)
        assert (doc["type"] or {}).get("global_id") == _gid(util.get_type(element))
        assert (doc["container"] or {}).get("global_id") == _gid(util.get_container(element))
        assert (doc["parent"] or {}).get("global_id") == _gid(util.get_aggregate(element))
        assert doc["properties"] == _plain(util.get_psets(element, psets_only=True))
        assert doc["quantities"] == _plain(util.get_psets(element, qtos_only=True))
        material = util.get_material(element, should_skip_usage=True)
        names = {m.Name for m in util.get_materials(element)} if material else set()
        assert {m["name"] for m in doc["materials"]} == names


@pytest.mark.parametrize(
    ("schema", "identifier"), [("IFC2X3", "IFC2X3"), ("IFC4X3", "IFC4X3_ADD2")]
)
async def test_every_supported_schema_imports(
    sqlite_api: Api, schema: str, identifier: str
) -> None:
    api = sqlite_api
    model = ifcgen.small(schema, millimetres=True)
    headers, mid = await model_of(api)
    job = await imported(api, headers, mid, f"{schema}.ifc", ifc_bytes(model))
    assert job["status"] == "succeeded", job
    version = (await api.client.get(f"/v1/versions/{job['version_id']}", headers=headers)).json()
    assert version["source_schema"] == identifier
    assert version["units"]["length"] == {"unit": "MILLIMETRE", "to_si": 0.001}
    stored = await all_elements(api, headers, job["version_id"])
    for element in model.by_type("IfcProduct"):
        doc = stored[element.GlobalId]
        assert doc["ifc_class"] == element.is_a()
        assert (doc["container"] or {}).get("global_id") == _gid(util.get_container(element))
        assert (doc["type"] or {}).get("global_id") == _gid(util.get_type(element))
        assert doc["properties"] == _plain(util.get_psets(element, psets_only=True))
        quantities = _plain(util.get_psets(element, qtos_only=True))
        if quantities:  # millimetres in the file, metres in BEM
            assert doc["quantities"] == {"Qto_WallBaseQuantities": {"Length": 4.0}}
    first = next(d for d in stored.values() if d["name"] == "W0")
    assert first["properties"]["Pset_WallCommon"] == {"FireRating": "REI90", "IsExternal": True}


def with_geometry(f: ifcopenshell.file) -> ifcopenshell.file:
    """Give every wall a 4 x 0.2 x 3 m body, and add one wall without quantity sets."""
    import ifcopenshell.api.context
    import ifcopenshell.api.geometry
    import numpy as np

    model = ifcopenshell.api.context.add_context(f, context_type="Model")
    body = ifcopenshell.api.context.add_context(
        f, context_type="Model", context_identifier="Body", target_view="MODEL_VIEW", parent=model
    )
    bare = ifcopenshell.api.root.create_entity(f, ifc_class="IfcWall", name="Bare")
    for i, wall in enumerate(f.by_type("IfcWall")):
        shape = ifcopenshell.api.geometry.add_wall_representation(
            f, context=body, length=4, height=3, thickness=0.2
        )
        ifcopenshell.api.geometry.assign_representation(f, product=wall, representation=shape)
        placement = np.eye(4)
        placement[0][3] = 10.0 * i
        ifcopenshell.api.geometry.edit_object_placement(f, product=wall, matrix=placement)
    assert bare.Representation is not None
    return f


async def test_geometry_summary_when_enabled(sqlite_url: str) -> None:
    content = ifc_bytes(with_geometry(ifcgen.small("IFC4", millimetres=True)))
    async with make_api(settings_for(sqlite_url, import_geometry=True)) as api:
        headers, mid = await model_of(api)
        job = await imported(api, headers, mid, "solid.ifc", content)
        assert job["status"] == "succeeded", job
        walls = {
            e["name"]: e
            for e in (await all_elements(api, headers, job["version_id"])).values()
            if e["ifc_class"] == "IfcWall"
        }
    for name, wall in walls.items():
        (low, high) = wall["geometry"]["bbox"]
        assert [round(h - lo, 6) for lo, h in zip(low, high, strict=True)] == [4.0, 0.2, 3.0]
        if name != "Bare":  # elements with quantity sets keep their quantities only
            assert "volume" not in wall["geometry"] or wall["geometry"]["volume"] is None
    assert walls["Bare"]["geometry"]["volume"] == pytest.approx(2.4)
    assert walls["Bare"]["geometry"]["area"] == pytest.approx(26.8)
    # Off by default: no geometry.
    async with make_api(settings_for(sqlite_url)) as api:
        headers, mid = await model_of(api, "bob")
        job = await imported(api, headers, mid, "solid.ifc", content)
        docs = await all_elements(api, headers, job["version_id"])
        assert all(d["geometry"] is None for d in docs.values())


async def test_source_download_is_byte_identical(sqlite_api: Api) -> None:
    api = sqlite_api
    content = ifc_bytes(ifcgen.generate(20))
    headers, mid = await model_of(api)
    job = await imported(api, headers, mid, "small.ifc", content)
    url = f"/v1/versions/{job['version_id']}/source"
    r = await api.client.get(url, headers=headers)
    assert r.status_code == 200 and r.content == content
    digest = hashlib.sha256(content)
    assert r.headers["etag"] == f'"{digest.hexdigest()}"'
    assert r.headers["repr-digest"] == f"sha-256=:{base64.b64encode(digest.digest()).decode()}:"
    assert 'filename="small.ifc"' in r.headers["content-disposition"]
    again = await api.client.get(url, headers={**headers, "If-None-Match": r.headers["etag"]})
    assert again.status_code == 304

    # Element uploads keep no file: a clear 404.
    body = b'{"global_id": "0000000000000000000W01", "ifc_class": "IfcWall"}\n'
    r = await api.client.post(
        f"/v1/models/{mid}/versions",
        content=body,
        headers={**headers, "content-type": "application/x-ndjson"},
    )
    missing = await api.client.get(f"/v1/versions/{r.json()['id']}/source", headers=headers)
    assert missing.status_code == 404 and "no stored source" in missing.json()["detail"]


def millimetre_model() -> ifcopenshell.file:
    """One wall in a millimetre project with a length property, a quantity set and a type."""
    f = ifcopenshell.api.project.create_file(version="IFC4")
    project = ifcopenshell.api.root.create_entity(f, ifc_class="IfcProject", name="mm")
    units = [
        ifcopenshell.api.unit.add_si_unit(f, unit_type="LENGTHUNIT", prefix="MILLI"),
        ifcopenshell.api.unit.add_si_unit(f, unit_type="AREAUNIT"),
        ifcopenshell.api.unit.add_si_unit(f, unit_type="VOLUMEUNIT"),
        ifcopenshell.api.unit.add_si_unit(f, unit_type="MASSUNIT", prefix="KILO"),
    ]
    ifcopenshell.api.unit.assign_unit(f, units=units)
    storey = ifcopenshell.api.root.create_entity(f, ifc_class="IfcBuildingStorey", name="L1")
    ifcopenshell.api.aggregate.assign_object(f, products=[storey], relating_object=project)
    wall = ifcopenshell.api.root.create_entity(f, ifc_class="IfcWall", name="W1")
    ifcopenshell.api.spatial.assign_container(f, products=[wall], relating_structure=storey)
    qto = ifcopenshell.api.pset.add_qto(f, product=wall, name="Qto_WallBaseQuantities")
    ifcopenshell.api.pset.edit_qto(
        f, qto=qto, properties={"Length": 5000.0, "NetSideArea": 12.5, "NetVolume": 2.5}
    )
    pset = ifcopenshell.api.pset.add_pset(f, product=wall, name="Pset_WallCommon")
    ifcopenshell.api.pset.edit_pset(f, pset=pset, properties={"FireRating": "REI90"})
    width = f.createIfcPropertySingleValue("Width", None, f.createIfcPositiveLengthMeasure(200.0))
    pset.HasProperties = (*pset.HasProperties, width)
    return f


async def test_units_become_si(database_url: str) -> None:
    async with make_api(settings_for(database_url)) as api:
        headers, mid = await model_of(api)
        job = await imported(api, headers, mid, "mm.ifc", ifc_bytes(millimetre_model()))
        assert job["status"] == "succeeded", job
        vid = job["version_id"]
        version = (await api.client.get(f"/v1/versions/{vid}", headers=headers)).json()
        assert version["units"]["length"] == {"unit": "MILLIMETRE", "to_si": 0.001}
        assert version["units"]["mass"]["to_si"] == 1.0  # kilograms are SI already
        (wall,) = [
            e
            for e in (await all_elements(api, headers, vid)).values()
            if e["ifc_class"] == "IfcWall"
        ]
        assert wall["quantities"]["Qto_WallBaseQuantities"] == {
            "Length": pytest.approx(5.0),
            "NetSideArea": 12.5,
            "NetVolume": 2.5,
        }
        assert wall["properties"]["Pset_WallCommon"]["Width"] == pytest.approx(0.2)
        assert wall["properties"]["Pset_WallCommon"]["FireRating"] == "REI90"


async def test_ifczip_import(sqlite_api: Api) -> None:
    api = sqlite_api
    model = ifcgen.generate(30)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("inside/model.ifc", ifc_bytes(model))
    headers, mid = await model_of(api)
    job = await imported(api, headers, mid, "packed.ifczip", buffer.getvalue())
    assert job["status"] == "succeeded", job
    version = (await api.client.get(f"/v1/versions/{job['version_id']}", headers=headers)).json()
    assert version["element_count"] == len(model.by_type("IfcProduct"))
    assert version["source_format"] == "ifczip"


def drawing(path: Path) -> None:
    doc = ezdxf.new("R2010", setup=False)
    doc.header["$INSUNITS"] = 4  # millimetres
    doc.layers.add("A-WALL-EXT")
    doc.layers.add("A-DOOR")
    knob = doc.blocks.new("KNOB")
    knob.add_circle((0, 0), 20)
    door = doc.blocks.new("DOOR")
    door.add_line((0, 0), (900, 0))
    door.add_blockref("KNOB", (800, 10))
    door.add_attdef("MARK", (0, 0))
    msp = doc.modelspace()
    msp.add_line((0, 0), (5000, 0), dxfattribs={"layer": "A-WALL-EXT", "color": 1})
    insert = msp.add_blockref("DOOR", (1000, 0), dxfattribs={"layer": "A-DOOR"})
    insert.add_auto_attribs({"MARK": "D-01"})
    msp.add_circle((0, 0), 100, dxfattribs={"layer": "NOTES"})
    doc.saveas(path)


async def test_dxf_import(database_url: str, tmp_path: Path) -> None:
    settings = settings_for(database_url, dxf_layer_map={"A-WALL*": "IfcWall", "A-DOOR": "IfcDoor"})
    drawing(tmp_path / "plan.dxf")
    async with make_api(settings) as api:
        headers, mid = await model_of(api)
        content = (tmp_path / "plan.dxf").read_bytes()
        job = await imported(api, headers, mid, "plan.dxf", content)
        assert job["status"] == "succeeded", job
        vid = job["version_id"]
        version = (await api.client.get(f"/v1/versions/{vid}", headers=headers)).json()
        assert version["units"]["length"] == {"unit": "Millimeters", "to_si": 0.001}
        elements = list((await all_elements(api, headers, vid)).values())
        by_type = {e["object_type"]: e for e in elements if e["parent"] is None}
        assert set(by_type) == {"LINE", "INSERT", "CIRCLE"}
        line, door = by_type["LINE"], by_type["INSERT"]
        assert line["ifc_class"] == "IfcWall"
        assert line["properties"]["DXF"]["Layer"] == "A-WALL-EXT"
        assert line["properties"]["DXF"]["Color"] == 1
        assert line["geometry"]["bbox"] == [[0.0, 0.0, 0.0], [5.0, 0.0, 0.0]]
        assert by_type["CIRCLE"]["ifc_class"] == "IfcBuildingElementProxy"
        assert door["ifc_class"] == "IfcDoor" and door["name"] == "DOOR"
        assert door["properties"]["Attributes"] == {"MARK": "D-01"}
        # INSERT nesting as decomposition: the door's line and knob, and the knob's circle.
        children = [
            e for e in elements if (e["parent"] or {}).get("global_id") == door["global_id"]
        ]
        assert sorted(c["object_type"] for c in children) == ["INSERT", "LINE"]
        (knob,) = [c for c in children if c["object_type"] == "INSERT"]
        grandchildren = [
            e for e in elements if (e["parent"] or {}).get("global_id") == knob["global_id"]
        ]
        assert [g["object_type"] for g in grandchildren] == ["CIRCLE"]

        # Handles are stable, so re-importing the same drawing keeps every GlobalId.
        again = await imported(api, headers, mid, "plan.dxf", content)
        assert set(await all_elements(api, headers, again["version_id"])) == {
            e["global_id"] for e in elements
        }


async def counts(api: Api) -> dict[str, int]:
    return {t: await api.scalar(f"SELECT count(*) FROM {t}") for t in TABLES}  # noqa: S608


@pytest.mark.parametrize(
    ("name", "content", "status", "slug"),
    [
        ("model.step", b"ISO-10303-21;", 415, "unsupported-format"),
        ("model", b"ISO-10303-21;", 415, "unsupported-format"),
        ("model.ifc", b"PK\x03\x04 not a step file", 415, "content-mismatch"),
        ("model.dxf", b"ISO-10303-21;\nHEADER;", 415, "content-mismatch"),
        ("model.ifczip", b"ISO-10303-21;", 415, "content-mismatch"),
        ("model.ifc", b"", 422, "empty-file"),
        ("model.ifc", b"   \n\n", 422, "empty-file"),
        ("model.ifczip", b"PK\x03\x04 broken", 422, "bad-source"),
    ],
)
async def test_refused_up_front(
    sqlite_api: Api, name: str, content: bytes, status: int, slug: str
) -> None:
    api = sqlite_api
    headers, mid = await model_of(api)
    before = await counts(api)
    r = await submit(api, headers, mid, name, content)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"].endswith(slug)
    assert await counts(api) == before
    assert await api.scalar("SELECT count(*) FROM jobs") == 0


def zipped(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


async def test_archives_refused_up_front(sqlite_api: Api) -> None:
    api = sqlite_api
    headers, mid = await model_of(api)
    bomb = zipped({"bomb.ifc": b"ISO-10303-21;" + b"\0" * 50_000_000})
    r = await submit(api, headers, mid, "bomb.ifczip", bomb)
    assert r.status_code == 422 and r.json()["type"].endswith("archive-bomb"), r.text
    two = zipped({"a.ifc": b"ISO-10303-21;", "b.ifc": b"ISO-10303-21;"})
    r = await submit(api, headers, mid, "two.ifczip", two)
    assert r.status_code == 422 and "exactly one .ifc" in r.json()["detail"]
    assert await api.scalar("SELECT count(*) FROM jobs") == 0


async def test_oversized_file_is_refused(sqlite_url: str) -> None:
    async with make_api(settings_for(sqlite_url, max_import_bytes=4096)) as api:
        headers, mid = await model_of(api)
        r = await submit(api, headers, mid, "big.ifc", b"ISO-10303-21;" + b"x" * 2_000_000)
        assert r.status_code == 413, r.text
        assert await api.scalar("SELECT count(*) FROM jobs") == 0


def truncated_ifc() -> bytes:
    data = ifc_bytes(ifcgen.generate(20))
    return data[: len(data) // 2]


def garbled_ifc() -> bytes:
    return b"ISO-10303-21;\nHEADER;\nFILE_DESCRIPTION(\nENDSEC;\n#1=IFCWALL(((\nEND-ISO-10303-21;\n"


def dangling_ifc() -> bytes:
    """Property-set relationships pointing at an entity that does not exist: IfcOpenShell
    opens the file, and the elements cannot be read."""
    text = ifcgen.generate(20).to_string()
    broken = re.sub(
        r"(IFCRELDEFINESBYPROPERTIES\('[^']*',[^,]*,[^,]*,[^,]*,\([^)]*\),)#\d+",
        r"\1#999999",
        text,
        count=3,
    )
    assert broken != text
    return broken.encode()


def schema_ifc(name: bytes) -> Callable[[], bytes]:
    """A readable model whose header names ``name``: IFC2X2 is too old; IFC4X1 and the
    pre-release IFC4X3_RC2 start like supported names but are not (they failed as
    malformed-file, IfcOpenShell's parse error)."""
    return lambda: ifc_bytes(ifcgen.generate(20)).replace(
        b"FILE_SCHEMA(('IFC4'))", b"FILE_SCHEMA(('" + name + b"'))"
    )


def garbage_binary_dxf(seed: int) -> bytes:
    """The binary DXF sentinel, then noise: ezdxf raised ValueError or struct.error, which
    was an internal error retried three times."""
    noise = random.Random(seed)
    return b"AutoCAD Binary DXF\r\n\x1a\x00" + bytes(noise.randrange(256) for _ in range(1500))


@pytest.mark.parametrize(
    ("name", "make", "slug", "phrase"),
    [
        ("cut.ifc", truncated_ifc, "truncated-file", "truncated"),
        ("garbled.ifc", garbled_ifc, "malformed-file", "IfcOpenShell cannot read"),
        ("dangling.ifc", dangling_ifc, "malformed-file", "cannot be read"),
        ("old.ifc", schema_ifc(b"IFC2X2"), "unsupported-schema", "Schema IFC2X2 is not"),
        ("x1.ifc", schema_ifc(b"IFC4X1"), "unsupported-schema", "Schema IFC4X1 is not"),
        ("rc2.ifc", schema_ifc(b"IFC4X3_RC2"), "unsupported-schema", "IFC4X3_RC2 is not"),
        (
            "cut.dxf",
            lambda: b"0\nSECTION\n2\nHEADER\n9\n$ACADVER\n1\nAC1024\n",
            "malformed-file",
            "ezdxf",
        ),
        ("garbage.dxf", lambda: garbage_binary_dxf(0), "malformed-file", "ezdxf"),
        ("bad.ndjson", lambda: b'{"global_id": "x"}\n', "unprocessable", "line 1"),
        ("bad.json", lambda: b"[1, 2", "malformed-body", "invalid JSON"),
    ],
)
async def test_bad_files_fail_the_job_and_leave_nothing(
    database_url: str, name: str, make: Any, slug: str, phrase: str
) -> None:
    async with make_api(settings_for(database_url)) as api:
        headers, mid = await model_of(api)
        before = await counts(api)
        job = await imported(api, headers, mid, name, make())
        assert job["status"] == "failed" and job["version_id"] is None
        assert job["error"]["type"] == slug, job
        assert phrase in job["error"]["detail"]
        assert job["attempts"] == 1  # bad input is not retried
        after = await counts(api)
        # The stored file stays (it is the evidence); no version, element or relation does.
        assert after == before
        # Another import right after is unaffected.
        good = await imported(api, headers, mid, "ok.ifc", ifc_bytes(ifcgen.generate(10)))
        assert good["status"] == "succeeded"


async def test_a_failed_job_names_the_invalid_elements_and_fields(sqlite_api: Api) -> None:
    """The job's error keeps which elements and fields were invalid (it kept only the slug
    and the first element's position), every invalid element up to the limit."""
    api = sqlite_api
    docs = list(element_documents(ifcgen.generate(12)))
    docs[2]["quantities"] = {"Q": {"Volume": "a lot"}}
    docs[7]["ifc_class"] = "IfcNotAClass"
    headers, mid = await model_of(api)
    body = b"\n".join(orjson.dumps(d) for d in docs)
    job = await imported(api, headers, mid, "bad.ndjson", body)
    assert job["status"] == "failed" and job["error"]["type"] == "unprocessable"
    assert "and 1 more" in job["error"]["detail"]
    found = {(e["global_id"], tuple(e["loc"])) for e in job["error"]["errors"]}
    assert found == {
        (docs[2]["global_id"], ("quantities", "Q", "Volume")),
        (docs[7]["global_id"], ("ifc_class",)),
    }
    assert all(e["msg"] for e in job["error"]["errors"])


async def test_jobs_are_private_to_the_project(sqlite_api: Api) -> None:
    api = sqlite_api
    headers, mid = await model_of(api)
    job = await imported(api, headers, mid, "a.ifc", ifc_bytes(ifcgen.generate(10)))
    mallory = await api.user("mallory")
    r = await api.client.get(f"/v1/jobs/{job['id']}", headers=mallory)
    assert r.status_code == 404
    r = await api.client.get(f"/v1/versions/{job['version_id']}/source", headers=mallory)
    assert r.status_code == 404
    r = await submit(api, mallory, mid, "b.ifc", ifc_bytes(ifcgen.generate(10)))
    assert r.status_code == 404


async def test_a_stopped_server_resumes_its_jobs(database_url: str) -> None:
    """Shutting down cancels running imports and marks them queued (nothing written); the
    next start picks them up and they succeed."""
    settings = settings_for(database_url)
    model = ifcgen.generate(1500)
    async with make_api(settings) as api:
        headers, mid = await model_of(api)
        r = await submit(api, headers, mid, "m.ifc", ifc_bytes(model))
        job_id = r.json()["id"]
        for _ in range(400):
            job = (await api.client.get(f"/v1/jobs/{job_id}", headers=headers)).json()
            if job["status"] == "running":
                break
            await asyncio.sleep(0.025)
        await asyncio.sleep(0.2)  # well into extraction, far from done
        user = api.users["alice"]
    # The context is gone: the lifespan cancelled the job.
    async with make_api(settings) as api:
        api.users["alice"] = user
        api.tokens["alice"] = headers["Authorization"].removeprefix("Bearer ")
        job = await wait_for(api, headers, job_id)
        assert job["status"] == "succeeded", job
        assert job["attempts"] == 2
        assert job["error"] is None
        assert await api.scalar("SELECT count(*) FROM versions") == 1


async def test_files_half_written_by_a_crashed_process_are_swept_at_start(
    sqlite_url: str, tmp_path: Path
) -> None:
    storage = tmp_path / "sources"
    storage.mkdir()
    abandoned, in_flight = storage / ".incoming-abc123", storage / ".incoming-def456"
    for path in (abandoned, in_flight):
        path.write_bytes(b"half a file")
    two_hours_ago = time.time() - 7200
    os.utime(abandoned, (two_hours_ago, two_hours_ago))
    async with make_api(settings_for(sqlite_url, storage_dir=storage)):
        pass
    assert not abandoned.exists()
    assert in_flight.exists()  # maybe another process's upload: left alone
