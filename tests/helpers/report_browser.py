"""Render a report in headless Chromium and read back what the browser saw.

No new dependency: Debian's `chromium` binary is driven from the command line. A COPY of
the page gets a small script that runs after the `load` event and writes its findings
(every image decoded with a non-zero natural size? how many tables?) as JSON into a
<pre id="lapnet-check"> element; `--dump-dom` prints the DOM after the page settled, and
we parse that element back. A second run takes a screenshot for a human to look at.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

CHECK_SCRIPT = """
<script>
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var tables = Array.prototype.slice.call(document.querySelectorAll("table"));
  var result = {
    images: imgs.length,
    loaded: imgs.filter(function (i) { return i.complete && i.naturalWidth > 0 && i.naturalHeight > 0; }).length,
    shown: imgs.filter(function (i) { var r = i.getBoundingClientRect(); return r.width > 0 && r.height > 0; }).length,
    broken: imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); }).map(function (i) { return i.alt; }),
    sizes: imgs.map(function (i) { return [i.naturalWidth, i.naturalHeight]; }),
    tables: tables.length,
    metrics_tables: document.querySelectorAll("table.metrics").length,
    row_headers: Array.prototype.slice.call(document.querySelectorAll("table.metrics th")).map(function (t) { return t.textContent; }),
    title: document.title
  };
  var pre = document.createElement("pre");
  pre.id = "lapnet-check";
  pre.textContent = JSON.stringify(result);
  document.body.appendChild(pre);
});
</script>
"""

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--disable-dev-shm-usage", "--hide-scrollbars"]


def find_chromium() -> str | None:
    """$LAPNET_CHROMIUM, else chromium / chromium-browser / google-chrome on PATH."""
    env = os.environ.get("LAPNET_CHROMIUM")
    if env:
        return env if Path(env).exists() else None
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _run(cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
    # its own process group, so a hung browser and its helper processes are all stopped
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"chromium timed out after {timeout} s: {err[-500:]}") from None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def check_in_browser(report: Path, work: Path, *, chromium: str, timeout: float = 90.0) -> dict:
    """Render `report` (a copy with the check script) and return the script's findings;
    also writes work/report.png, a 1280x2000 screenshot of the page."""
    work.mkdir(parents=True, exist_ok=True)
    page = report.read_text(encoding="utf-8")
    probe = work / "probe.html"
    probe.write_text(page.replace("</body>", CHECK_SCRIPT + "</body>", 1), encoding="utf-8")
    base = [chromium, *FLAGS, f"--user-data-dir={work / 'profile'}"]
    dom = _run([*base, "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()], timeout)
    m = re.search(r'<pre id="lapnet-check">(.*?)</pre>', dom.stdout, re.S)
    if m is None:
        raise AssertionError(f"the check script left no result (exit {dom.returncode}): {dom.stderr[-800:]}")
    import html

    result = json.loads(html.unescape(m.group(1)))
    shot = work / "report.png"
    _run([*base, f"--screenshot={shot}", "--window-size=1280,2000", report.resolve().as_uri()], timeout)
    result["screenshot"] = str(shot)
    return result
