"""Screenshots of a study's report.html as headless Chromium renders it, cut into pages.

For looking at a report the way a reader's browser shows it (the figures' layout, colour
bars, captions) without a desktop: Chromium draws the whole page into one tall PNG, which
is cut into ``--page-px``-high pieces, and the layout probe of the tests (every image
decoded, its rendered size and alt text) is written beside them as JSON.

    python analysis/report_screenshots.py brainalign-demo/report.html --out DIR

Writes ``DIR/page-01.png``... and ``DIR/figures.json`` (with any console lines). Needs
``chromium`` on the PATH (:mod:`brainalign.report.browser`).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from brainalign.report.browser import find_chromium, page_layout, screenshot


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--width", type=int, default=1200, help="window width, CSS px")
    parser.add_argument("--page-px", type=int, default=1600, help="height of each piece")
    args = parser.parse_args()
    if find_chromium() is None:
        raise SystemExit("chromium is not on the PATH (Debian: apt-get install chromium)")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        layout = page_layout(args.report, scratch / "probe", width=args.width)
        console = screenshot(args.report, scratch / "whole.png", scratch / "shot",
                             width=args.width, height=layout["height"] + 40)
        pixels = np.asarray(Image.open(scratch / "whole.png").convert("RGB"))
    pieces = []
    for index, top in enumerate(range(0, pixels.shape[0], args.page_px), start=1):
        path = args.out / f"page-{index:02d}.png"
        Image.fromarray(pixels[top:top + args.page_px]).save(path, optimize=True)
        pieces.append(path.name)
    (args.out / "figures.json").write_text(json.dumps(
        {"report": str(args.report), "width_px": args.width, "height_px": layout["height"],
         "pages": pieces, "console": console, "images": layout["images"]}, indent=2))
    print(f"{len(pieces)} pages, {len(layout['images'])} figures, {len(console)} console "
          f"line(s) -> {args.out}")


if __name__ == "__main__":
    main()
