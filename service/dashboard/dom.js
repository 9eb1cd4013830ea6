// Building the page from the API's data: text always goes in as text, never as HTML.

const SVG_NS = "http://www.w3.org/2000/svg";

function build(node, attributes, children) {
  for (const [name, value] of Object.entries(attributes)) {
    if (value !== undefined && value !== null && value !== false)
      node.setAttribute(name, value === true ? "" : value);
  }
  node.append(...children.filter((child) => child !== undefined && child !== null && child !== false));
  return node;
}

/** An HTML element: `el("a", {href}, "text", node)`; null attributes and children are left out. */
export const el = (tag, attributes = {}, ...children) =>
  build(document.createElement(tag), attributes, children);

export const svgEl = (tag, attributes = {}, ...children) =>
  build(document.createElementNS(SVG_NS, tag), attributes, children);

export const fromTemplate = (id) => document.getElementById(id).content.cloneNode(true);

export const statusBadge = (status) => el("span", { class: `status status-${status}` }, status);

/** A bar filled to `fraction`, and what it means in words. */
export const progressBar = (fraction, words) =>
  el(
    "div",
    { class: "progress" },
    el(
      "span",
      { class: "bar" },
      el("span", { class: "fill", style: `width: ${(fraction * 100).toFixed(1)}%` }),
    ),
    el("span", { class: "progress-text" }, words),
  );

/** A plain table: `headers` and `rows` of cells (strings or nodes). */
export const table = (headers, rows) =>
  el(
    "table",
    {},
    el("thead", {}, el("tr", {}, ...headers.map((header) => el("th", {}, header)))),
    el("tbody", {}, ...rows.map((cells) => el("tr", {}, ...cells.map((cell) => el("td", {}, cell))))),
  );
