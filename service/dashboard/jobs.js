// The jobs list: the newest first, live while any of them is under way.

import { FINISHED, listItems } from "./api.js";
import { el, fromTemplate, progressBar, statusBadge } from "./dom.js";
import { ago, dateTime, percent, progressText, ranFor } from "./format.js";

const LIVE_MS = 2000;
const IDLE_MS = 10_000; // with no job under way, a job submitted elsewhere still shows up soon

function row(job) {
  return el(
    "tr",
    { "data-job-id": job.id },
    el(
      "td",
      {},
      el(
        "a",
        { class: "job-name", href: `/dashboard/jobs/${encodeURIComponent(job.id)}` },
        job.name ?? "Unnamed job",
      ),
      el("div", { class: "muted mono" }, job.id),
    ),
    el("td", {}, statusBadge(job.status)),
    el("td", {}, progressBar(job.progress.fraction, progressText(job))),
    el("td", { class: "number" }, percent(job.metrics?.student.accuracy)),
    el("td", { title: dateTime(job.created_at) }, ago(job.created_at)),
    el("td", { class: "number" }, ranFor(job)),
  );
}

/** Shows the list in `main`; returns its refresh, which `live` calls again as often as it answers. */
export function jobsPage(main, live) {
  main.replaceChildren(fromTemplate("jobs-template"));
  document.title = "Jobs · distill";
  const filter = main.querySelector("#status-filter");
  const more = main.querySelector("#more-jobs");
  let pages = 1;
  filter.addEventListener("change", () => {
    pages = 1;
    live.now();
  });
  more.addEventListener("click", () => {
    pages += 1;
    live.now();
  });

  return async function refresh() {
    const { items, more: older } = await listItems("/v1/jobs", { status: filter.value, pages });
    main.querySelector("#jobs tbody").replaceChildren(...items.map(row));
    main.querySelector("#no-jobs").hidden = items.length > 0;
    more.hidden = !older;
    return items.some((job) => !FINISHED.has(job.status)) ? LIVE_MS : IDLE_MS;
  };
}
