// The operator API client: JSON over fetch, with the bearer token the
// page asks for once (kept in this tab's sessionStorage).

const TOKEN_KEY = 'agentflow.token';
const base = new URL('api/v1/', document.baseURI);

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) ?? '';
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

let asking = null;

// askToken shows the token dialog once, however many requests are waiting
// for it, and resolves when a token is entered.
function askToken(reason) {
  asking ??= new Promise((resolve) => {
    const dialog = document.getElementById('token-dialog');
    const input = document.getElementById('token-input');
    document.getElementById('token-reason').textContent = reason;
    dialog.addEventListener('close', () => {
      const t = input.value.trim();
      if (t) sessionStorage.setItem(TOKEN_KEY, t);
      input.value = '';
      asking = null;
      resolve();
    }, {once: true});
    dialog.showModal();
    input.focus();
  });
  return asking;
}

// api calls the route at path (relative to /api/v1/) and returns its JSON
// answer; it throws an ApiError with the API's code and message.
// query values that are undefined or '' are left out.
export async function api(path, {method = 'GET', body, query} = {}) {
  const url = new URL(path, base);
  for (const [k, v] of Object.entries(query ?? {})) {
    if (v !== undefined && v !== '') url.searchParams.set(k, v);
  }
  for (;;) {
    const headers = {Accept: 'application/json'};
    const t = token();
    if (t) headers.Authorization = `Bearer ${t}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const res = await fetch(url, {
      method, headers, cache: 'no-store',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const data = await res.json().catch(() => null);
    if (res.status === 401) {
      await askToken(t ? 'The token was refused; enter it again.' : 'This server requires a bearer token.');
      continue;
    }
    if (!res.ok) {
      throw new ApiError(res.status, data?.code ?? `http_${res.status}`, data?.message ?? res.statusText);
    }
    return data;
  }
}
