"""The dashboard in a real headless Chromium (Debian's, driven by Playwright): sign in with an admin key, see an
attack appear as an incident with its playbook, resolve it from the page; a wrong key is refused. Screenshot saved."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest

from bastion.data import Dataset
from bastion.gateway import Gateway, parse_config
from bastion.gateway.server import serve_in_background

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:  # scripts/services.sh installs it; a missing browser is a failure, not a skip
        pytest.fail("Chromium is not installed (apt-get install chromium; scripts/services.sh does it as root)")
    return path


def test_the_dashboard_shows_an_attack_and_resolves_it_in_a_browser(
    digits_model_file: Path, tmp_path: Path, digits: Dataset
) -> None:
    from playwright.sync_api import sync_playwright

    cfg = parse_config(
        {
            "models": {"digits": {"paths": [str(digits_model_file)]}},
            "database": str(tmp_path / "gw.db"),
            "runtime": "torch",
            "rate": {"requests_per_second": 1000, "inputs_per_minute": 1_000_000, "inputs_per_day": 10_000_000},
        },
        base=tmp_path,
    )
    gw = Gateway.from_config(cfg, monitors=True)
    try:
        from tests.gateway.test_intel import _bundle, _indicator

        from bastion.gateway.intel import import_bundle

        listed = _indicator(pattern="[ipv4-addr:value = '203.0.113.0/24']")
        identity = {
            "type": "identity",
            "spec_version": "2.1",
            "id": "identity--6f0b6f3c-9d5e-4b1e-8a7e-3c2f1a0b9d11",
            "created": "2026-12-01T00:00:00.000Z",
            "modified": "2026-12-01T00:00:00.000Z",
            "name": "Team Blue",
        }
        import_bundle(gw.store, _bundle(identity, {**listed, "created_by_ref": identity["id"]}))
        gw.intel_watch.refresh()
        _, admin = gw.keys.create("ops", ["admin"])
        attacker, key = gw.keys.create("attacker", ["predict:labels"])
        with serve_in_background(gw) as url:
            same = digits.x_test[:1].repeat(64, 1, 1, 1).tolist()  # one input 64 times: a probing pattern
            for _ in range(3):
                httpx.post(
                    f"{url}/v1/models/digits/predict",
                    json={"inputs": same},
                    headers={"Authorization": f"Bearer {key}"},
                    timeout=30,
                )
            incidents = httpx.get(f"{url}/v1/admin/incidents", headers={"Authorization": f"Bearer {admin}"}).json()
            open_ones = [i for i in incidents["incidents"] if i["key_id"] == attacker.key_id]
            assert open_ones, incidents
            iid = open_ones[0]["incident_id"]
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=_chromium(), args=CHROMIUM_ARGS)
                try:
                    page = browser.new_page(viewport={"width": 1280, "height": 900})
                    page.goto(f"{url}/dashboard")
                    page.fill("#key", "bst_not_a_key")
                    page.click("#signin")
                    # CSS waits only: the page's CSP forbids eval, which Playwright's wait_for_function would need
                    page.wait_for_selector("#loginerror:not(:empty)", timeout=15_000)
                    assert page.is_visible("#login") and not page.is_visible("#app")
                    page.fill("#key", admin)
                    page.click("#signin")
                    row = page.wait_for_selector(f'#incidents tr[data-incident="{iid}"]', timeout=15_000)
                    assert row is not None
                    text = row.inner_text()
                    assert attacker.key_id in text and open_ones[0]["kind"] in text and "AML." in text
                    assert page.inner_text("#keys").count(attacker.key_id) == 1  # the attacker's level is shown
                    assert "requests (blue)" in page.inner_html("#chart")
                    assert attacker.key_id in page.inner_text("#perkey")
                    assert "answered" in page.inner_text("#audit") or "refused" in page.inner_text("#audit")
                    # the imported bundle: who shared it, what it holds (no fingerprints, one client network)
                    cells = [page.inner_text(f"#intel tr:nth-child(2) td:nth-child({c})") for c in (2, 4, 5)]
                    assert cells == ["Team Blue", "0", "1"], cells
                    assert "digits" in page.inner_text("#intelmodels")
                    shot = tmp_path / "dashboard.png"
                    page.screenshot(path=str(shot), full_page=True)
                    assert shot.stat().st_size > 20_000
                    page.click(f'#incidents tr[data-incident="{iid}"] button:has-text("resolve")')
                    page.wait_for_selector(f'#incidents tr[data-incident="{iid}"]', state="detached", timeout=15_000)
                finally:
                    browser.close()
            after = gw.incidents.store.get_incident(iid)
            assert after is not None and after.status == "resolved"
    finally:
        gw.close()
