"""The studio's page in a real browser (issue 25): Debian's Chromium driven by Playwright for Python, against the
real server (uvicorn in a thread, 127.0.0.1, a free port) over a runs folder of two tiny digit runs. The tests open
the page, draw a 10x10 class grid and watch its progress, explain one of its images, compare the two runs, cancel a
job, and start, stop and resume a training run; each saves a screenshot (to $IMAGEGEN_SCREENSHOTS when set, else
pytest's tmp folder). Every wait is bounded; the file takes about a minute."""

import json
import os
import shutil
import socket
import threading
import time
import urllib.request

import pytest

from imagegen.cli import main

CHROMIUM = shutil.which("chromium") or next((p for p in ("/usr/bin/chromium",) if os.path.exists(p)), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH: `apt-get install chromium` (.ci/run "
                                "installs it); Playwright's own browser download is not used")

TINY = ["model.channels=8,16", "model.attention=false,true", "train.warmup_images=64", "train.log_every=5",
        "train.eval_samples=0", "sample.steps=2", "sample.batch_size=50"]
WAIT = 30_000  # ms: the longest any one step of a test waits for the page


def train_tiny(out, seed):
    argv = ["train", "--dataset", "digits", "--images", "320", "--batch-size", "32", "--out", str(out),
            "--no-progress", *[a for s in [*TINY, f"seed={seed}"] for a in ("--set", s)]]
    assert main(argv) == 0


def start_server(runs, **settings):
    """uvicorn serving create_app(runs, **settings) in a thread on a socket bound here (no race for the port);
    returns the server, its thread and its URL once it accepts connections (at most 20 s)."""
    import uvicorn

    from imagegen.serve.app import create_app

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(runs, **settings), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    """Two tiny runs (digits-a, digits-b: 8x8, 320 images each) under a runs folder, the server over it, and a
    Chromium; yields the URL, the folder, the browser and the screenshot folder."""
    from playwright.sync_api import sync_playwright

    runs = tmp_path_factory.mktemp("runs")
    shots = os.environ.get("IMAGEGEN_SCREENSHOTS") or str(tmp_path_factory.mktemp("screenshots"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IMAGEGEN_CACHE", str(tmp_path_factory.mktemp("cache")))
        mp.setenv("IMAGEGEN_PROGRESS", "0")
        for seed, name in enumerate(("digits-a", "digits-b")):
            train_tiny(runs / name, seed)
        server, thread, url = start_server(runs)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                yield {"url": url, "runs": runs, "browser": browser, "shots": shots}
                browser.close()
        finally:
            server.should_exit = True
            thread.join(15)


RECORDER = """
window.__seen = {states: [], progress: []};
new MutationObserver(() => {
  for (const s of document.querySelectorAll('.job .state')) {
    if (window.__seen.states.at(-1) !== s.dataset.state) window.__seen.states.push(s.dataset.state);
  }
  for (const p of document.querySelectorAll('.job progress')) window.__seen.progress.push(Number(p.value));
}).observe(document, {subtree: true, childList: true, attributes: true});
"""


@pytest.fixture
def page(studio):
    """A fresh browser page on the studio (clipboard allowed, states and progress values recorded), with every
    request it makes listed in page.requests_seen."""
    context = studio["browser"].new_context(viewport={"width": 1280, "height": 900},
                                            permissions=["clipboard-read", "clipboard-write"])
    context.set_default_timeout(WAIT)
    page = context.new_page()
    page.add_init_script(RECORDER)
    page.requests_seen = []
    page.on("request", lambda r: page.requests_seen.append(r.url))
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(studio["url"] + "/")
    page.wait_for_selector("#runs-table tbody tr[data-run='digits-b']")
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def api(studio, path):
    with urllib.request.urlopen(studio["url"] + "/api/v1" + path, timeout=10) as r:
        return json.loads(r.read())


def job_id(page, box):
    return page.locator(f"{box} .jobhead code").first.inner_text()


def wait_state(page, box, states):
    """Wait (bounded by WAIT) until the job in `box` shows one of `states`; returns the one it shows."""
    sel = ", ".join(f"{box} .jobhead .state[data-state='{s}']" for s in states)
    page.wait_for_selector(sel)
    return page.locator(f"{box} .jobhead .state").first.get_attribute("data-state")


def shot(page, studio, name):
    page.screenshot(path=os.path.join(studio["shots"], f"serve-{name}.png"), full_page=True)


def test_page_lists_runs_and_draws_a_class_grid_with_progress(page, studio):
    rows = page.locator("#runs-table tbody tr")
    assert rows.count() == 2
    row = page.locator("#runs-table tr[data-run='digits-a']")
    assert "flow" in row.inner_text() and "digits" in row.inner_text() and "10:" in row.inner_text()
    classes = api(studio, "/runs/digits-a")["classes"]
    page.select_option("#gen-run", "digits-a")
    page.fill("#gen-form [name=steps]", "100")  # slow enough on the tiny model for progress to be seen
    page.click("#gen-grid")
    assert wait_state(page, "#gen-job", ["done", "failed"]) == "done"
    seen = page.evaluate("window.__seen")
    assert {"queued", "running"} & set(seen["states"]) and seen["states"][-1] == "done", seen["states"]
    assert any(0 < v < 1 for v in seen["progress"]), "the progress bar never moved"
    assert any("/events" in u for u in page.requests_seen), "progress did not come by EventSource"
    figures = page.locator("#gen-job .gallery figure")
    assert figures.count() == 100
    names = page.locator("#gen-job .gallery figcaption .cls").all_inner_texts()
    assert names[:10] == [classes[0]] * 10 and sorted(set(names)) == sorted(classes)  # a row per class
    page.wait_for_function("[...document.querySelectorAll('#gen-job .gallery img')].every(i => i.complete && "
                           "i.naturalWidth > 0)")
    job = api(studio, f"/jobs/{job_id(page, '#gen-job')}")
    assert job["params"]["n"] == 100 and job["command"].startswith("imagegen sample")
    assert page.locator("#gen-job a[download]", has_text="grid.png").count() == 1
    page.click("#gen-job .copy-command")
    assert page.evaluate("navigator.clipboard.readText()") == job["command"]
    shot(page, studio, "class-grid")


def test_explain_an_image_from_its_viewer(page, studio):
    page.fill("#gen-form [name=n]", "2")
    page.click("#gen-submit")
    assert wait_state(page, "#gen-job", ["done", "failed"]) == "done"
    page.locator("#gen-job .gallery figure img").nth(1).click()
    dialog = page.locator("#viewer")
    assert "image #1" in dialog.inner_text() and "steps" in dialog.inner_text()
    page.click("#viewer .explain-button")
    assert wait_state(page, "#exp-job", ["done", "failed"]) == "done", page.locator("#exp-job").inner_text()
    figs = page.locator("#exp-job .explain-figs figure")
    assert figs.count() >= 3
    page.wait_for_function("[...document.querySelectorAll('#exp-job img')].every(i => i.complete && "
                           "i.naturalWidth > 0)")
    shot(page, studio, "explain")


def test_compare_two_runs_gives_a_labelled_grid(page, studio):
    page.select_option("#cmp-mode", "runs")
    assert page.locator("#cmp-runs input:checked").count() == 2
    page.fill("#cmp-form [name=seeds]", "0,1,2,3")
    page.click("#cmp-submit")
    assert wait_state(page, "#cmp-job", ["done", "failed"]) == "done", page.locator("#cmp-job").inner_text()
    page.wait_for_function("(() => { const i = document.querySelector('#cmp-job img.compare-grid'); "
                           "return i && i.complete && i.naturalWidth > 0; })()")
    job = api(studio, f"/jobs/{job_id(page, '#cmp-job')}")
    assert job["kind"] == "compare" and job["files"]["grid"]
    shot(page, studio, "compare")


def test_cancel_a_running_job(page, studio):
    page.fill("#gen-form [name=n]", "200")
    page.fill("#gen-form [name=steps]", "5000")  # minutes on the tiny model: it is running when cancelled
    page.select_option("#gen-form [name=sampler]", "heun")
    page.click("#gen-submit")
    wait_state(page, "#gen-job", ["running"])
    page.click("#gen-job .cancel")
    assert wait_state(page, "#gen-job", ["cancelled", "done", "failed"]) == "cancelled"
    assert api(studio, f"/jobs/{job_id(page, '#gen-job')}")["state"] == "cancelled"
    page.fill("#gen-form [name=steps]", "2")  # the worker serves the next job
    page.fill("#gen-form [name=n]", "1")
    page.click("#gen-submit")
    assert wait_state(page, "#gen-job", ["done", "failed"]) == "done"
    shot(page, studio, "cancel")


def test_start_stop_and_resume_a_training_run(page, studio):
    page.fill("#train-form [name=name]", "tiny")
    page.fill("#train-form [name=dataset]", "digits")
    page.fill("#train-form [name=budget]", "2")
    page.click("#train-submit")
    card = page.locator(".train-card").first
    page.wait_for_selector(".train-card .state[data-state='running']")
    page.wait_for_function("[...document.querySelectorAll('.train-card')].some(c => / [1-9][0-9,]* images/"
                           ".test(c.innerText))", timeout=120_000)  # the child is training (its first log line:
    # on one thread, beside the other test process, that took longer than the usual wait)
    page.click(".train-card .stop")
    page.wait_for_selector(".train-card .state[data-state='stopped']")
    shot(page, studio, "train-stopped")
    assert (studio["runs"] / "tiny").is_dir()
    page.click(".train-card .resume")
    page.wait_for_selector(".train-card .state[data-state='running']")
    page.click(".train-card .stop")
    page.wait_for_selector(".train-card .state[data-state='stopped']")
    assert card.locator("svg.loss").count() == 1
    shot(page, studio, "train")


def test_a_server_with_a_token_is_used_with_the_token_from_the_url(studio, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(studio["runs"] / "digits-a", runs / "digits-a", ignore=shutil.ignore_patterns("state*"))
    server, thread, url = start_server(runs, token="s3cret")
    context = studio["browser"].new_context()
    context.set_default_timeout(WAIT)
    try:
        page = context.new_page()
        page.goto(url + "/")  # no token: the page says why it shows nothing
        page.wait_for_selector("#message.error")
        assert "token" in page.inner_text("#message")
        page.goto(url + "/?token=s3cret")  # the token: Bearer on fetch, ?token= on EventSource and images
        page.wait_for_selector("#runs-table tr[data-run='digits-a']")
        page.fill("#gen-form [name=n]", "3")
        page.click("#gen-submit")
        assert wait_state(page, "#gen-job", ["done", "failed"]) == "done"
        page.wait_for_function("(() => { const i = [...document.querySelectorAll('#gen-job .gallery img')]; "
                               "return i.length === 3 && i.every(x => x.complete && x.naturalWidth > 0); })()")
        shot(page, studio, "token")
    finally:
        context.close()
        server.should_exit = True
        thread.join(15)
