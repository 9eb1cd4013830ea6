// One job: its state, its curves, and once it has ended, its results, gates and artifacts. Everything is
// read from the API at each refresh, so a reload draws the same page as the one that watched it live.

import { ApiError, FINISHED, download, getJSON, hasKey, listItems, request } from "./api.js";
import { drawChart } from "./chart.js";
import { el, fromTemplate, progressBar, statusBadge, table } from "./dom.js";
import { bytes, clock, dateTime, progressText, ranFor } from "./format.js";
import { showGates, showResults } from "./results.js";

const LIVE_MS = 2000;
const CANCELLABLE = new Set(["queued", "validating", "running"]);
// The series of a run besides the job's own training: `trial2_loss`, `generation3_validation_accuracy`.
const OTHER_RUN = /^((?:trial|generation)\d+)_(.+)$/;
const OWN_RUN = "";
const isLoss = (name) => name.endsWith("loss");
const isShare = (name) => name.includes("accuracy") || name.includes("agreement");

/** The metrics' points by run, then by series name: Map(run → Map(name → [{epoch, value}])). */
function seriesByRun(points) {
  const runs = new Map([[OWN_RUN, new Map()]]);
  for (const point of points.filter((p) => p.value !== null)) {
    const [, run, name] = point.name.match(OTHER_RUN) ?? [point.name, OWN_RUN, point.name];
    if (!runs.has(run)) runs.set(run, new Map());
    const series = runs.get(run);
    if (!series.has(name)) series.set(name, []);
    series.get(name).push({ epoch: point.epoch, value: point.value });
  }
  return runs;
}

const runTitle = (run) => (run === OWN_RUN ? "student" : run.replace(/(\d+)$/, " $1"));

function facts(job) {
  return [
    ["Created", dateTime(job.created_at)],
    ["Started", dateTime(job.started_at)],
    ["Finished", dateTime(job.finished_at)],
    ["Ran for", ranFor(job)],
  ].map(([term, value]) => el("div", {}, el("dt", {}, term), el("dd", {}, value)));
}

const eventItem = (event) =>
  el(
    "li",
    { class: `event level-${event.level}` },
    el("time", { title: dateTime(event.created_at) }, clock(event.created_at)),
    el("span", { class: "level" }, event.level),
    el("span", { class: "message" }, event.message),
  );

/** The teacher files' bytes together, or null when one is gone. */
async function teacherBytes(jobRequest) {
  const teachers = jobRequest.teachers ?? [jobRequest.teacher];
  try {
    const files = await Promise.all(teachers.map((teacher) => getJSON(`/v1/files/${teacher.file_id}`)));
    return files.reduce((sum, file) => sum + file.bytes, 0);
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) return null;
    throw error;
  }
}

/** Shows job `jobId` in `main`; returns its refresh, which `live` calls again as often as it answers. */
export function jobPage(main, jobId, live) {
  main.replaceChildren(fromTemplate("job-template"));
  const find = (id) => main.querySelector(`#${id}`);
  const path = `/v1/jobs/${encodeURIComponent(jobId)}`;
  let runs = new Map();
  let plannedEpochs = 0;
  let lastEventId = null;

  function drawCharts() {
    const run = find("run").value || OWN_RUN;
    const series = [...(runs.get(run) ?? [])].map(([name, points]) => ({ name, points }));
    // Epochs count on across a job's runs (trials, generations); the job's own run is drawn to its end.
    const epochs = series.flatMap((one) => one.points.map((point) => point.epoch));
    const first = Math.min(...epochs);
    const last = Math.max(...epochs, run === OWN_RUN ? first + plannedEpochs - 1 : 0);
    const losses = series.filter((one) => isLoss(one.name));
    const shares = series.filter((one) => isShare(one.name));
    drawChart(find("loss-figure"), losses, { first, last });
    drawChart(find("accuracy-figure"), shares, { first, last, fractions: true });
  }

  function showRunChoice() {
    const choice = find("run");
    const listed = [...choice.options].map((option) => option.value);
    choice.append(
      ...[...runs.keys()]
        .filter((run) => !listed.includes(run))
        .map((run) => el("option", { value: run }, runTitle(run))),
    );
    find("run-choice").hidden = runs.size < 2;
  }

  function showJob(job) {
    document.title = `${job.name ?? job.id} · distill`;
    find("job-name").textContent = job.name ?? "Unnamed job";
    find("job-status").replaceChildren(statusBadge(job.status));
    find("job-id").textContent = job.id;
    find("cancel").hidden = !CANCELLABLE.has(job.status);
    find("job-facts").replaceChildren(...facts(job));
    find("job-progress").replaceChildren(progressBar(job.progress.fraction, progressText(job)));
    find("job-error").hidden = job.error === null;
    find("job-error").textContent = job.error ? `${job.error.code}: ${job.error.message}` : "";
    find("request").textContent = JSON.stringify(job.request, null, 2);
  }

  function appendEvents(events) {
    const list = find("events");
    const followingTheEnd = list.scrollTop + list.clientHeight >= list.scrollHeight - 4;
    list.append(...events.map(eventItem));
    if (followingTheEnd) list.scrollTop = list.scrollHeight;
    lastEventId = events.at(-1)?.id ?? lastEventId;
  }

  function showArtifacts(artifacts) {
    find("artifacts-section").hidden = artifacts.length === 0;
    const link = (artifact) =>
      el(
        "a",
        {
          class: "download button",
          href: `${path}/artifacts/${encodeURIComponent(artifact.name)}`,
          download: artifact.name,
        },
        "Download",
      );
    find("artifacts").replaceChildren(
      table(
        ["Name", "Size", "SHA-256", ""],
        artifacts.map((a) => [
          a.name,
          bytes(a.bytes),
          el("code", { title: a.sha256 }, `${a.sha256.slice(0, 16)}…`),
          link(a),
        ]),
      ),
    );
  }

  async function showOutcome(job) {
    showArtifacts(job.artifacts);
    if (job.metrics === null) return;
    const student = job.artifacts.find((artifact) => artifact.name === "student.safetensors");
    showResults(find("results-section"), job.metrics, {
      teacher: await teacherBytes(job.request),
      student: student?.bytes,
    });
    if (job.metrics.gates?.length) showGates(find("gates-section"), job.metrics.gates);
  }

  find("run").addEventListener("change", drawCharts);
  find("cancel").addEventListener("click", () =>
    request(`${path}/cancel`, { method: "POST" }).then(live.now, live.report),
  );
  find("artifacts-section").addEventListener("click", (event) => {
    const link = event.target.closest("a.download");
    if (!link || !hasKey()) return; // without a key the browser follows the link itself, straight to disk
    event.preventDefault();
    download(link.getAttribute("href"), link.download).catch(live.report);
  });

  return async function refresh() {
    // The job first: once it reads as ended, the metrics and events read after it are complete.
    const job = await getJSON(path);
    const [metrics, events] = await Promise.all([
      getJSON(`${path}/metrics`),
      listItems(`${path}/events`, { after: lastEventId }),
    ]);
    showJob(job);
    runs = seriesByRun(metrics.data);
    plannedEpochs = job.request.training.epochs;
    showRunChoice();
    drawCharts();
    appendEvents(events.items);
    if (!FINISHED.has(job.status)) return LIVE_MS;
    await showOutcome(job);
    return null;
  };
}
