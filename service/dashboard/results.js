// A finished job's `metrics`: teacher against student (and the int8 and ONNX students), the other students
// a method trained, the temperature search, and the gates.

import { el, table } from "./dom.js";
import { bytes, count, figure, known, latency, percent, times } from "./format.js";

/** The models compared, as columns: the teacher, the student, and the students exported from it. */
function models(metrics, sizes) {
  const exported = (key, title, figures) => ({ key, title, ...figures, studentAgreement: figures.agreement });
  const columns = [
    { key: "teacher", title: "Teacher", ...metrics.teacher, bytes: sizes.teacher },
    {
      key: "student",
      title: "Student",
      ...metrics.student,
      bytes: sizes.student,
      teacherAgreement: metrics.agreement,
    },
  ];
  if (metrics.int8) columns.push(exported("int8", "Student int8", metrics.int8));
  if (metrics.onnx) columns.push(exported("onnx", "ONNX", metrics.onnx));
  if (metrics.onnx?.int8) columns.push(exported("onnx-int8", "ONNX int8", metrics.onnx.int8));
  return columns;
}

const ROWS = [
  { metric: "accuracy", title: "Validation accuracy", value: (model) => model.accuracy, format: percent },
  { metric: "parameters", title: "Parameters", value: (model) => model.parameters, format: count },
  { metric: "bytes", title: "Size", value: (model) => model.bytes, format: bytes },
  {
    metric: "latency-1",
    title: "Latency per sample, batch 1",
    value: (model) => model.latency_ms?.batch_1,
    format: latency,
  },
  {
    metric: "latency-64",
    title: "Latency per sample, batch 64",
    value: (model) => model.latency_ms?.batch_64,
    format: latency,
  },
  {
    metric: "teacher-agreement",
    title: "Top-1 agreement with the teacher",
    value: (model) => model.teacherAgreement,
    format: percent,
  },
  {
    metric: "student-agreement",
    title: "Top-1 agreement with the student",
    value: (model) => model.studentAgreement,
    format: percent,
  },
];

function comparison(metrics, sizes) {
  const columns = models(metrics, sizes);
  const rows = ROWS.filter((row) => columns.some((model) => known(row.value(model))));
  return [
    el(
      "thead",
      {},
      el("tr", {}, el("th", {}), ...columns.map((model) => el("th", { class: "number" }, model.title))),
    ),
    el(
      "tbody",
      {},
      ...rows.map((row) =>
        el(
          "tr",
          {},
          el("th", { scope: "row" }, row.title),
          ...columns.map((model) =>
            el(
              "td",
              { class: "number", "data-model": model.key, "data-metric": row.metric },
              row.format(row.value(model)),
            ),
          ),
        ),
      ),
    ),
  ];
}

function summary(metrics) {
  const facts = [
    ["Accuracy retention", percent(metrics.accuracy_retention)],
    ["Compression", times(metrics.compression)],
    ["Speed-up, batch 1", times(metrics.speedup?.batch_1)],
    ["Speed-up, batch 64", times(metrics.speedup?.batch_64)],
    ["Latencies measured on", metrics.latency_device ?? "—"],
  ];
  return facts.map(([term, value]) => el("div", {}, el("dt", {}, term), el("dd", {}, value)));
}

function candidates(metrics) {
  const cohort = metrics.students ?? metrics.generations;
  const sections = [];
  if (cohort) {
    sections.push(
      el("h3", {}, metrics.students ? "Every student" : "Every generation"),
      table(
        ["Name", "Family", "Parameters", "Accuracy", "Agreement with the teacher", "Exported"],
        cohort.map((c) => [
          c.name,
          c.family,
          count(c.parameters),
          percent(c.accuracy),
          percent(c.agreement),
          c.exported ? "✓" : "",
        ]),
      ),
    );
  }
  if (metrics.search) {
    const { temperature, alpha, trials } = metrics.search;
    sections.push(
      el("h3", {}, `Temperature and alpha search: chose T = ${figure(temperature)}, α = ${figure(alpha)}`),
      table(
        ["Temperature", "Alpha", "Validation accuracy"],
        trials.map((trial) => [
          figure(trial.temperature),
          figure(trial.alpha),
          percent(trial.validation_accuracy),
        ]),
      ),
    );
  }
  return sections;
}

/** `sizes`: the teacher file's and `student.safetensors`'s bytes, where known. */
export function showResults(section, metrics, sizes) {
  section.hidden = false;
  section.querySelector("#results").replaceChildren(...comparison(metrics, sizes));
  section.querySelector("#summary").replaceChildren(...summary(metrics));
  section.querySelector("#candidates").replaceChildren(...candidates(metrics));
}

const OPERATORS = { ">=": "≥", "<=": "≤", ">": ">", "<": "<" };

export function showGates(section, gates) {
  section.hidden = false;
  const passed = gates.filter((gate) => gate.passed).length;
  section.querySelector("#gates-summary").textContent = `${passed} of ${gates.length} passed`;
  const verdicts = gates.map((gate) =>
    el(
      "li",
      { class: `gate ${gate.passed ? "pass" : "fail"}`, "data-passed": String(gate.passed) },
      el("span", { class: "verdict" }, gate.passed ? "✓ passed" : "✗ failed"),
      el("code", {}, `${gate.metric} ${OPERATORS[gate.op] ?? gate.op} ${figure(gate.threshold)}`),
      el("span", { class: "muted" }, gate.value === null ? "not measured" : `measured ${figure(gate.value)}`),
    ),
  );
  section.querySelector("#gates").replaceChildren(...verdicts);
}
