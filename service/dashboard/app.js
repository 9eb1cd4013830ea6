// The dashboard's entry: picks the page from the path, keeps it live, and asks for an API key when the
// server wants one.

import { ApiError, KeyRequired, forgetKey, hasKey, setKey } from "./api.js";
import { jobPage } from "./job.js";
import { jobsPage } from "./jobs.js";

const RETRY_MS = 5000;
const JOB_PATH = /^\/dashboard\/jobs\/([^/]+)\/?$/;

const page = document.getElementById("page");
const keyForm = document.getElementById("key-form");
const problem = document.getElementById("problem");

function showProblem(message) {
  problem.hidden = message === null;
  problem.textContent = message ?? "";
}

/** `refused`: the server answered 401 to the key this tab had. */
function askForKey(refused) {
  forgetKey();
  live.stop();
  page.hidden = true;
  document.getElementById("forget-key").hidden = true;
  document.getElementById("key-refused").hidden = !refused;
  keyForm.hidden = false;
  keyForm.querySelector("#key").focus();
}

/** Calls a page's refresh again and again, after as many ms as it answers (null: no more), or at once on
 * `now()`. A refused key brings the key form back; another failure is shown, and retried unless the
 * request itself was wrong (a job that does not exist). */
class Live {
  stopped = false;
  woken = false;
  wake = () => {};

  async follow(refresh) {
    while (!this.stopped) {
      this.woken = false;
      let delay;
      try {
        delay = await refresh();
        showProblem(null);
      } catch (error) {
        delay = this.report(error);
      }
      if (delay === null || this.stopped) return;
      if (!this.woken) {
        await new Promise((resolve) => {
          this.wake = resolve;
          setTimeout(resolve, delay);
        });
      }
    }
  }

  now = () => {
    this.woken = true;
    this.wake();
  };

  stop() {
    this.stopped = true;
    this.wake();
  }

  report = (error) => {
    if (error instanceof KeyRequired) {
      askForKey(hasKey());
      return null;
    }
    showProblem(error.message);
    const retry = !(error instanceof ApiError) || error.status >= 500 || error.status === 429;
    page.hidden = !retry; // a request that was wrong (a job that does not exist) leaves nothing to show
    return retry ? RETRY_MS : null;
  };
}

let live = new Live();

function start() {
  live.stop();
  live = new Live();
  keyForm.hidden = true;
  page.hidden = false;
  document.getElementById("forget-key").hidden = !hasKey();
  const job = location.pathname.match(JOB_PATH);
  live.follow(job ? jobPage(page, decodeURIComponent(job[1]), live) : jobsPage(page, live));
}

keyForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const input = keyForm.querySelector("#key");
  setKey(input.value.trim());
  input.value = "";
  start();
});

document.getElementById("forget-key").addEventListener("click", () => askForKey(false));

start();
