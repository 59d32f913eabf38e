"""The web console in Debian's Chromium (headless, driven by Playwright): sign in with an
emailed code, browse to the demo version, query, inspect, take off, see the 3D view, import
a new version while another tab follows the project live, and compare the two."""

from __future__ import annotations

import email
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bem.testing import ifcgen
from tests.helpers import CHROMIUM, CHROMIUM_ARGS, REQUIRE_SERVICES, bem, bem_server

pytestmark = pytest.mark.e2e

# Where a run may leave a screenshot of each page (docs/console.md shows them).
SHOTS = os.environ.get("BEM_CONSOLE_SHOTS")


@pytest.fixture
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        reason = "chromium is not installed (Debian package chromium)"
        if REQUIRE_SERVICES:
            pytest.fail(f"BEM_REQUIRE_SERVICES=1 but {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    mail = tmp_path / "mail"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BEM_")}
    env = {
        **clean,
        "BEM_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'bem.db'}",
        "BEM_MAIL_BACKEND": "file",
        "BEM_MAIL_FILE_DIR": str(mail),
        "BEM_RATE_LIMIT_ENABLED": "false",
        "BEM_WEBHOOK_ALLOW_PRIVATE": "true",  # the settings page adds one to 127.0.0.1
    }
    bem(["migrate"], env, tmp_path)
    bem(["demo", "--size", "40"], env, tmp_path)
    token = bem(["users", "create-admin", "--email", "ops@example.com"], env, tmp_path)
    with bem_server(env, tmp_path) as (base, _):
        yield base, token.stdout.strip(), mail


def code_for(mail: Path, after: float) -> str:
    for _ in range(100):
        fresh = [p for p in mail.glob("*.eml") if p.stat().st_mtime >= after]
        if fresh:
            message = email.message_from_bytes(fresh[0].read_bytes())
            body = message.get_payload(decode=True)
            assert isinstance(body, bytes)
            found = re.search(rb"code is (\d{6,10})", body)
            assert found is not None
            return found.group(1).decode()
        time.sleep(0.1)
    raise AssertionError("no sign-in mail arrived")


def shot(page: Any, name: str) -> None:
    if SHOTS:
        page.screenshot(path=str(Path(SHOTS) / f"{name}.png"))


def sign_in(page: Any, base: str, mail: Path) -> None:
    page.goto(f"{base}/")  # a browser at / is sent to the console, and to sign in
    page.get_by_label("Email", exact=True).fill("ops@example.com")
    shot(page, "sign-in")
    asked = time.time() - 1
    page.get_by_role("button", name="Email me a code").click()
    page.get_by_label("The code we emailed you").fill(code_for(mail, asked))
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Projects").wait_for()


def drawn_pixels(page: Any) -> tuple[float, list[int] | None]:
    """The share of the 3D canvas that is not background, and one such pixel (x, y)."""
    result: tuple[float, list[int] | None] = tuple(  # type: ignore[assignment]
        page.locator("canvas").evaluate(
            """canvas => {
              const copy = document.createElement("canvas");
              copy.width = canvas.width; copy.height = canvas.height;
              const ctx = copy.getContext("2d");
              ctx.drawImage(canvas, 0, 0);
              const data = ctx.getImageData(0, 0, copy.width, copy.height).data;
              const [r0, g0, b0] = [data[0], data[1], data[2]];
              let drawn = 0, at = null;
              for (let i = 0; i < data.length; i += 4) {
                const d = Math.abs(data[i] - r0) + Math.abs(data[i+1] - g0)
                  + Math.abs(data[i+2] - b0);
                if (d > 30) {
                  drawn++;
                  const x = (i / 4) % copy.width, y = Math.floor(i / 4 / copy.width);
                  if (!at && x > copy.width / 3) at = [x, y];
                }
              }
              const scale = canvas.width / canvas.clientWidth;
              return [drawn / (data.length / 4), at && [at[0] / scale, at[1] / scale]];
            }"""
        )
    )
    return result


