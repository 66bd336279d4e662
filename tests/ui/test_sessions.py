"""The web UI's browser session authenticates nobody but the user whose browser opened it, and
the API token never travels in a cookie (issue #21).

Browsers send a 127.0.0.1 cookie to every port of 127.0.0.1, so another local user's web
server on another port receives whatever cookie the dispatcher sets. Here that server runs as
a second OS user created by the test; a real Chromium opens the link `covalent start` printed,
then visits that server. Everything the server received is then replayed to the dispatcher by
that user: nothing of it authenticates.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from covalent import wire
from covalent.config import client_config
from tests.faults.conftest import Cli
from tests.other_user import OtherUser, other_user  # noqa: F401  (fixture)
from tests.ui.test_cli_and_link import start

pytestmark = pytest.mark.slow

# A web server of another user: answers every GET and prints what each request carried.
RECORDER = r"""
import http.server, json
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        print(json.dumps({"path": self.path, "cookie": self.headers.get("Cookie", ""),
                          "authorization": self.headers.get("Authorization", "")}), flush=True)
        body = b"<html><body><p>hello</p><img src='/pixel.png'></body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
print(json.dumps({"port": server.server_address[1]}), flush=True)
server.serve_forever()
"""

# Send each request of argv[1] (JSON: [[method, url, headers, body or null], ...]); print
# the status of each (run as whichever user replays them).
REPLAY = r"""
import json, sys, urllib.error, urllib.request
out = []
for method, url, headers, body in json.loads(sys.argv[1]):
    req = urllib.request.Request(url, method=method, headers=headers,
                                 data=body.encode("latin-1") if body is not None else None)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            out.append(resp.status)
    except urllib.error.HTTPError as exc:
        out.append(exc.code)
print(json.dumps(out))
"""


def _replay(requests: list[list[Any]], user: OtherUser | None = None) -> list[int]:
    if user is not None:
        done = user.python(REPLAY, json.dumps(requests))
    else:
        done = subprocess.run(["/usr/bin/python3", "-I", "-c", REPLAY, json.dumps(requests)],
                              capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout))


def _received(proc: subprocess.Popen[str]) -> list[dict[str, str]]:
    proc.terminate()  # runuser passes it on to the recorder
    out, _ = proc.communicate(timeout=20)
    return [json.loads(line) for line in out.splitlines()[1:] if line.strip()]


async def test_another_port_never_receives_anything_that_authenticates(
        cli: Cli, page: Any, other_user: OtherUser, tmp_path: Path) -> None:
    link, _ = start(cli)
    root, ticket = link.split("/?ticket=")
    token = client_config().token
    assert token and (await page.goto(link)).status == 200
    assert await page.inner_text("h1") == "Dispatches"
    [cookie] = await page.context.cookies()
    assert cookie["name"].startswith("covalent_session_") and cookie["value"] != ticket
    assert token not in cookie["value"] and cookie["httpOnly"] and cookie["sameSite"] == "Strict"

    recorder = other_user.popen(RECORDER, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        port = json.loads(recorder.stdout.readline())["port"]  # type: ignore[union-attr]
        await page.goto(f"http://127.0.0.1:{port}/after-a-click")  # a link, or a redirect
        await page.wait_for_load_state("load")
    finally:
        seen = _received(recorder)
    headers = [v for r in seen for v in (r["cookie"], r["authorization"]) if v]
    assert any(cookie["name"] in h for h in headers), seen  # cookies do cross ports
    assert not any(token in h or ticket in h for h in headers)

    # Everything that server received, replayed to the dispatcher by its user: nothing opens.
    values = [part.partition("=")[2] for h in headers for part in h.split("; ")]
    attempts = [[m, root + path, {"Cookie": h, "Content-Type": "application/json"}, None]
                for h in headers for m, path in (("GET", "/"), ("GET", "/api/v1/listing"),
                                                 ("GET", "/api/v1/status"),
                                                 ("DELETE", "/api/v1/dispatches?all=1"))]
    attempts += [["GET", root + "/api/v1/status", {"Authorization": f"Bearer {v}"}, None]
                 for v in values]
    assert set(_replay(attempts, other_user)) == {401}

    # The same cookie from the browser's own user is the session: it is the binding that refused.
    own = {"Cookie": f"{cookie['name']}={cookie['value']}"}
    assert _replay([["GET", root + "/api/v1/listing", own, None]]) == [200]
    # ... which never submits code: that takes the token.
    frame = ["POST", root + "/api/v1/dispatches", {**own, "Content-Type": wire.CONTENT_TYPE}, "x"]
    assert _replay([frame]) == [403]

    # The API token is never accepted from a cookie, under any name.
    as_cookie = [["GET", root + path, {"Cookie": f"{name}={token}"}, None]
                 for name in ("covalent_token", cookie["name"], "token")
                 for path in ("/", "/api/v1/status")]
    assert set(_replay(as_cookie)) == {401}


def test_a_users_ticket_is_given_again_while_fresh_and_opens_nothing_for_another() -> None:
    from dispatcher.sessions import MAX_SESSIONS, Sessions

    sessions = Sessions(ttl=3600)
    first = sessions.ticket("ada")
    assert sessions.ticket("ada") == first  # `watch covalent status` mints no new ones
    assert sessions.redeem(first) == "ada" and sessions.redeem(first) == "ada"  # reusable
    other = sessions.ticket("bob")
    assert other != first and sessions.redeem(other) == "bob"
    assert sessions.redeem("made-up") is None and Sessions(ttl=3600).redeem(first) is None
    for i in range(MAX_SESSIONS):  # others' tickets push the oldest out...
        sessions.ticket(f"user{i}")
    assert sessions.redeem(first) is None
    assert sessions.redeem(sessions.ticket("ada")) == "ada"  # ...and ada gets a new, live one


def test_a_replicas_signed_ticket_opens_every_replica_with_the_token_and_nothing_else(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from dispatcher.sessions import Sessions

    def replica(token: str, ttl: float = 3600) -> Sessions:
        sessions = Sessions(ttl=ttl, token=token)
        sessions.signed = True
        return sessions

    a, b = replica("shared-token"), replica("shared-token")
    ticket = a.ticket("ada.lovelace")
    assert "shared-token" not in ticket and a.ticket("ada.lovelace") == ticket  # the same again
    assert b.redeem(ticket) == "ada.lovelace" == a.redeem(ticket)  # any replica takes it
    assert replica("another-token").redeem(ticket) is None  # another deployment's: nothing
    single = Sessions(ttl=3600, token="shared-token")  # not a replica: its own tickets only
    assert single.redeem(ticket) is None
    head, _, mac = ticket.rpartition(".")
    for forged in (head.replace("s.", "s.Ym9i", 1) + "." + mac,  # another user's name
                   head.rsplit(".", 1)[0] + ".99999999999." + mac,  # a later expiry
                   head + "." + mac[:-2] + ("AA" if mac[-2:] != "AA" else "BB"), "s.x.y",
                   "s..." , "s.!!.1.x", "s.YQ.1.é", head + "." + mac[:-1] + "é"):
        assert b.redeem(forged) is None, forged
    import dispatcher.sessions as module

    now = module.time.time()
    monkeypatch.setattr(module.time, "time", lambda: now + 3600)  # the ticket's life is 1 h
    assert b.redeem(ticket) is None
