/**
 * @file The daemon's JSON API (DESIGN §4) over `fetch`. The session cookie is HttpOnly, so
 * the page never sees a token: the browser sends the cookie, and same-origin POSTs carry the
 * `Origin` header the server checks.
 */

/** An error answer, `{"error": code, "message": text}`, or a network failure (status 0). */
export class ApiError extends Error {
  /**
   * @param {number} status  HTTP status; 0 when the server could not be reached.
   * @param {string} code  The server's stable error code, e.g. `invalid_api_key`.
   * @param {string} message  Text for a person, as the server wrote it.
   */
  constructor(status, code, message) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
  }
}

/** Fired on `window` when a request comes back 401: the login expired or was revoked. */
export const UNAUTHENTICATED_EVENT = 'sashad:unauthenticated';

/**
 * Calls the API.
 *
 * @param {string} method  `GET`, `POST`, `DELETE`.
 * @param {string} path  e.g. `/api/auth/me`.
 * @param {object} [body]  Sent as JSON.
 * @param {{quiet401?: boolean}} [options]  `quiet401`: do not announce a 401 (login forms).
 * @returns {Promise<any>} the parsed JSON answer, or `null` for an empty one (204).
 * @throws {ApiError}
 */
export async function api(method, path, body, options = {}) {
  const init = { method, credentials: 'same-origin', headers: { accept: 'application/json' } };
  if (body !== undefined) {
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, 'network_error', 'Cannot reach the sashad server. Check your connection and try again.');
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    const code = typeof data?.error === 'string' ? data.error : `http_${response.status}`;
    const message = typeof data?.message === 'string' && data.message
      ? data.message
      : `The server answered ${response.status} ${response.statusText}.`;
    if (response.status === 401 && !options.quiet401) {
      window.dispatchEvent(new CustomEvent(UNAUTHENTICATED_EVENT));
    }
    throw new ApiError(response.status, code, message);
  }
  return data;
}

/**
 * Turns a list answer into an array, whether the server sends a bare array or wraps it
 * (`{"projects": [...]}`).
 *
 * @param {any} data
 * @param {string} key  The wrapping key to look for.
 * @returns {Array}
 */
export function listOf(data, key) {
  if (Array.isArray(data)) return data;
  if (data && Array.isArray(data[key])) return data[key];
  if (data && Array.isArray(data.items)) return data.items;
  return [];
}