def test_a_coordinator_looks_queries_takes_off_imports_and_compares(
    server: tuple[str, str, Path], browser: Any
) -> None:
    base, token, mail = server
    headers = {"Authorization": f"Bearer {token}"}
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    sign_in(page, base, mail)
    shot(page, "projects")

    page.get_by_role("link", name="Demo").click()
    page.get_by_text("live", exact=True).wait_for()  # the project's activity feed is open
    page.get_by_role("link", name="Architecture").click()
    page.get_by_role("link", name="1", exact=True).click()
    count = page.locator(".count")
    count.get_by_text("elements match").wait_for()
    version = page.url.split("#/versions/")[1].split("/")[0]

    # A selector: the count the server gives, the page of elements, then one inspected.
    page.get_by_label("Selector", exact=True).fill("IfcWall, Pset_WallCommon.LoadBearing=TRUE")
    page.get_by_role("button", name="Run").click()
    expected = httpx.get(
        f"{base}/v1/versions/{version}/takeoff",
        params={"q": "IfcWall, Pset_WallCommon.LoadBearing=TRUE"},
        headers=headers,
    ).json()["totals"]["count"]
    count.get_by_text(f"{expected} elements match").wait_for()
    rows = page.locator("tbody tr[tabindex]")
    assert rows.count() == expected
    name = rows.first.locator("td").nth(1).inner_text()
    rows.first.click()
    inspector = page.get_by_role("complementary", name="Inspector")
    inspector.get_by_role("heading", name=name).wait_for()
    inspector.get_by_role("heading", name="Neighbours").wait_for()
    assert inspector.get_by_role("region", name="Neighbours").locator("tbody tr").count() > 0
    shot(page, "elements")
    # A mistake is shown where it is.
    page.get_by_label("Selector", exact=True).fill("IfcWall,,")
    page.get_by_role("button", name="Run").click()
    page.get_by_role("alert").filter(has_text="position 8").wait_for()
    assert page.locator(".caret").inner_text() == ","

    page.get_by_role("link", name="Takeoff").click()
    page.get_by_role("img", name="Takeoff chart").wait_for()
    by_class = httpx.get(f"{base}/v1/versions/{version}/takeoff", headers=headers).json()
    assert page.locator("svg.chart rect").count() == len(by_class["rows"])
    shot(page, "takeoff")

    page.get_by_role("link", name="Spatial tree").click()
    page.get_by_role("tree", name="Spatial tree").get_by_text("Level 00").wait_for()
    shot(page, "tree")

    page.get_by_role("link", name="3D").click()
    page.locator("canvas[data-loaded=true]").wait_for(timeout=20_000)
    share, pixel = drawn_pixels(page)
    assert share > 0.02 and pixel is not None, share  # the building, not a blank canvas
    page.locator("canvas").click(position={"x": pixel[0], "y": pixel[1]})
    page.get_by_role("complementary", name="Inspector").get_by_role("heading", level=2).wait_for()
    shot(page, "viewer")
    # What a selector matches, coloured, then alone.
    page.get_by_label("Colour what a selector matches").fill("IfcSlab")
    page.get_by_role("button", name="Show").click()
    slabs = httpx.get(
        f"{base}/v1/versions/{version}/takeoff", params={"q": "IfcSlab"}, headers=headers
    ).json()["totals"]["count"]
    page.get_by_text(f"{slabs} elements match.").wait_for()
    page.get_by_label("Isolate").check()
    isolated, _ = drawn_pixels(page)
    assert 0 < isolated < share, (isolated, share)

    # Another tab follows the project while this one imports the next version.
    follower = browser.new_page(viewport={"width": 1280, "height": 800})
    follower.goto(f"{base}/console#/")
    follower.evaluate(
        "pair => sessionStorage.setItem('bem.session', pair)",
        page.evaluate("() => sessionStorage.getItem('bem.session')"),
    )
    follower.evaluate("() => { location.hash = '#/'; }")  # it was sent to sign in
    follower.get_by_role("link", name="Demo").click()
    follower.get_by_text("live", exact=True).wait_for()

    page.get_by_role("link", name="Architecture").click()
    changed = ifcgen.mutate(ifcgen.generate(40, quirks=ifcgen.Quirks(geometry=True)), seed=2)
    ifc = Path(os.environ.get("TMPDIR", "/tmp")) / f"v2-{os.getpid()}.ifc"
    changed.write(str(ifc))
    try:
        page.get_by_label("IFC, IFCZIP, DXF, NDJSON or JSON file").set_input_files(str(ifc))
        page.get_by_label("What changed").fill("Second issue")
        page.get_by_role("button", name="Import").click()
        page.wait_for_url(re.compile(r".*#/versions/(?!" + version + r")[\w-]+$"), timeout=30_000)
    finally:
        ifc.unlink(missing_ok=True)
    follower.get_by_text("version.created").wait_for(timeout=15_000)
    shot(follower, "project")

    page.get_by_role("link", name="Diff").click()
    page.get_by_label("Other version").select_option(index=1)  # the only other: version 1
    page.locator(".count").wait_for()
    assert re.search(r"(added|removed|changed) \d+", page.locator(".count").inner_text())
    page.locator("tbody tr[tabindex]").filter(has_text="changed").first.click()
    sides = page.get_by_role("complementary", name="Both sides")
    sides.get_by_text("fields differ").wait_for()
    assert sides.locator("tbody tr").count() >= 1  # the changed fields, before and after
    shot(page, "diff")
    page.get_by_role("link", name="Show the changes in 3D").click()
    page.locator(".legend").get_by_text("added").wait_for(timeout=20_000)
    assert drawn_pixels(page)[0] > 0.02

    # An owner's settings: a member added by email, a token made (its secret shown once).
    invited = httpx.post(
        f"{base}/v1/admin/users",
        json={"email": "ed@example.com", "name": "Ed"},
        headers=headers,
    )
    assert invited.status_code == 201, invited.text
    page.get_by_role("link", name="Demo").click()
    page.get_by_role("link", name=re.compile("Settings")).click()
    page.get_by_label("Add by email").fill("ed@example.com")
    page.get_by_label("Role", exact=True).select_option("editor")
    page.get_by_role("button", name="Add", exact=True).click()
    page.get_by_label("Role of ed@example.com").wait_for()
    assert page.get_by_label("Role of ed@example.com").input_value() == "editor"
    page.get_by_label("Send every event to").fill("http://127.0.0.1:9/hook")
    page.get_by_role("button", name="Add webhook").click()
    page.get_by_role("alert").filter(has_text="Signing secret").locator("code").wait_for()
    page.get_by_role("button", name="Delete http://127.0.0.1:9/hook").wait_for()
    page.get_by_label("New token's name").fill("script")
    page.get_by_role("button", name="Create token").click()
    page.get_by_role("alert").filter(has_text="Token (shown once").locator("code").wait_for()
    assert page.locator("section.panel .error").count() == 0  # every section loaded
    shot(page, "settings")

    # Tablet width: the panels stack, nothing runs off the side.
    page.set_viewport_size({"width": 820, "height": 1180})
    for tab in ("elements", "takeoff", "3d"):
        page.goto(f"{base}/console#/versions/{version}/{tab}")
        page.locator("nav.tabs").wait_for()
        page.wait_for_load_state("networkidle")
        overflow = page.evaluate("() => document.documentElement.scrollWidth - innerWidth")
        assert overflow <= 0, (tab, overflow)
    assert not errors, errors


