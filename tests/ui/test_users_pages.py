"""The web UI of a shared dispatcher in a real browser (issue #26): each page says who you
are, the list shows whose each dispatch is, another user's dispatch page is a 404 page, and
a revoked user's open browser session stops working at its next request."""

from __future__ import annotations

import asyncio
from typing import Any

from covalent import wire
from covalent._client import request_json
from covalent.config import ClientConfig
from tests.team import ALICE_WORKFLOW, Team, team  # noqa: F401
from tests.ui.conftest import screenshot_path


async def _enter(browser: Any, t: Team, who: str) -> Any:
    """A fresh browser context of ``who``, let in by a link the CLI would print for them (a
    ticket made with their token), or by one made by hand with their token (admin)."""
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    page = await context.new_page()
    page.set_default_timeout(10_000)
    if who == "admin":
        link = f"/?token={t.tokens[who]}"
    else:
        cfg = ClientConfig(f"http://{t.addr}", t.tokens[who])
        link = (await asyncio.to_thread(request_json, cfg, "POST", "/ui/tickets", body=b"{}"))["path"]
        assert link.startswith("/?ticket=") and t.tokens[who] not in link
    await page.goto(f"http://{t.addr}{link}")
    assert page.url == f"http://{t.addr}/"  # the secret left the address bar
    return page


async def test_pages_say_who_you_are_and_whose_each_dispatch_is(browser: Any, team: Team) -> None:
    alice = await _enter(browser, team, "alice")
    assert (await alice.text_content("#me")).strip() == "alice"
    row = alice.locator(f"tr[data-id='{team.dispatch_id}']")
    assert (await row.locator("td.owner").text_content()) == "alice"
    assert await alice.locator("a[href='/logs']").count() == 0  # the log is for admins
    await alice.click(f"tr[data-id='{team.dispatch_id}'] td.name a")
    await alice.wait_for_selector("#d-owner")
    assert (await alice.text_content("#d-owner")) == "alice"
    await alice.screenshot(path=screenshot_path("users-owner-dispatch"))

    admin = await _enter(browser, team, "admin")
    assert " ".join((await admin.text_content("#me")).split()) == "admin (admin)"
    assert (await admin.locator(f"tr[data-id='{team.dispatch_id}'] td.owner").text_content()
            ) == "alice"
    await admin.screenshot(path=screenshot_path("users-admin-list"))
    logs = await admin.goto(f"http://{team.addr}/logs")
    assert logs is not None and logs.status == 200
    made = await admin.evaluate(  # an admin's browser session may not make users: a token may
        """fetch('/api/v1/users', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                   body: JSON.stringify({name: 'zed'})}).then(r => r.status)""")
    assert made == 403

    bob = await _enter(browser, team, "bob")
    assert (await bob.text_content("#me")).strip() == "bob"
    assert await bob.locator("tr[data-id]").count() == 0
    assert ALICE_WORKFLOW not in await bob.content()
    answer = await bob.goto(f"http://{team.addr}/dispatches/{team.dispatch_id}")
    assert answer is not None and answer.status == 404
    assert "DispatchNotFound" in await bob.content() and ALICE_WORKFLOW not in await bob.content()
    await bob.screenshot(path=screenshot_path("users-other-dispatch-404"))
    logs = await bob.goto(f"http://{team.addr}/logs")
    assert logs is not None and logs.status == 403
    triggers = await bob.goto(f"http://{team.addr}/triggers")
    assert triggers is not None and triggers.status == 200
    assert team.trigger_id not in await bob.content()
    for p in (alice, admin, bob):
        await p.context.close()


async def test_a_revoked_users_browser_session_ends_at_once(browser: Any, team: Team) -> None:
    alice = await _enter(browser, team, "alice")
    assert (await alice.text_content("#me")).strip() == "alice"
    await team.call("admin", "POST", wire.API + "/users/alice/revoke", {})
    answer = await alice.reload()
    assert answer is not None and answer.status == 401
    assert await alice.locator("#me").count() == 0
    await alice.context.close()
