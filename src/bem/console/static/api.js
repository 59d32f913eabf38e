// BEM's API with the signed-in user's session (an access token and its refresh token, kept
// in sessionStorage: the tab's own, gone when it closes). Errors are problem+json.

const KEY = "bem.session";

export class ApiError extends Error {
  constructor(problem, status) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.problem = problem;
    this.status = status;
  }
}

export function session() {
  return JSON.parse(sessionStorage.getItem(KEY) || "null");
}

export function keep(pair) {
  sessionStorage.setItem(KEY, JSON.stringify(pair));
}

export async function signOut() {
  const held = session();
  sessionStorage.removeItem(KEY);
  if (held) {
    await fetch("/v1/auth/logout", {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${held.access_token}` },
      body: JSON.stringify({ refresh_token: held.refresh_token }),
    }).catch(() => null);
  }
}

let refreshing = null;

async function refresh() {
  const held = session();
  if (!held?.refresh_token) return false;
  refreshing ??= fetch("/v1/auth/token/refresh", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ refresh_token: held.refresh_token }),
  })
    .then(async (r) => {
      if (!r.ok) return false;
      keep(await r.json());
      return true;
    })
    .finally(() => { refreshing = null; });
  return refreshing;
}

function query(params) {
  const pairs = Object.entries(params || {}).filter(([, v]) => v !== undefined && v !== null && v !== "");
  return pairs.length ? `?${new URLSearchParams(pairs)}` : "";
}

// A JSON answer (or the Response itself with raw: true); ApiError for any 4xx/5xx.
export async function api(path, { method = "GET", params, body, raw = false, retried = false } = {}) {
  const headers = {};
  const held = session();
  if (held) headers.Authorization = `Bearer ${held.access_token}`;
  let payload = body;
  if (body !== undefined && !(body instanceof FormData)) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  const r = await fetch(path + query(params), { method, headers, body: payload });
  if (r.status === 401 && held && !retried && !path.startsWith("/v1/auth/") && (await refresh())) {
    return api(path, { method, params, body, raw, retried: true });
  }
  if (!r.ok) {
    const problem = await r.json().catch(() => ({ title: r.statusText }));
    throw new ApiError(problem, r.status);
  }
  if (raw) return r;
  return r.status === 204 ? null : r.json();
}

// A file download that needs the bearer token: fetched, then saved from an object URL.
export async function download(path, params, filename) {
  const r = await api(path, { params, raw: true });
  const url = URL.createObjectURL(await r.blob());
  const link = Object.assign(document.createElement("a"), { href: url, download: filename });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}