def test_the_console_is_served_under_a_strict_policy(server: tuple[str, str, Path]) -> None:
    base, _, _ = server
    r = httpx.get(f"{base}/console")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    policy = r.headers["content-security-policy"]
    assert "script-src 'self';" in policy and "unsafe-inline" not in policy
    assert httpx.get(f"{base}/console/assets/app.js").status_code == 200
    assert httpx.get(f"{base}/", headers={"Accept": "text/html"}).headers["location"] == "/console"
    assert httpx.get(f"{base}/").status_code == 404  # API clients: problem+json as before


def test_totp_sign_in_keyboard_use_and_sign_out(
    server: tuple[str, str, Path], browser: Any
) -> None:
    import pyotp

    base, token, mail = server
    headers = {"Authorization": f"Bearer {token}"}
    enrolled = httpx.post(f"{base}/v1/me/totp", headers=headers)
    assert enrolled.status_code in (200, 201), enrolled.text
    totp = pyotp.TOTP(enrolled.json()["secret"])
    confirmed = httpx.post(f"{base}/v1/me/totp/confirm", json={"code": totp.now()}, headers=headers)
    assert confirmed.status_code == 200, confirmed.text

    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(f"{base}/console")
    page.get_by_label("Email", exact=True).fill("ops@example.com")
    asked = time.time() - 1
    page.get_by_role("button", name="Email me a code").click()
    page.get_by_label("The code we emailed you").fill(code_for(mail, asked))
    page.get_by_role("button", name="Sign in").click()
    # The server asks for the second factor; the same emailed code still stands.
    second = page.get_by_label("Authenticator code (TOTP)")
    second.wait_for()
    assert second.evaluate("el => document.activeElement === el")
    second.fill(totp.at(time.time() + 30))  # the next step: the current one was used above
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Projects").wait_for()

    # The keyboard alone: a row opens in the inspector with Enter.
    page.get_by_role("link", name="Demo").click()
    page.get_by_role("link", name="Architecture").click()
    page.get_by_role("link", name="1", exact=True).click()
    row = page.locator("tbody tr[tabindex]").first
    row.wait_for()
    row.focus()
    page.keyboard.press("Enter")
    name = row.locator("td").nth(1).inner_text()
    page.get_by_role("complementary", name="Inspector").get_by_role("heading", name=name).wait_for()

    held = page.evaluate("() => JSON.parse(sessionStorage.getItem('bem.session'))")
    page.get_by_role("button", name="Sign out").click()
    page.get_by_role("heading", name="Sign in to BEM").wait_for()
    assert page.evaluate("() => sessionStorage.getItem('bem.session')") is None
    refresh = httpx.post(
        f"{base}/v1/auth/token/refresh", json={"refresh_token": held["refresh_token"]}
    )
    assert refresh.status_code == 401  # signing out revoked the session
