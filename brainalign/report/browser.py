"""A report page as headless Chromium renders it: screenshots, console lines and layout.

The report is read in a browser, so its checks look at it through one: whether the page
logs anything to the console, whether every figure decodes and is laid out at a legible
size with alt text, and what it looks like (screenshots). Used by the tests and by
``analysis/report_screenshots.py``; needs ``chromium`` (Debian's package) on the PATH.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

#: Options for a quiet, offline, headless render that logs the page's console to stderr.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                  "--enable-logging=stderr", "--v=0"]

#: Appended to a copy of a page: once it has loaded, the page height and every image's alt
#: text, decoded (natural) size and laid-out size, as JSON in a <pre> that --dump-dom prints.
LAYOUT_PROBE = """<script>window.addEventListener("load", () => {
  const images = [...document.images].map(img => ({alt: img.alt, complete: img.complete,
    naturalWidth: img.naturalWidth, naturalHeight: img.naturalHeight,
    width: img.getBoundingClientRect().width, height: img.getBoundingClientRect().height}));
  const out = document.createElement("pre");
  out.id = "brainalign-layout-probe";
  out.textContent = JSON.stringify({height: document.body.scrollHeight, images: images});
  document.body.appendChild(out);
});</script>"""


def find_chromium() -> str | None:
    """Path of the Chromium executable, or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _chromium(arguments: list[str], profile: Path, width: int, height: int,
              timeout: float) -> subprocess.CompletedProcess:
    browser = find_chromium()
    if browser is None:
        raise FileNotFoundError("chromium is not on the PATH (Debian: apt-get install chromium)")
    return subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                           f"--window-size={width},{height}", *arguments],
                          capture_output=True, text=True, timeout=timeout)


def page_layout(page: str | Path, profile: str | Path, width: int = 1200,
                timeout: float = 300) -> dict:
    """The page as laid out ``width`` CSS px wide: ``{"height": px, "images": [...]}``, one
    dict per <img> with ``alt``, ``complete``, ``naturalWidth``/``naturalHeight`` (decoded
    pixels; 0 for an image that failed to decode) and ``width``/``height`` (laid out, px).

    ``profile`` is a scratch folder for Chromium's user data."""
    page = Path(page).resolve()
    copy = page.with_name(page.stem + ".layout-probe.html")
    copy.write_text(page.read_text(encoding="utf-8").replace("</body>", LAYOUT_PROBE + "</body>"),
                    encoding="utf-8")
    try:
        run = _chromium(["--dump-dom", copy.as_uri()], Path(profile), width, 1000, timeout)
    finally:
        copy.unlink()
    found = re.search(r'<pre id="brainalign-layout-probe">(.*?)</pre>', run.stdout, re.S)
    if found is None:
        raise RuntimeError(f"chromium did not run the layout probe of {page}:\n{run.stderr[-2000:]}")
    return json.loads(html.unescape(found.group(1)))


def screenshot(page: str | Path, out: str | Path, profile: str | Path, width: int = 1200,
               height: int = 1600, timeout: float = 300) -> list[str]:
    """Write a ``width`` x ``height`` PNG of the page's top to ``out``; returns the console
    lines Chromium logged while loading it (empty for a clean page)."""
    out = Path(out)
    run = _chromium([f"--screenshot={out}", Path(page).resolve().as_uri()], Path(profile),
                    width, height, timeout)
    if not out.exists():
        raise RuntimeError(f"chromium wrote no screenshot of {page}:\n{run.stderr[-2000:]}")
    return [line for line in run.stderr.splitlines() if "CONSOLE" in line]
