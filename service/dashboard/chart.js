// Line charts of per-epoch series, drawn as SVG. Each series is a <g class="series" data-name
// data-points> holding its line and one <circle class="point"> per epoch, whose <title> tells its value.

import { el, svgEl } from "./dom.js";
import { figure, percent } from "./format.js";

const WIDTH = 520;
const HEIGHT = 250;
const MARGIN = { top: 12, right: 18, bottom: 36, left: 54 };
const COLORS = ["#2563eb", "#e11d48", "#059669", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563"];
const Y_TICKS = 5;
const X_TICKS = 8;
const DENSE_POINTS = 60; // beyond this many epochs, smaller points keep the line readable

/** The step of a scale: 1, 2 or 5 times a power of ten, near `span / ticks`. */
function niceStep(span, ticks) {
  const raw = span / ticks;
  const power = 10 ** Math.floor(Math.log10(raw));
  const multiple = [1, 2, 5, 10].find((m) => m * power >= raw);
  return multiple * power;
}

/** Tick values covering `low` to `high`, `step` apart. */
function ticksCovering(low, high, step) {
  const first = Math.floor(low / step);
  const last = Math.ceil(high / step);
  return Array.from({ length: last - first + 1 }, (_, i) => (first + i) * step);
}

/** The values' range: fractions end at 100%, anything else starts at 0. */
function valueRange(values, fractions) {
  let low = fractions ? Math.min(...values) : 0;
  let high = fractions ? 1 : Math.max(...values);
  if (high - low < 1e-12) {
    const pad = Math.abs(high) * 0.1 || 1;
    [low, high] = fractions ? [high - pad, high] : [low, low + pad];
  }
  return [low, high];
}

/** The linear map of the interval `domain` onto the interval `range`. */
function scale([d0, d1], [r0, r1]) {
  return (value) => r0 + ((value - d0) / (d1 - d0)) * (r1 - r0);
}

function epochTicks(first, last) {
  const step = Math.max(1, niceStep(last - first + 1, X_TICKS));
  return ticksCovering(first, last, step).filter((epoch) => epoch >= first && epoch <= last);
}

function seriesGroup(series, color, x, y, format) {
  const radius = series.points.length > DENSE_POINTS ? 1.5 : 3;
  const line = series.points.map((point) => `${x(point.epoch)},${y(point.value)}`).join(" ");
  return svgEl(
    "g",
    { class: "series", "data-name": series.name, "data-points": series.points.length },
    svgEl("polyline", { points: line, fill: "none", stroke: color, "stroke-width": 2 }),
    ...series.points.map((point) =>
      svgEl(
        "circle",
        {
          class: "point",
          cx: x(point.epoch),
          cy: y(point.value),
          r: radius,
          fill: color,
          "data-epoch": point.epoch,
        },
        svgEl("title", {}, `${series.name}, epoch ${point.epoch}: ${format(point.value)}`),
      ),
    ),
  );
}

/**
 * Draws `series` ([{name, points: [{epoch, value}]}]) over epochs `first` to `last` into the <svg> and the
 * legend of `figureNode`. `fractions`: the values are shares, shown as percentages up to 100%.
 */
export function drawChart(figureNode, series, { first, last, fractions = false }) {
  const svg = figureNode.querySelector("svg");
  const legend = figureNode.querySelector(".legend");
  svg.setAttribute("viewBox", `0 0 ${WIDTH} ${HEIGHT}`);
  const values = series.flatMap((one) => one.points.map((point) => point.value));
  if (values.length === 0) {
    svg.replaceChildren(
      svgEl("text", { class: "empty", x: WIDTH / 2, y: HEIGHT / 2 }, "No epoch has ended yet."),
    );
    legend.replaceChildren();
    return;
  }
  const format = fractions ? percent : figure;
  const [low, high] = valueRange(values, fractions);
  const yTicks = ticksCovering(low, high, niceStep(high - low, Y_TICKS));
  last = Math.max(last, first + 1);
  const x = scale([first, last], [MARGIN.left, WIDTH - MARGIN.right]);
  const y = scale([yTicks[0], yTicks.at(-1)], [HEIGHT - MARGIN.bottom, MARGIN.top]);
  const axisLabel = (value) => (fractions ? `${figure(value * 100, 6)}%` : figure(value, 6));
  svg.replaceChildren(
    ...yTicks.map((tick) =>
      svgEl(
        "g",
        { class: "grid" },
        svgEl("line", { x1: MARGIN.left, x2: WIDTH - MARGIN.right, y1: y(tick), y2: y(tick) }),
        svgEl("text", { class: "y-label", x: MARGIN.left - 8, y: y(tick) }, axisLabel(tick)),
      ),
    ),
    ...epochTicks(first, last).map((epoch) =>
      svgEl("text", { class: "x-label", x: x(epoch), y: HEIGHT - MARGIN.bottom + 16 }, String(epoch)),
    ),
    svgEl(
      "text",
      { class: "axis-title", x: (MARGIN.left + WIDTH - MARGIN.right) / 2, y: HEIGHT - 4 },
      "epoch",
    ),
    ...series.map((one, i) => seriesGroup(one, COLORS[i % COLORS.length], x, y, format)),
  );
  legend.replaceChildren(
    ...series.map((one, i) =>
      el(
        "li",
        {},
        el("span", { class: "swatch", style: `background: ${COLORS[i % COLORS.length]}` }),
        one.name.replaceAll("_", " "),
      ),
    ),
  );
}
