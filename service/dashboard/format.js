// Figures in words, the same way on every page; a figure that is not there is a dash.

const MISSING = "—";
const BYTE_UNITS = ["B", "kB", "MB", "GB", "TB"];

export const known = (value) => value !== undefined && value !== null;

/** Up to `digits` significant digits, without trailing zeros or float noise. */
export const figure = (value, digits = 4) =>
  known(value) ? String(Number(value.toPrecision(digits))) : MISSING;

export const percent = (fraction) => (known(fraction) ? `${(fraction * 100).toFixed(2)}%` : MISSING);

export const count = (value) => (known(value) ? value.toLocaleString("en-US") : MISSING);

export const times = (factor) => (known(factor) ? `${figure(factor, 3)}×` : MISSING);

export function bytes(value) {
  if (!known(value)) return MISSING;
  let unit = 0;
  while (value >= 1000 && unit < BYTE_UNITS.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${unit === 0 ? value : value.toPrecision(3)} ${BYTE_UNITS[unit]}`;
}

export function latency(milliseconds) {
  if (!known(milliseconds)) return MISSING;
  return milliseconds < 1 ? `${figure(milliseconds * 1000, 3)} µs` : `${figure(milliseconds, 3)} ms`;
}

function duration(seconds) {
  if (!known(seconds)) return MISSING;
  const whole = Math.round(seconds);
  if (whole < 60) return `${whole} s`;
  if (whole < 3600) return `${Math.floor(whole / 60)} min ${whole % 60} s`;
  return `${Math.floor(whole / 3600)} h ${Math.floor((whole % 3600) / 60)} min`;
}

/** A unix time as the reader's local date and time. */
export const dateTime = (unix) =>
  known(unix)
    ? new Date(unix * 1000).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" })
    : MISSING;

const now = () => Date.now() / 1000;

/** How long ago, for the last day; before that, the date and time. */
export function ago(unix) {
  const seconds = now() - unix;
  if (seconds < 45) return "just now";
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`;
  return dateTime(unix);
}

/** A unix time as the reader's local time of day. */
export const clock = (unix) => new Date(unix * 1000).toLocaleTimeString();

// A job's state in words.

const WAITING = { queued: "waiting for a worker", validating: "checking the teacher and the data" };

export function progressText(job) {
  if (WAITING[job.status]) return WAITING[job.status];
  const { epoch, epochs, step, total_steps: steps, eta_seconds: eta } = job.progress;
  const words = [`epoch ${epoch} of ${epochs}`];
  if (job.status === "running" && steps > 0) {
    words.push(`step ${count(step)} of ${count(steps)}`);
    if (known(eta)) words.push(`about ${duration(eta)} left`);
  }
  return words.join(" · ");
}

/** How long the job has run, up to now while it runs. */
export const ranFor = (job) =>
  known(job.started_at) ? duration((job.finished_at ?? now()) - job.started_at) : MISSING;
