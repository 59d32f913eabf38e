"""A version's 3D geometry: made by a job after an IFC import, downloaded as GLB, and where
it puts each element agrees with IfcOpenShell's own world coordinates."""

from __future__ import annotations

from typing import Any

import ifcopenshell
import ifcopenshell.geom
import numpy as np
import pytest

from bem.geometry.glb import read_glb
from bem.testing import ifcgen
from tests.conftest import make_api, settings_for
from tests.integration.test_imports import geometry_when_done, ifc_bytes, imported, model_of

SHAPED = ifcgen.Quirks(geometry=True, millimetres=True)
WALL = "0000000000000000000W01"


def world_boxes(model: ifcopenshell.file) -> dict[str, np.ndarray]:
    """IfcOpenShell's own answer: each element's bounding box in world coordinates."""
    settings = ifcopenshell.geom.settings()
    settings.set("use-world-coords", True)
    boxes = {}
    iterator = ifcopenshell.geom.iterator(settings, model, 1)
    assert iterator.initialize()
    while True:
        shape = iterator.get()
        points = np.asarray(shape.geometry.verts).reshape(-1, 3)
        boxes[shape.guid] = np.array([points.min(axis=0), points.max(axis=0)])
        if not iterator.next():
            return boxes


def glb_boxes(data: bytes) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Each element node's bounding box, its mesh placed by its matrix (IFC axes: the root
    node only turns Z-up into Y-up)."""
    doc, binary = read_glb(data)
    root = doc["nodes"][0]
    assert root["matrix"] == [1, 0, 0, 0, 0, 0, -1, 0, 0, 1, 0, 0, 0, 0, 0, 1]
    boxes = {}
    for index in root["children"]:
        node = doc["nodes"][index]
        accessor = doc["accessors"][
            doc["meshes"][node["mesh"]]["primitives"][0]["attributes"]["POSITION"]
        ]
        view = doc["bufferViews"][accessor["bufferView"]]
        local = np.frombuffer(binary, "<f4", accessor["count"] * 3, view["byteOffset"]).reshape(
            -1, 3
        )
        matrix = np.array(node.get("matrix", np.eye(4).ravel()), dtype=float).reshape(4, 4).T
        world = (matrix @ np.c_[local, np.ones(len(local))].T).T[:, :3]
        boxes[node["name"]] = np.array([world.min(axis=0), world.max(axis=0)])
    return boxes, doc


async def test_an_ifc_import_gets_geometry_where_ifcopenshell_puts_it(database_url: str) -> None:
    model = ifcgen.generate(60, quirks=SHAPED)
    content = ifc_bytes(model)
    async with make_api(settings_for(database_url)) as api:
        headers, mid = await model_of(api)
        job = await imported(api, headers, mid, "shaped.ifc", content)
        assert job["status"] == "succeeded", job
        vid = job["version_id"]
        made = await geometry_when_done(api, headers, vid)
        assert made["status"] == "ready", made
        r = await api.client.get(made["url"], headers=headers)
        assert r.status_code == 200
        assert r.headers["content-type"] == "model/gltf-binary"
        assert r.headers["etag"] == f'"{made["sha256"]}"'
        assert len(r.content) == made["bytes"]

        again = await api.client.get(
            made["url"], headers={**headers, "If-None-Match": r.headers["etag"]}
        )
        assert again.status_code == 304
        head = await api.client.get(made["url"], headers={**headers, "Range": "bytes=0-11"})
        assert head.status_code == 206 and head.content == r.content[:12]

        geometry_job = (await api.client.get(f"/v1/jobs/{made['job_id']}", headers=headers)).json()
        assert geometry_job["kind"] == "geometry" and geometry_job["version_id"] == vid

    ours, doc = glb_boxes(r.content)
    theirs = world_boxes(ifcopenshell.file.from_string(content.decode()))
    assert set(ours) == set(theirs)
    assert made["elements"] == len(ours) == 55  # 60 elements, spaces have no body
    assert made["meshes"] == len(doc["meshes"]) < len(ours)  # equal boxes share a mesh
    # One material per colour, opaque unless the style says otherwise: IfcOpenShell's NaN
    # transparency once made every colour a new, invisible material. Windows are glazed.
    colours = [tuple(m["pbrMetallicRoughness"]["baseColorFactor"]) for m in doc["materials"]]
    assert len(colours) == len(set(colours))
    alphas = sorted(c[3] for c in colours if isinstance(c[3], float) and 0 < c[3] <= 1)
    assert len(alphas) == len(colours) and alphas[0] == 0.7 and alphas[1] == 1.0  # glazing
    for guid, box in theirs.items():
        np.testing.assert_allclose(ours[guid], box, atol=1e-4, err_msg=guid)


async def test_versions_without_geometry_say_why_and_can_ask_for_it(sqlite_url: str) -> None:
    content = ifc_bytes(ifcgen.generate(12, quirks=SHAPED))
    async with make_api(settings_for(sqlite_url, geometry=False)) as api:
        headers = await api.user("alice")
        pid, mid = await api.model(headers)
        job = await imported(api, headers, mid, "shaped.ifc", content)
        vid = job["version_id"]
        state = (await api.client.get(f"/v1/versions/{vid}/geometry", headers=headers)).json()
        assert state["status"] == "none"
        r = await api.client.get(f"/v1/versions/{vid}/geometry.glb", headers=headers)
        assert r.status_code == 409 and r.json()["type"].endswith("/geometry-not-ready")

        viewer = await api.user("victor")
        member = f"/v1/projects/{pid}/members/{api.users['victor'].id}"
        await api.client.put(member, json={"role": "viewer"}, headers=headers)
        refused = await api.client.post(f"/v1/versions/{vid}/geometry", headers=viewer)
        assert refused.status_code == 403

        r = await api.client.post(f"/v1/versions/{vid}/geometry", headers=headers)
        assert r.status_code == 202, r.text
        assert r.headers["location"] == f"/v1/jobs/{r.json()['id']}"
        assert (await geometry_when_done(api, headers, vid))["status"] == "ready"

        plain = await api.upload(headers, mid, [{"global_id": WALL, "ifc_class": "IfcWall"}])
        r = await api.client.post(f"/v1/versions/{plain}/geometry", headers=headers)
        assert r.status_code == 409 and r.json()["type"].endswith("/geometry-unavailable")


async def test_a_failed_geometry_job_leaves_the_version_as_it_was(sqlite_url: str) -> None:
    content = ifc_bytes(ifcgen.generate(12, quirks=SHAPED))
    async with make_api(settings_for(sqlite_url, geometry=False)) as api:
        headers, mid = await model_of(api)
        job = await imported(api, headers, mid, "shaped.ifc", content)
        vid = job["version_id"]
        key = await api.scalar("SELECT source_key FROM versions")
        (api.settings.storage_dir / str(key)[:2] / str(key)).unlink()  # the file is gone
        r = await api.client.post(f"/v1/versions/{vid}/geometry", headers=headers)
        assert r.status_code == 202, r.text
        state = await geometry_when_done(api, headers, vid)
        assert state["status"] == "failed", state
        assert state["error"]["type"] == "source-missing"  # at once: bad input, no retries
        geometry_job = (await api.client.get(f"/v1/jobs/{state['job_id']}", headers=headers)).json()
        assert geometry_job["attempts"] == 1
        glb = await api.client.get(f"/v1/versions/{vid}/geometry.glb", headers=headers)
        assert glb.status_code == 409 and "could not be made" in glb.json()["detail"]
        version = (await api.client.get(f"/v1/versions/{vid}", headers=headers)).json()
        assert version["status"] == "ready"
        page = await api.client.get(f"/v1/versions/{vid}/elements", headers=headers)
        assert page.status_code == 200 and page.json()["items"]


@pytest.mark.parametrize("n", [0, 10])
def test_a_model_without_shapes_is_an_empty_valid_glb(tmp_path: Any, n: int) -> None:
    from bem.geometry.service import make_glb

    path = tmp_path / "plain.ifc"
    (ifcgen.generate(n) if n else ifcopenshell.file(schema="IFC4")).write(str(path))
    written, counts = make_glb(path, tmp_path, 1)
    doc, binary = read_glb(written.path.read_bytes())
    assert counts.elements == 0 and binary == b""
    assert doc["nodes"] == [doc["nodes"][0]] and "buffers" not in doc


@pytest.mark.parametrize("name", ["duplex.ifc", "wall_door_columnt_rgb4x3.ifc"])
def test_real_exports_get_geometry_where_ifcopenshell_puts_it(name: str, tmp_path: Any) -> None:
    """Revit's duplex (shared type representations, openings, styles) and an IFC4X3 file:
    every shape IfcOpenShell builds is a node, placed where its world coordinates say."""
    from bem.geometry.service import make_glb
    from tests.integration.test_real_models import shared

    path = shared(name)
    written, counts = make_glb(path, tmp_path, 1)
    ours, doc = glb_boxes(written.path.read_bytes())
    theirs = world_boxes(ifcopenshell.open(str(path)))
    assert set(ours) == set(theirs) and counts.elements == len(ours)
    assert counts.meshes == len(doc["meshes"]) <= len(ours)
    for guid, box in theirs.items():
        np.testing.assert_allclose(ours[guid], box, atol=1e-3, err_msg=guid)
