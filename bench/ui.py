"""The page's speed in a real browser: `.venv/bin/python -m bench.ui [--write-results]` (issue 10).

A real daemon process holds 1,000 stored credentials (seeded through its API, as bench.run does). Debian's
chromium, headless, driven by Playwright (never a downloaded browser), is logged in once with an API key;
then, with a probe timing each moment inside the browser (bench.ui_pages):

- **navigation**: from navigation start to the list of 1,000 rendered and interactive (the frame after the
  last row is in and the page is no longer busy): a reload, logged in by the page's session token, so it
  includes the page's files, the websocket, the token login, ``cloudsync.providers``, the subscription and
  the query of 1,000;
- **form**: from the click on a credential's name to the frame showing its edit form;
- **live**: from a websocket client sending ``cloudsync.credentials.update`` (a rename) to the frame
  showing the new name in the page's list.

Each is measured beside a reference in the same run, alternating: navigation and form against a static page
of the same 1,000 rows served by aiohttp (its click opens a small hand-written form), live against the same
client's own ``collection_update`` notification (delivery without any page). Ratios are daemon page over
reference. `--write-results` replaces the ``ui`` section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
from aiohttp import web

from bench import results_file
from bench.daemon_peer import Daemon, make_template, names_for, start_copy
from bench.procs import ROOT
from bench.report import machine
from bench.stats import median, percentile
from bench.ui_pages import PROBE_JS, reference_app
from middlewared_cc.client import Client

CHROMIUM = Path(os.environ.get("MWCC_CHROMIUM", "/usr/bin/chromium"))
# The same flags as the browser tests (tests/ui/browser.py): headless, as root, offline.
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
TARGETS = {"navigation": 500.0, "form": 100.0, "live": 200.0}  # ms: median, median, p99
WAIT_MS = 30_000


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"n": len(ordered), "p50": median(ordered), "p90": percentile(ordered, 0.9),
            "p99": percentile(ordered, 0.99), "max": ordered[-1]}


async def _probe_value(page: Any, name: str) -> float:
    await page.wait_for_function(f"() => window.__probe && window.__probe.{name} !== null", timeout=WAIT_MS)
    return float(await page.evaluate(f"() => window.__probe.{name}"))


async def navigate(page: Any, url: str) -> float:
    """Navigation start to the list painted, ms (the page's own clock)."""
    await page.goto(url, wait_until="commit")
    return await _probe_value(page, "listPainted")


async def open_form(page: Any, name: str) -> float:
    """A click on ``name`` to its form painted, ms; the form is closed again (Escape)."""
    await page.get_by_role("button", name=name, exact=True).click()
    painted = await _probe_value(page, "formPainted")
    took = painted - float(await page.evaluate("() => window.__probe.clickAt"))
    await page.keyboard.press("Escape")
    await page.wait_for_function("() => !document.querySelector('dialog[open]')", timeout=WAIT_MS)
    return took


class Notified:
    """The client's own notifications for one credential: when each new name arrived (time.time(), ms)."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}

    def __call__(self, method: str, params: Any) -> None:
        fields = params.get("fields") if isinstance(params, dict) else None
        if fields and "name" in fields:
            self.arrived[str(fields["name"])] = time.time() * 1000


async def live_change(page: Any, client: Client, notified: Notified, ident: int, name: str) -> tuple[float, float]:
    """Rename ``ident`` to ``name`` from the client: (ms until the page shows it, ms until the client's
    notification), both from just before the call was sent."""
    await page.evaluate("n => { window.__probe.expect = n; window.__probe.seenAt = null; }", name)
    sent = time.time() * 1000
    await client.call("cloudsync.credentials.update", ident, {"name": name}, timeout=30)
    seen = await _probe_value(page, "seenAt")
    while name not in notified.arrived:  # noqa: ASYNC110 - after the measured point; an Event per delivery would
        await asyncio.sleep(0.001)      # add work to the notification path being compared
    return seen - sent, notified.arrived[name] - sent


async def guarded_context(browser: Any, origin: str, rows: int) -> Any:
    """A context with the probe, allowed to reach ``origin`` only (anything else aborts the run)."""
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    await context.add_init_script(PROBE_JS % {"rows": rows})
    foreign: list[str] = []

    async def route(r: Any) -> None:
        parts = urlsplit(r.request.url)
        if f"{parts.scheme}://{parts.netloc}" == origin:
            await r.continue_()
        else:
            foreign.append(r.request.url)
            await r.abort()

    await context.route("**/*", route)
    context.foreign = foreign
    return context


async def log_in(page: Any, url: str, key: str) -> None:
    await page.goto(url)
    await page.get_by_role("button", name="With API Key").click()
    await page.get_by_label("API Key").fill(key)
    await page.get_by_role("button", name="Log In").click()
    await page.get_by_role("searchbox", name="Filter").wait_for(timeout=WAIT_MS)


async def alternate(rounds: int, warmup: int, first: Callable[[], Awaitable[float]],
                    second: Callable[[], Awaitable[float]]) -> tuple[list[float], list[float]]:
    """Run the pair ``rounds`` + ``warmup`` times, alternating which goes first; drop the warm-up."""
    a: list[float] = []
    b: list[float] = []
    for i in range(warmup + rounds):
        if i % 2:
            y, x = await second(), await first()
        else:
            x, y = await first(), await second()
        if i >= warmup:
            a.append(x)
            b.append(y)
    return a, b


async def measure(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from playwright.async_api import async_playwright

    names = names_for(args.stored)
    log(f"seeding {args.stored} credentials ...")
    template = await make_template(workdir, "ui-template", args.stored)
    daemon: Daemon = await start_copy(template, workdir, "ui-daemon")
    port = urlsplit(daemon.tcp_target).port
    origin, ui_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}/ui/"
    runner = web.AppRunner(reference_app(names, "Amazon S3"))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    ref_port = runner.addresses[0][1]
    ref_origin = f"http://127.0.0.1:{ref_port}"
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            ours_ctx = await guarded_context(browser, origin, args.stored)
            ref_ctx = await guarded_context(browser, ref_origin, args.stored)
            ours, ref = await ours_ctx.new_page(), await ref_ctx.new_page()
            await log_in(ours, ui_url, template.api_key)
            log("navigation ...")
            nav = await alternate(args.navigations, 2, lambda: navigate(ours, ui_url),
                                  lambda: navigate(ref, ref_origin + "/"))
            log("form ...")
            picks = [names[(i * 7919) % len(names)] for i in range(args.forms + 3)]
            count = iter(range(10**9))
            form = await alternate(args.forms, 3, lambda: open_form(ours, picks[next(count) % len(picks)]),
                                   lambda: open_form(ref, picks[next(count) % len(picks)]))
            log("live ...")
            notified = Notified()
            live_page: list[float] = []
            live_client: list[float] = []
            async with Client(daemon.tcp_target, on_notification=notified) as client:
                assert await client.login_with_api_key(template.api_key, timeout=30)
                await client.call("core.subscribe", "cloudsync.credentials.query", timeout=30)
                ident = template.ids[len(template.ids) // 2]
                for i in range(args.changes + 5):
                    page_ms, client_ms = await live_change(ours, client, notified, ident, f"live-{i:05d}")
                    if i >= 5:
                        live_page.append(page_ms)
                        live_client.append(client_ms)
                    await asyncio.sleep(args.pause_ms / 1000)
            foreign = ours_ctx.foreign + ref_ctx.foreign
            version = browser.version
            await browser.close()
    finally:
        await runner.cleanup()
        await daemon.server.stop()
    return {"stored": args.stored, "chromium": version, "foreign_requests": foreign,
            "navigation": {"daemon": summary(nav[0]), "reference": summary(nav[1])},
            "form": {"daemon": summary(form[0]), "reference": summary(form[1])},
            "live": {"daemon": summary(live_page), "reference": summary(live_client)}}


def verdicts(result: dict[str, Any]) -> list[tuple[str, float, bool]]:
    nav, form, live = (result[k]["daemon"] for k in ("navigation", "form", "live"))
    return [
        (f"navigation to the list of {result['stored']:,} rendered and interactive: median <= 500 ms",
         nav["p50"], nav["p50"] <= TARGETS["navigation"]),
        ("opening one edit form: median <= 100 ms", form["p50"], form["p50"] <= TARGETS["form"]),
        ("a change made elsewhere shown: p99 <= 200 ms", live["p99"], live["p99"] <= TARGETS["live"]),
        ("requests to hosts other than the daemon", float(len(result["foreign_requests"])),
         not result["foreign_requests"]),
    ]


def markdown(result: dict[str, Any], command: str) -> str:
    begin, end = results_file.markers("ui")
    facts = machine()
    lines = [begin, "## The page in a browser (bench.ui)", "",
             (f"Written by `{command}` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: chromium {result['chromium']} "
             f"(Debian, headless) through Playwright, {facts.get('nproc', '?')} cores shared by the daemon, "
             f"the browser and this process (load average at the end {facts.get('load average at the end (1, 5, 15 min)', '?')})."), "",
             "| target | value | result |", "|---|---|---|"]
    for text, value, ok in verdicts(result):
        unit = "" if text.startswith("requests") else " ms"
        lines.append(f"| {text} | {value:,.0f}{unit} | {'PASS' if ok else 'FAIL'} |")
    lines += ["", "| measure | side | n | p50 ms | p90 ms | p99 ms | max ms | p50 ratio |", "|---|---|---|---|---|---|---|---|"]
    refs = {"navigation": "static page of the same rows (aiohttp)", "form": "static page, hand-written form",
            "live": "the updating client's own notification"}
    for key in ("navigation", "form", "live"):
        ours, ref = result[key]["daemon"], result[key]["reference"]
        ratio = ours["p50"] / ref["p50"] if ref["p50"] else float("nan")
        for side, s, r in (("the page", ours, f"{ratio:.2f}x"), (refs[key], ref, "")):
            lines.append(f"| {key} | {side} | {s['n']} | {s['p50']:.1f} | {s['p90']:.1f} | {s['p99']:.1f} "
                         f"| {s['max']:.1f} | {r} |")
    lines += ["", ("Navigation is a reload of /ui/ with the page's session token: files (ETag revalidation), "
              "websocket, token login, `cloudsync.providers`, `core.subscribe` and the query of every "
              "credential, then every row built and painted. Form: a click on a name to the painted dialog. "
              "Live: a websocket client renames one credential; the page updates that one row and moves it to its sorted place."), "", end]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ui", description=__doc__.split("\n")[0])
    parser.add_argument("--stored", type=int, default=1000)
    parser.add_argument("--navigations", type=int, default=20)
    parser.add_argument("--forms", type=int, default=30)
    parser.add_argument("--changes", type=int, default=200)
    parser.add_argument("--pause-ms", type=float, default=20.0, help="between two live changes")
    parser.add_argument("--json", type=Path, help="write the raw figures here")
    parser.add_argument("--write-results", action="store_true", help="put the section into --out")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "RESULTS.md")
    args = parser.parse_args()
    if not CHROMIUM.exists():
        sys.exit(f"bench.ui: chromium not found at {CHROMIUM} (run scripts/install-browser.sh as root)")
    workdir = Path(tempfile.mkdtemp(prefix="bench-ui-"))
    try:
        result = asyncio.run(measure(args, workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    command = "python -m bench.ui " + " ".join(sys.argv[1:])
    text = markdown(result, command.strip())
    print(text)
    if args.json:
        args.json.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    if args.write_results:
        results_file.write_section(args.out, "ui", text)
    if not all(ok for _, _, ok in verdicts(result)):
        sys.exit(1)


if __name__ == "__main__":
    main()
