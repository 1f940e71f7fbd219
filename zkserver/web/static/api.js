/* zkserver live monitor: calls to the web listener's JSON API (session cookie, never a token in
 * the page).
 */

export class AuthError extends Error {}

export async function api(path, options = {}) {
  const init = {
    credentials: 'same-origin',
    cache: 'no-store',
    headers: { Accept: 'application/json' },
    ...options,
  };
  if (options.json !== undefined) {
    init.body = JSON.stringify(options.json);
    init.headers['Content-Type'] = 'application/json';
    delete init.json;
  }
  const response = await fetch(path, init);
  if (response.status === 401) {
    throw new AuthError('unauthorized');
  }
  let body = null;
  try { body = await response.json(); } catch (_) { body = null; }
  if (!response.ok) {
    const message = (body && (body.error || body.detail)) || `HTTP ${response.status}`;
    throw new Error(message);
  }
  return body;
}

export async function login(token) {
  const response = await fetch('/api/session', {
    method: 'POST',
    credentials: 'same-origin',
    cache: 'no-store',
    headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
    body: JSON.stringify({ token }),
  });
  if (response.status === 401) return false;
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
  return true;
}
