// Every call to the `/v1` API goes through here. The API key, once the server has asked for one, stays
// in this tab's sessionStorage and travels in the Authorization header only: never in a URL.

const KEY_STORAGE = "distill.apiKey";
const PAGE_SIZE = 100;

export const FINISHED = new Set(["succeeded", "failed", "cancelled"]);

/** The server answered 401: it wants a (valid) key. */
export class KeyRequired extends Error {}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export const hasKey = () => sessionStorage.getItem(KEY_STORAGE) !== null;
export const setKey = (key) => sessionStorage.setItem(KEY_STORAGE, key);
export const forgetKey = () => sessionStorage.removeItem(KEY_STORAGE);

function authorization() {
  const key = sessionStorage.getItem(KEY_STORAGE);
  return key === null ? {} : { Authorization: `Bearer ${key}` };
}

export async function request(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...authorization(), ...options.headers } });
  if (response.status === 401) {
    throw new KeyRequired("The server asks for an API key.");
  }
  if (!response.ok) {
    const body = await response.json().catch(() => null);
    throw new ApiError(response.status, body?.error?.message ?? `${path}: ${response.status}`);
  }
  return response;
}

export const getJSON = async (path) => (await request(path)).json();

/** A list endpoint's items, page after page from `after` on (all of them, or `pages` pages). */
export async function listItems(path, { after, status, pages = Infinity } = {}) {
  const items = [];
  let more = true;
  for (let page = 0; more && page < pages; page++) {
    const query = new URLSearchParams({ limit: PAGE_SIZE });
    if (after) query.set("after", after);
    if (status) query.set("status", status);
    const body = await getJSON(`${path}?${query}`);
    items.push(...body.data);
    more = body.has_more;
    after = body.data.at(-1)?.id ?? after;
  }
  return { items, more };
}

/** Saves what `path` answers as `filename`: fetched with the key's header, handed over as a Blob. */
export async function download(path, filename) {
  const blob = await (await request(path)).blob();
  const link = Object.assign(document.createElement("a"), {
    href: URL.createObjectURL(blob),
    download: filename,
  });
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 60_000); // the browser reads the blob after click()
}
