"""What bench.ui puts in the browser: the probe every measured document gets, and the reference page.

The probe is a Playwright init script (it runs before the page's own scripts, outside the page's CSP) that
timestamps, inside the browser, three moments after the frame that shows them (``requestAnimationFrame``
then a task, so the main thread was free to take input):

- ``listPainted``: the list holds the expected rows and ``#app`` is no longer ``aria-busy`` (ms since
  navigation start, ``performance.now()``);
- ``formPainted`` - ``clickAt``: a dialog with inputs is open after a click (the click's own timestamp);
- ``seenAt``: a list button whose text is ``expect`` is shown (``Date.now()``, the clock the Python side
  reads with ``time.time()``, for changes made elsewhere).

The reference is the browser's floor for the same work: a static page of the same 1,000 rows (a table of
buttons, served by aiohttp from this process) whose click opens a small hand-written form in a dialog.
"""

from __future__ import annotations

import html

from aiohttp import web

PROBE_JS = """
(() => {
  const want = %(rows)d;
  const probe = window.__probe = {listReady: null, listPainted: null, clickAt: null, formPainted: null,
                                  expect: null, seenAt: null};
  const afterFrame = (done) => requestAnimationFrame(() => setTimeout(done, 0));
  const check = () => {
    if (probe.listReady === null) {
      const app = document.getElementById('app');
      if (document.querySelectorAll('tbody tr').length >= want && !(app && app.hasAttribute('aria-busy'))) {
        probe.listReady = performance.now();
        afterFrame(() => { probe.listPainted = performance.now(); });
      }
    }
    if (probe.clickAt !== null && probe.formPainted === null && probe.formSeen !== true
        && document.querySelector('dialog[open] input')) {
      probe.formSeen = true;
      afterFrame(() => { probe.formPainted = performance.now(); });
    }
    if (probe.expect !== null && probe.seenAt === null && probe.seenPending !== true) {
      for (const b of document.querySelectorAll('tbody button')) {
        if (b.textContent === probe.expect) {
          probe.seenPending = true;
          requestAnimationFrame(() => { probe.seenAt = Date.now(); probe.seenPending = false; });
          break;
        }
      }
    }
  };
  new MutationObserver(check).observe(document, {childList: true, subtree: true, characterData: true,
                                                 attributes: true, attributeFilter: ['aria-busy', 'open']});
  document.addEventListener('click', (event) => {
    probe.clickAt = event.timeStamp;
    probe.formPainted = null;
    probe.formSeen = false;
  }, true);
})();
"""

_REFERENCE_JS = """
const fields = ['Access Key ID', 'Secret Access Key', 'Endpoint URL', 'Region', 'Maximum Upload Parts'];
const providers = ['Amazon S3', 'Backblaze B2', 'Box', 'Dropbox', 'FTP', 'Google Cloud Storage', 'HTTP'];
document.querySelector('tbody').addEventListener('click', (event) => {
  const button = event.target.closest('button');
  if (!button) return;
  const dialog = document.createElement('dialog');
  const form = document.createElement('form');
  const add = (label, control) => {
    const id = 'f' + form.children.length;
    const l = document.createElement('label');
    l.htmlFor = id;
    l.textContent = label;
    control.id = id;
    form.append(l, control);
  };
  const name = document.createElement('input');
  name.value = button.textContent;
  add('Name', name);
  const select = document.createElement('select');
  for (const p of providers) select.append(new Option(p, p));
  add('Provider', select);
  for (const f of fields) add(f, document.createElement('input'));
  dialog.append(form);
  dialog.addEventListener('close', () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
  name.focus();
});
"""


def reference_html(names: list[str], provider_title: str) -> str:
    rows = "".join(f"<tr><td><button type=button>{html.escape(n)}</button></td><td>{provider_title}</td></tr>"
                   for n in names)
    return ("<!doctype html><html lang=en><head><meta charset=utf-8><title>Reference</title>"
            "<script type=module src=ref.js></script></head><body><h1>Cloud Credentials</h1>"
            f"<table><thead><tr><th>Name</th><th>Provider</th></tr></thead><tbody>{rows}</tbody></table>"
            "</body></html>")


def reference_app(names: list[str], provider_title: str) -> web.Application:
    """The static reference page at ``/`` and its script at ``/ref.js``."""
    page = reference_html(names, provider_title).encode()
    script = _REFERENCE_JS.encode()

    async def index(_request: web.Request) -> web.Response:
        return web.Response(body=page, content_type="text/html", headers={"Cache-Control": "no-cache"})

    async def ref_js(_request: web.Request) -> web.Response:
        return web.Response(body=script, content_type="text/javascript", headers={"Cache-Control": "no-cache"})

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/ref.js", ref_js)
    return app
