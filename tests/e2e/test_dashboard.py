"""The dashboard in headless chromium against the real API and worker processes, with keys on: a finished
job's page drawn from what the API stored (curves, teacher against student, gates, events, a download), a
running job followed live on the list and on its page and cancelled there, and the key form, whose key no
URL the page asks for carries."""

import hashlib
import shutil

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from tests.e2e.conftest import job_request
from tests.e2e.test_auth_stack import create_key
from tests.servers import missing
from tests.stack import ServiceStack

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("browser")]  # first: without chromium, no stack starts

GATES = [
    {"metric": "student.accuracy", "op": ">=", "value": 0.5},
    {"metric": "compression", "op": ">=", "value": 1000},  # fails: the student has 16x fewer parameters
]


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium")
    if chromium is None:
        missing("chromium is not installed (`make test` installs Debian's package when run as root)")
    expect.set_options(timeout=15_000)  # the page refreshes every 2 s, later on a busy machine
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    """A fresh tab (its own sessionStorage); the test fails if a script on it throws."""
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(error))
    yield page
    context.close()
    assert errors == []


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """One stack with keys on for the module: the page then shows its key form, sends the key and downloads
    through Blobs, all of which a stack with keys off leaves out."""
    with ServiceStack(tmp_path_factory.mktemp("dashboard-stack"), auth="on") as running:
        yield running


@pytest.fixture(scope="module")
def key(stack) -> str:
    key = create_key(stack, "acme")
    stack.client.headers["Authorization"] = f"Bearer {key}"
    return key


@pytest.fixture(scope="module")
def files(stack, key, task) -> tuple[str, str]:
    """The ids of the teacher and of the training set."""
    teacher = stack.client.upload(task.teacher, "teacher")["id"]
    return teacher, stack.client.upload(task.train, "dataset")["id"]


@pytest.fixture(scope="module")
def finished_job(stack, files) -> dict:
    job = stack.client.submit(job_request(*files, gates=GATES))
    return stack.client.wait_for_job(job["id"])


def open_with_key(page: Page, url: str, key: str) -> None:
    page.goto(url)
    page.fill("#key", key)
    page.press("#key", "Enter")


def test_a_finished_jobs_page_shows_what_the_api_stored(stack, key, finished_job, page: Page):
    job = finished_job
    assert job["status"] == "succeeded", job["error"]
    epochs = job["progress"]["epochs"]
    open_with_key(page, f"{stack.url}/dashboard/jobs/{job['id']}", key)

    expect(page.locator("#job-status")).to_have_text("succeeded")
    for chart, series in (("loss-chart", "loss"), ("accuracy-chart", "validation_accuracy")):
        expect(page.locator(f'#{chart} .series[data-name="{series}"] circle.point')).to_have_count(epochs)
    for model in ("teacher", "student"):
        accuracy = page.locator(f'#results td[data-model="{model}"][data-metric="accuracy"]')
        expect(accuracy).to_have_text(f"{job['metrics'][model]['accuracy']:.2%}")
    expect(page.locator('.gate[data-passed="true"]')).to_have_count(1)
    expect(page.locator('.gate[data-passed="false"]')).to_have_count(1)
    events = stack.client.get(f"/v1/jobs/{job['id']}/events").json()["data"]
    expect(page.locator("#events li")).to_have_count(len(events))

    with page.expect_download() as download:  # fetched with the key's header, saved from a Blob
        page.locator('a.download[download="student.pt2"]').click()
    sha256 = {artifact["name"]: artifact["sha256"] for artifact in job["artifacts"]}["student.pt2"]
    assert hashlib.sha256(download.value.path().read_bytes()).hexdigest() == sha256


def test_a_running_job_is_followed_live_and_cancelled_from_its_page(stack, key, files, page: Page):
    # Minutes of training, so that it still runs when the page cancels it on a slow, busy machine (300
    # epochs took 10 to 30 s, and once ended before the click).
    job = stack.client.submit(job_request(*files, training={"epochs": 5000}, name="long"))
    open_with_key(page, f"{stack.url}/dashboard", key)
    row = page.locator(f'tr[data-job-id="{job["id"]}"]')
    expect(row.locator(".status")).to_have_text("running")
    progress = row.locator(".progress-text")
    expect(progress).to_contain_text("epoch")
    expect(progress).not_to_have_text(progress.text_content())  # the list refreshes itself

    row.locator("a.job-name").click()
    expect(page.locator("#job-status")).to_have_text("running")
    points = page.locator('#loss-chart .series[data-name="loss"] circle.point')
    expect(points).not_to_have_count(points.count())  # the curve grows as epochs end
    page.locator("#cancel").click()
    expect(page.locator("#job-status")).to_have_text("cancelled")
    expect(page.locator("#cancel")).to_be_hidden()


def test_the_page_asks_for_the_key_and_no_url_carries_it(stack, key, finished_job, page: Page):
    urls = []
    page.on("request", lambda request: urls.append(request.url))
    page.goto(f"{stack.url}/dashboard/")
    expect(page.locator("#key-form")).to_be_visible()
    expect(page.locator("#jobs")).to_be_hidden()
    page.fill("#key", "dk_key-unknown_0123456789")
    page.press("#key", "Enter")
    expect(page.locator("#key-refused")).to_be_visible()

    page.fill("#key", key)
    page.press("#key", "Enter")
    row = page.locator(f'tr[data-job-id="{finished_job["id"]}"]')
    expect(row.locator(".status")).to_have_text("succeeded")
    row.locator("a.job-name").click()
    with page.expect_download() as download:
        page.locator('a.download[download="student.json"]').click()
    assert download.value.path().read_bytes() == stack.client.artifact(finished_job["id"], "student.json")

    page.locator("#forget-key").click()
    expect(page.locator("#key-form")).to_be_visible()
    expect(page.locator("#key-refused")).to_be_hidden()
    assert any("/v1/jobs" in url for url in urls)
    assert [url for url in urls if key in url] == []
